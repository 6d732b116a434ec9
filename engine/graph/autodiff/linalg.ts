// Matrix products, softmaxes, reductions and cumulative sums.
import type { Value } from '../builder';
import type { NodeContext, OpRule, VjpContext } from './rule';
import { broadcastShapes, normAxis, numel, scalar, unbroadcast, type TensorInfo } from './tensor';

/** Swaps the last two axes of a rank-r value. */
function swapLast(ctx: VjpContext, x: Value, rank: number): Value {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return ctx.g.op('Transpose', [x], { perm });
}

/** numpy matmul shapes with 1-D operands promoted ([K] → [1, K] on the left, [K, 1] on the right). */
function matmulShapes(ctx: NodeContext): { a: number[]; b: number[]; y: number[]; promoted: number[] } {
  const a0 = ctx.need(0).shape;
  const b0 = ctx.need(1).shape;
  const a = a0.length === 1 ? [1, a0[0]] : a0;
  const b = b0.length === 1 ? [b0[0], 1] : b0;
  if (a[a.length - 1] !== b[b.length - 2]) throw new Error(`autodiff: ${ctx.where} multiplies [${a0}] by [${b0}]`);
  const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2), ctx.where);
  const promoted = [...batch, a[a.length - 2], b[b.length - 1]];
  const y = [...batch, ...(a0.length === 1 ? [] : [a[a.length - 2]]), ...(b0.length === 1 ? [] : [b[b.length - 1]])];
  return { a, b, y, promoted };
}

/** The reduced axes of a Reduce* node (all axes when none are given). */
function reduceAxes(ctx: NodeContext): number[] {
  const x = ctx.need(0);
  const given = ctx.input(1) ? ctx.valueOf(1, 'axes') : (ctx.attrs.ints('axes') ?? []);
  if (given.length === 0) return ctx.attrs.int('noop_with_empty_axes', 0) ? [] : x.shape.map((_, i) => i);
  return given.map((a) => normAxis(a, x.shape.length));
}

function reduceInfer(ctx: NodeContext): TensorInfo[] {
  const x = ctx.need(0);
  const axes = reduceAxes(ctx);
  const keep = ctx.attrs.int('keepdims', 1) === 1;
  const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
  return [{ elemType: x.elemType, shape }];
}

/** The output gradient broadcast back over the reduced axes, times `scale`. */
function reduceBack(ctx: VjpContext, gy: Value, scale: number): Value {
  const { g } = ctx;
  const x = ctx.need(0);
  const axes = reduceAxes(ctx);
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  let grad = ctx.attrs.int('keepdims', 1) === 1 ? gy : g.op('Reshape', [gy, g.ints(kept)]);
  if (scale !== 1) grad = g.op('Mul', [grad, scalar(g, ctx.output(0).elemType, scale)]);
  return g.op('Expand', [grad, g.ints(x.shape)]);
}

export const LINALG_RULES: Record<string, OpRule> = {
  MatMul: {
    infer: (ctx) => [{ elemType: ctx.need(0).elemType, shape: matmulShapes(ctx).y }],
    vjp: (ctx, [gy]) => {
      if (!gy) return [null, null];
      const { g } = ctx;
      const { a, b, promoted } = matmulShapes(ctx);
      const aShape = ctx.need(0).shape;
      const bShape = ctx.need(1).shape;
      const lift = (v: Value, from: number[], to: number[]) => (from.length === to.length ? v : g.op('Reshape', [v, g.ints(to)]));
      const A = lift(ctx.inputs[0]!, aShape, a);
      const B = lift(ctx.inputs[1]!, bShape, b);
      const G = lift(gy, ctx.output(0).shape, promoted);
      const r = promoted.length;
      const back = (grad: Value, full: number[], operand: number[], original: number[]) => {
        const reduced = unbroadcast(g, grad, full, operand);
        return operand.length === original.length ? reduced : g.op('Reshape', [reduced, g.ints(original)]);
      };
      // dA = G·Bᵀ, dB = Aᵀ·G, summed over broadcast batch axes.
      const ga = ctx.wants(0) ? back(g.op('MatMul', [G, swapLast(ctx, B, b.length)]), [...promoted.slice(0, -2), a[a.length - 2], a[a.length - 1]], a, aShape) : null;
      const gb = ctx.wants(1) ? back(g.op('MatMul', [swapLast(ctx, A, a.length), G]), [...promoted.slice(0, -2), b[b.length - 2], b[b.length - 1]], b, bShape) : null;
      void r;
      return [ga, gb];
    },
  },
  Gemm: {
    infer: (ctx) => {
      const a = ctx.need(0).shape;
      const b = ctx.need(1).shape;
      const M = ctx.attrs.int('transA', 0) ? a[1] : a[0];
      const N = ctx.attrs.int('transB', 0) ? b[0] : b[1];
      return [{ elemType: ctx.need(0).elemType, shape: [M, N] }];
    },
    vjp: (ctx, [gy]) => {
      if (!gy) return [null, null, null];
      const { g } = ctx;
      const [A, B] = ctx.inputs as Value[];
      const transA = ctx.attrs.int('transA', 0);
      const transB = ctx.attrs.int('transB', 0);
      const alpha = ctx.attrs.float('alpha', 1);
      const beta = ctx.attrs.float('beta', 1);
      const f = (v: number) => ({ float: v });
      // y = α·op(A)·op(B) + β·C
      const ga = !ctx.wants(0) ? null : transA ? g.op('Gemm', [B, gy], { transA: transB, transB: 1, alpha: f(alpha) }) : g.op('Gemm', [gy, B], { transB: transB ? 0 : 1, alpha: f(alpha) });
      const gb = !ctx.wants(1) ? null : transB ? g.op('Gemm', [gy, A], { transA: 1, transB: transA, alpha: f(alpha) }) : g.op('Gemm', [A, gy], { transA: transA ? 0 : 1, alpha: f(alpha) });
      let gc: Value | null = null;
      if (ctx.inputs[2] && ctx.wants(2)) {
        gc = unbroadcast(g, gy, ctx.output(0).shape, ctx.need(2).shape);
        if (beta !== 1) gc = g.op('Mul', [gc, scalar(g, ctx.output(0).elemType, beta)]);
      }
      return [ga, gb, gc];
    },
  },
  Softmax: {
    infer: (ctx) => [{ elemType: ctx.need(0).elemType, shape: [...ctx.need(0).shape] }],
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null];
      const { g } = ctx;
      const y = ctx.outputs[0];
      const axis = ctx.attrs.int('axis', -1);
      // dx = y ⊙ (gy − Σ gy⊙y)
      const dot = g.op('ReduceSum', [g.op('Mul', [gy, y]), g.ints([axis])], { keepdims: 1 });
      return [g.op('Mul', [y, g.op('Sub', [gy, dot])])];
    },
  },
  LogSoftmax: {
    infer: (ctx) => [{ elemType: ctx.need(0).elemType, shape: [...ctx.need(0).shape] }],
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null];
      const { g } = ctx;
      const axis = ctx.attrs.int('axis', -1);
      // dx = gy − softmax ⊙ Σ gy
      const total = g.op('ReduceSum', [gy, g.ints([axis])], { keepdims: 1 });
      return [g.op('Sub', [gy, g.op('Mul', [g.op('Exp', [ctx.outputs[0]]), total])])];
    },
  },
  ReduceSum: {
    infer: reduceInfer,
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? reduceBack(ctx, gy, 1) : null, null],
  },
  ReduceMean: {
    infer: reduceInfer,
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null, null];
      const x = ctx.need(0);
      const count = numel(reduceAxes(ctx).map((a) => x.shape[a]));
      return [reduceBack(ctx, gy, 1 / count), null];
    },
  },
  ReduceMax: {
    infer: reduceInfer,
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null, null];
      const { g } = ctx;
      const x = ctx.need(0);
      const axes = reduceAxes(ctx);
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const y = ctx.attrs.int('keepdims', 1) === 1 ? ctx.outputs[0] : g.op('Reshape', [ctx.outputs[0], g.ints(kept)]);
      // The gradient goes to every maximal element (ties share it, as with a subgradient).
      const at = g.op('Equal', [ctx.inputs[0]!, y]);
      return [g.op('Where', [at, reduceBack(ctx, gy, 1), scalar(g, ctx.output(0).elemType, 0)]), null];
    },
  },
  CumSum: {
    infer: (ctx) => [{ elemType: ctx.need(0).elemType, shape: [...ctx.need(0).shape] }],
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null, null];
      // The adjoint of a cumulative sum is the cumulative sum in the other direction.
      const reverse = ctx.attrs.int('reverse', 0) ? 0 : 1;
      return [ctx.g.op('CumSum', [gy, ctx.inputs[1]!], { reverse, exclusive: ctx.attrs.int('exclusive', 0) }), null];
    },
  },
};
