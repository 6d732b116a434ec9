// Elementwise ops: numpy-broadcasting arithmetic, comparisons and logic, Where, Cast and the unary
// math functions. Gradients of broadcast inputs are summed back to the input's shape.
import type { Value } from '../builder';
import type { NodeContext, OpRule, VjpContext } from './rule';
import { broadcastMap, broadcastShapes, ElemType, FOLD_LIMIT, isFloat, isFoldable, numel, scalar, unbroadcast, type TensorInfo } from './tensor';

/** Output info of a broadcasting op; folds the value when every input is known and `fold` is given. */
function broadcastInfo(ctx: NodeContext, count: number, elemType: number | null, fold?: (xs: number[]) => number): TensorInfo {
  const ins: TensorInfo[] = [];
  for (let i = 0; i < count; i++) ins.push(ctx.need(i));
  const shape = ins.slice(1).reduce((s, t) => broadcastShapes(s, t.shape, ctx.where), ins[0].shape);
  const type = elemType ?? ins[ins.length === 3 ? 1 : 0].elemType;
  const info: TensorInfo = { elemType: type, shape };
  if (fold && isFoldable(type) && numel(shape) <= FOLD_LIMIT && ins.every((t) => t.value)) info.value = broadcastMap(ins, shape, fold);
  return info;
}

const sameAsInput = (fold?: (x: number) => number) => (ctx: NodeContext): TensorInfo[] => {
  const x = ctx.need(0);
  const info: TensorInfo = { elemType: x.elemType, shape: [...x.shape] };
  if (fold && x.value && isFoldable(x.elemType)) info.value = x.value.map(fold);
  return [info];
};

const binary = (fold?: (a: number, b: number) => number, elemType: number | null = null) => (ctx: NodeContext): TensorInfo[] => [
  broadcastInfo(ctx, 2, elemType, fold ? ([a, b]) => fold(a, b) : undefined),
];

/** The gradient `grad` (of the output's shape) reduced to input i's shape. */
function toInput(ctx: VjpContext, i: number, grad: Value): Value {
  return unbroadcast(ctx.g, grad, ctx.output(0).shape, ctx.need(i).shape);
}

const mul = (ctx: VjpContext, a: Value, b: Value) => ctx.g.op('Mul', [a, b]);
const div = (ctx: VjpContext, a: Value, b: Value) => ctx.g.op('Div', [a, b]);
const neg = (ctx: VjpContext, a: Value) => ctx.g.op('Neg', [a]);
/** A scalar in the element type of the node's first output (the gradient's type). */
const k = (ctx: VjpContext, v: number) => scalar(ctx.g, ctx.output(0).elemType, v);

/** A unary op whose gradient is gy · f'(x, y). */
function unary(derivative: (ctx: VjpContext, x: Value, y: Value, gy: Value) => Value): OpRule {
  return {
    infer: sameAsInput(),
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? derivative(ctx, ctx.inputs[0]!, ctx.outputs[0], gy) : null],
  };
}

export const ELEMENTWISE_RULES: Record<string, OpRule> = {
  Add: {
    infer: binary((a, b) => a + b),
    vjp: (ctx, [gy]) => [0, 1].map((i) => (gy && ctx.wants(i) ? toInput(ctx, i, gy) : null)),
  },
  Sub: {
    infer: binary((a, b) => a - b),
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? toInput(ctx, 0, gy) : null, gy && ctx.wants(1) ? toInput(ctx, 1, neg(ctx, gy)) : null],
  },
  Mul: {
    infer: binary((a, b) => a * b),
    vjp: (ctx, [gy]) => {
      const [a, b] = ctx.inputs as Value[];
      return [gy && ctx.wants(0) ? toInput(ctx, 0, mul(ctx, gy, b)) : null, gy && ctx.wants(1) ? toInput(ctx, 1, mul(ctx, gy, a)) : null];
    },
  },
  Div: {
    infer: binary((a, b) => Math.trunc(a / b)),
    vjp: (ctx, [gy]) => {
      const [, b] = ctx.inputs as Value[];
      const y = ctx.outputs[0];
      // d(a/b)/da = 1/b; d(a/b)/db = −a/b² = −y/b
      return [gy && ctx.wants(0) ? toInput(ctx, 0, div(ctx, gy, b)) : null, gy && ctx.wants(1) ? toInput(ctx, 1, neg(ctx, div(ctx, mul(ctx, gy, y), b))) : null];
    },
  },
  Pow: {
    infer: (ctx) => [broadcastInfo(ctx, 2, ctx.need(0).elemType, ([a, b]) => a ** b)],
    vjp: (ctx, [gy]) => {
      const { g } = ctx;
      const [x, p] = ctx.inputs as Value[];
      // d(x^p)/dx = p·x^(p−1); d(x^p)/dp = x^p·log x
      const gx = gy && ctx.wants(0) ? toInput(ctx, 0, mul(ctx, gy, mul(ctx, p, g.op('Pow', [x, g.op('Sub', [p, scalar(g, ctx.need(1).elemType, 1)])])))) : null;
      const gp = gy && ctx.wants(1) ? toInput(ctx, 1, mul(ctx, gy, mul(ctx, ctx.outputs[0], g.op('Log', [x])))) : null;
      return [gx, gp];
    },
  },
  Max: {
    infer: (ctx) => [broadcastInfo(ctx, ctx.node.input!.length, null, (xs) => Math.max(...xs))],
    vjp: (ctx, [gy]) => minMaxVjp(ctx, gy, 'GreaterOrEqual'),
  },
  Min: {
    infer: (ctx) => [broadcastInfo(ctx, ctx.node.input!.length, null, (xs) => Math.min(...xs))],
    vjp: (ctx, [gy]) => minMaxVjp(ctx, gy, 'LessOrEqual'),
  },
  Mod: {
    // fmod = 0: the result takes the divisor's sign (Python's %), as the decoder graph uses it on positions.
    infer: binary((a, b) => ((a % b) + b) % b),
  },
  Equal: { infer: binary((a, b) => Number(a === b), ElemType.BOOL) },
  Less: { infer: binary((a, b) => Number(a < b), ElemType.BOOL) },
  LessOrEqual: { infer: binary((a, b) => Number(a <= b), ElemType.BOOL) },
  Greater: { infer: binary((a, b) => Number(a > b), ElemType.BOOL) },
  GreaterOrEqual: { infer: binary((a, b) => Number(a >= b), ElemType.BOOL) },
  And: { infer: binary((a, b) => Number(Boolean(a && b)), ElemType.BOOL) },
  Or: { infer: binary((a, b) => Number(Boolean(a || b)), ElemType.BOOL) },
  Xor: { infer: binary((a, b) => Number(Boolean(a) !== Boolean(b)), ElemType.BOOL) },
  Not: { infer: sameAsInput((x) => Number(!x)) },
  Where: {
    infer: (ctx) => [broadcastInfo(ctx, 3, null, ([c, a, b]) => (c ? a : b))],
    vjp: (ctx, [gy]) => {
      const { g } = ctx;
      const c = ctx.inputs[0]!;
      const zero = k(ctx, 0);
      const ga = gy && ctx.wants(1) ? toInput(ctx, 1, g.op('Where', [c, gy, zero])) : null;
      const gb = gy && ctx.wants(2) ? toInput(ctx, 2, g.op('Where', [c, zero, gy])) : null;
      return [null, ga, gb];
    },
  },
  Cast: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const to = ctx.attrs.int('to', ElemType.FLOAT);
      const info: TensorInfo = { elemType: to, shape: [...x.shape] };
      if (x.value && isFoldable(to)) info.value = to === ElemType.BOOL ? x.value.map((v) => Number(v !== 0)) : x.value.map(Math.trunc);
      return [info];
    },
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) && isFloat(ctx.need(0).elemType) ? ctx.g.op('Cast', [gy], { to: ctx.need(0).elemType }) : null],
  },
  Identity: {
    infer: sameAsInput((x) => x),
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? gy : null],
  },
  Neg: {
    infer: sameAsInput((x) => -x),
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? neg(ctx, gy) : null],
  },
  Abs: {
    infer: sameAsInput(Math.abs),
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null];
      const { g } = ctx;
      return [g.op('Where', [g.op('Less', [ctx.inputs[0]!, k(ctx, 0)]), neg(ctx, gy), gy])];
    },
  },
  Exp: unary((ctx, _x, y, gy) => mul(ctx, gy, y)),
  Log: unary((ctx, x, _y, gy) => div(ctx, gy, x)),
  // d√x = 1/(2√x); where √x = 0 the gradient is taken as 0 (it only reaches there through masked branches).
  Sqrt: unary((ctx, _x, y, gy) => {
    const { g } = ctx;
    return g.op('Where', [g.op('Equal', [y, k(ctx, 0)]), k(ctx, 0), div(ctx, mul(ctx, gy, k(ctx, 0.5)), y)]);
  }),
  Sigmoid: unary((ctx, _x, y, gy) => mul(ctx, gy, mul(ctx, y, ctx.g.op('Sub', [k(ctx, 1), y])))),
  Tanh: unary((ctx, _x, y, gy) => mul(ctx, gy, ctx.g.op('Sub', [k(ctx, 1), mul(ctx, y, y)]))),
  Cos: unary((ctx, x, _y, gy) => neg(ctx, mul(ctx, gy, ctx.g.op('Sin', [x])))),
  Sin: unary((ctx, x, _y, gy) => mul(ctx, gy, ctx.g.op('Cos', [x]))),
  Reciprocal: unary((ctx, _x, y, gy) => neg(ctx, mul(ctx, gy, mul(ctx, y, y)))),
  Relu: unary((ctx, x, _y, gy) => ctx.g.op('Where', [ctx.g.op('Greater', [x, k(ctx, 0)]), gy, k(ctx, 0)])),
};

/** Max/Min of two inputs: the gradient goes to the selected one (the first on ties). */
function minMaxVjp(ctx: VjpContext, gy: Value | null, firstWins: 'GreaterOrEqual' | 'LessOrEqual'): (Value | null)[] {
  if (ctx.node.input!.length !== 2) throw new Error(`autodiff: ${ctx.where} has ${ctx.node.input!.length} inputs; gradients are implemented for two`);
  if (!gy) return [null, null];
  const { g } = ctx;
  const [a, b] = ctx.inputs as Value[];
  const first = g.op(firstWins, [a, b]);
  const zero = k(ctx, 0);
  return [ctx.wants(0) ? toInput(ctx, 0, g.op('Where', [first, gy, zero])) : null, ctx.wants(1) ? toInput(ctx, 1, g.op('Where', [first, zero, gy])) : null];
}
