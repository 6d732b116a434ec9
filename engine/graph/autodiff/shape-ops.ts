// Ops that move data without arithmetic: Reshape, Transpose, (Un)Squeeze, Concat, Split, Slice,
// Gather, Pad, Expand, and the shape arithmetic Shape / Range / ConstantOfShape. Their gradients
// move the output gradient back (Slice ↔ Pad, Concat ↔ Slice, Gather ↔ Pad or ScatterND).
import type { Value } from '../builder';
import type { Gradient, NodeContext, OpRule, VjpContext } from './rule';
import { broadcastShapes, ElemType, FOLD_LIMIT, isFoldable, normAxis, numel, strides, unbroadcast, zeros, type TensorInfo } from './tensor';

/** Same data, new shape: the gradient is reshaped back. */
const reshapeBack: OpRule['vjp'] = (ctx, [gy]) => [gy && ctx.wants(0) ? ctx.g.op('Reshape', [gy, ctx.g.ints(ctx.need(0).shape)]) : null, ...ctx.inputs.slice(1).map(() => null)];

function withValue(info: TensorInfo, value: number[] | undefined): TensorInfo {
  if (value && isFoldable(info.elemType) && value.length <= FOLD_LIMIT) info.value = value;
  return info;
}

/** Static [start, end) of a Slice along one axis (step 1), clamped as ONNX does. */
function sliceBounds(start: number, end: number, dim: number): [number, number] {
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
  const s = clamp(start);
  return [s, Math.max(s, clamp(end))];
}

/** Slice plan: per axis of x, [start, end) (the full range where not sliced). */
function slicePlan(ctx: NodeContext): [number, number][] {
  const x = ctx.need(0);
  const starts = ctx.valueOf(1, 'starts');
  const ends = ctx.valueOf(2, 'ends');
  const axes = ctx.input(3) ? ctx.valueOf(3, 'axes') : starts.map((_, i) => i);
  const steps = ctx.input(4) ? ctx.valueOf(4, 'steps') : starts.map(() => 1);
  if (steps.some((s) => s !== 1)) throw new Error(`autodiff: ${ctx.where} slices with steps [${steps}]; only step 1 is supported`);
  const plan: [number, number][] = x.shape.map((d) => [0, d]);
  axes.forEach((a, i) => {
    const axis = normAxis(a, x.shape.length);
    plan[axis] = sliceBounds(starts[i], ends[i], x.shape[axis]);
  });
  return plan;
}

/** Values of `x` (row-major, shape `shape`) inside the per-axis ranges. */
function sliceValues(value: number[], shape: number[], plan: [number, number][]): number[] {
  const outShape = plan.map(([s, e]) => e - s);
  const n = numel(outShape);
  const inStrides = strides(shape);
  const outStrides = strides(outShape);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let rem = i;
    let idx = 0;
    for (let a = 0; a < outShape.length; a++) {
      const c = Math.floor(rem / outStrides[a]);
      rem -= c * outStrides[a];
      idx += (c + plan[a][0]) * inStrides[a];
    }
    out[i] = value[idx];
  }
  return out;
}

/** Concatenation of known values along an axis. */
function concatValues(parts: TensorInfo[], axis: number, outShape: number[]): number[] {
  const outer = numel(outShape.slice(0, axis));
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const block = numel(p.shape.slice(axis));
      out.push(...p.value!.slice(o * block, (o + 1) * block));
    }
  }
  return out;
}

export const SHAPE_RULES: Record<string, OpRule> = {
  Shape: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const r = x.shape.length;
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
      const start = clamp(ctx.attrs.int('start', 0));
      const end = clamp(ctx.attrs.has('end') ? ctx.attrs.int('end', r) : r);
      const value = x.shape.slice(start, Math.max(start, end));
      return [{ elemType: ElemType.INT64, shape: [value.length], value }];
    },
  },
  Range: {
    infer: (ctx) => {
      const [start] = ctx.valueOf(0, 'start');
      const [limit] = ctx.valueOf(1, 'limit');
      const [delta] = ctx.valueOf(2, 'delta');
      const n = Math.max(Math.ceil((limit - start) / delta), 0);
      const value = Array.from({ length: n }, (_, i) => start + i * delta);
      return [withValue({ elemType: ctx.need(0).elemType, shape: [n] }, value)];
    },
  },
  ConstantOfShape: {
    infer: (ctx) => {
      const shape = ctx.valueOf(0, 'shape');
      return [{ elemType: ElemType.FLOAT, shape }];
    },
  },
  Reshape: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const target = ctx.valueOf(1, 'shape');
      const allowZero = ctx.attrs.int('allowzero', 0) === 1;
      const shape = target.map((d, i) => (d === 0 && !allowZero ? x.shape[i] : d));
      const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      const minus = shape.indexOf(-1);
      if (minus >= 0) shape[minus] = known === 0 ? 0 : numel(x.shape) / known;
      if (numel(shape) !== numel(x.shape) || !shape.every(Number.isInteger)) throw new Error(`autodiff: ${ctx.where} cannot reshape [${x.shape}] to [${target}]`);
      return [withValue({ elemType: x.elemType, shape }, x.value)];
    },
    vjp: reshapeBack,
  },
  Flatten: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const axis = normAxis(ctx.attrs.int('axis', 1), x.shape.length);
      return [withValue({ elemType: x.elemType, shape: [numel(x.shape.slice(0, axis)), numel(x.shape.slice(axis))] }, x.value)];
    },
    vjp: reshapeBack,
  },
  Squeeze: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const axes = ctx.input(1) ? ctx.valueOf(1, 'axes').map((a) => normAxis(a, x.shape.length)) : x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
      return [withValue({ elemType: x.elemType, shape: x.shape.filter((_, i) => !axes.includes(i)) }, x.value)];
    },
    vjp: reshapeBack,
  },
  Unsqueeze: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const rank = x.shape.length + ctx.valueOf(1, 'axes').length;
      const axes = ctx.valueOf(1, 'axes').map((a) => normAxis(a, rank));
      const shape: number[] = [];
      let k = 0;
      for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : x.shape[k++]);
      return [withValue({ elemType: x.elemType, shape }, x.value)];
    },
    vjp: reshapeBack,
  },
  Transpose: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const perm = ctx.attrs.ints('perm') ?? x.shape.map((_, i) => x.shape.length - 1 - i);
      return [{ elemType: x.elemType, shape: perm.map((p) => x.shape[p]) }];
    },
    vjp: (ctx, [gy]) => {
      if (!gy || !ctx.wants(0)) return [null];
      const rank = ctx.need(0).shape.length;
      const perm = ctx.attrs.ints('perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
      const inverse = new Array<number>(rank);
      perm.forEach((p, i) => (inverse[p] = i));
      return [ctx.g.op('Transpose', [gy], { perm: inverse })];
    },
  },
  Expand: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const shape = broadcastShapes(x.shape, ctx.valueOf(1, 'shape'), ctx.where);
      return [{ elemType: x.elemType, shape }];
    },
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? unbroadcast(ctx.g, gy, ctx.output(0).shape, ctx.need(0).shape) : null, null],
  },
  Concat: {
    infer: (ctx) => {
      const parts = ctx.node.input!.map((_, i) => ctx.need(i));
      const axis = normAxis(ctx.attrs.int('axis', 0), parts[0].shape.length);
      const shape = [...parts[0].shape];
      shape[axis] = parts.reduce((s, p) => s + p.shape[axis], 0);
      const info: TensorInfo = { elemType: parts[0].elemType, shape };
      if (parts.every((p) => p.value)) withValue(info, concatValues(parts, axis, shape));
      return [info];
    },
    vjp: (ctx, [gy]) => {
      const parts = ctx.node.input!.map((_, i) => ctx.need(i));
      const axis = normAxis(ctx.attrs.int('axis', 0), parts[0].shape.length);
      let offset = 0;
      return parts.map((p, i) => {
        const start = offset;
        offset += p.shape[axis];
        if (!gy || !ctx.wants(i) || p.shape[axis] === 0) return null;
        return ctx.g.op('Slice', [gy, ctx.g.ints([start]), ctx.g.ints([start + p.shape[axis]]), ctx.g.ints([axis])]);
      });
    },
  },
  Split: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const axis = normAxis(ctx.attrs.int('axis', 0), x.shape.length);
      const count = ctx.node.output!.length;
      const sizes = ctx.input(1) ? ctx.valueOf(1, 'split') : Array.from({ length: count }, (_, i) => Math.min(Math.ceil(x.shape[axis] / count), x.shape[axis] - i * Math.ceil(x.shape[axis] / count)));
      return sizes.map((s) => {
        const shape = [...x.shape];
        shape[axis] = s;
        return { elemType: x.elemType, shape };
      });
    },
    vjp: (ctx, gys) => {
      if (!ctx.wants(0) || gys.every((gy) => !gy)) return [null, null];
      const axis = normAxis(ctx.attrs.int('axis', 0), ctx.need(0).shape.length);
      const parts = gys.map((gy, j) => gy ?? zeros(ctx.g, ctx.output(j).shape, ctx.output(j).elemType));
      return [ctx.g.op('Concat', parts, { axis }), null];
    },
  },
  Slice: {
    infer: (ctx) => {
      const x = ctx.need(0);
      const plan = slicePlan(ctx);
      const shape = plan.map(([s, e]) => e - s);
      const info: TensorInfo = { elemType: x.elemType, shape };
      if (x.value) withValue(info, sliceValues(x.value, x.shape, plan));
      return [info];
    },
    vjp: (ctx, [gy]) => {
      const none = ctx.inputs.map(() => null);
      if (!gy || !ctx.wants(0) || numel(ctx.output(0).shape) === 0) return none;
      const x = ctx.need(0);
      const plan = slicePlan(ctx);
      const cut = plan.flatMap(([s, e], a) => (s !== 0 || e !== x.shape[a] ? [a] : []));
      if (cut.length === 0) return [gy, ...none.slice(1)];
      if (cut.length === 1) {
        const [a] = cut;
        return [{ kind: 'slab', axis: a, start: plan[a][0], size: plan[a][1] - plan[a][0], value: gy } satisfies Gradient, ...none.slice(1)];
      }
      const pads = [...plan.map(([s]) => s), ...plan.map(([, e], a) => x.shape[a] - e)];
      return [ctx.g.op('Pad', [gy, ctx.g.ints(pads)]), ...none.slice(1)];
    },
  },
  Pad: {
    infer: (ctx) => {
      const x = ctx.need(0);
      if (ctx.input(3)) throw new Error(`autodiff: ${ctx.where} pads selected axes; only full pads are supported`);
      const pads = ctx.valueOf(1, 'pads');
      const r = x.shape.length;
      return [{ elemType: x.elemType, shape: x.shape.map((d, a) => d + pads[a] + pads[r + a]) }];
    },
    vjp: (ctx, [gy]) => {
      const none = ctx.inputs.map(() => null);
      if (!gy || !ctx.wants(0)) return none;
      if (ctx.attrs.string('mode', 'constant') !== 'constant') throw new Error(`autodiff: ${ctx.where} pads in mode ${ctx.attrs.string('mode', '')}; only constant padding is differentiated`);
      const { g } = ctx;
      const x = ctx.need(0);
      const y = ctx.output(0);
      const r = x.shape.length;
      const pads = ctx.valueOf(1, 'pads');
      // x[i] sits at y[i + begin]: take those rows of the gradient back; rows a crop removed get 0.
      const starts = x.shape.map((_, a) => Math.max(pads[a], 0));
      const ends = x.shape.map((_, a) => y.shape[a] - Math.max(pads[r + a], 0));
      let grad = g.op('Slice', [gy, g.ints(starts), g.ints(ends), g.ints(x.shape.map((_, a) => a))]);
      const back = [...x.shape.map((_, a) => Math.max(-pads[a], 0)), ...x.shape.map((_, a) => Math.max(-pads[r + a], 0))];
      if (back.some((p) => p > 0)) grad = g.op('Pad', [grad, g.ints(back)]);
      return [grad, ...none.slice(1)];
    },
  },
  Gather: {
    infer: (ctx) => {
      const data = ctx.need(0);
      const indices = ctx.need(1);
      const axis = normAxis(ctx.attrs.int('axis', 0), data.shape.length);
      const shape = [...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)];
      const info: TensorInfo = { elemType: data.elemType, shape };
      if (data.value && indices.value) {
        const dim = data.shape[axis];
        const outer = numel(data.shape.slice(0, axis));
        const inner = numel(data.shape.slice(axis + 1));
        const out: number[] = [];
        for (let o = 0; o < outer; o++) {
          for (const raw of indices.value) {
            const j = raw < 0 ? raw + dim : raw;
            out.push(...data.value.slice((o * dim + j) * inner, (o * dim + j + 1) * inner));
          }
        }
        withValue(info, out);
      }
      return [info];
    },
    vjp: (ctx, [gy]) => [gy && ctx.wants(0) ? gatherVjp(ctx, gy) : null, null],
  },
};

/** Gradient of Gather: a slab for a constant index or range, else a scatter-add into zeros. */
function gatherVjp(ctx: VjpContext, gy: Value): Gradient {
  const { g } = ctx;
  const data = ctx.need(0);
  const indices = ctx.need(1);
  const rank = data.shape.length;
  const axis = normAxis(ctx.attrs.int('axis', 0), rank);
  const dim = data.shape[axis];
  const idx = indices.value?.map((v) => (v < 0 ? v + dim : v));
  if (idx && indices.shape.length === 0) return { kind: 'slab', axis, start: idx[0], size: 1, value: g.op('Unsqueeze', [gy, g.ints([axis])]) };
  if (idx && indices.shape.length === 1 && idx.length > 0 && idx.every((v, i) => v === idx[0] + i)) return { kind: 'slab', axis, start: idx[0], size: idx.length, value: gy };
  // General case: move the gathered axis to the front, scatter-add the rows, move it back.
  const iRank = indices.shape.length;
  const yRank = ctx.output(0).shape.length;
  const idxDims = Array.from({ length: iRank }, (_, k) => axis + k);
  const rest = Array.from({ length: yRank }, (_, k) => k).filter((k) => !idxDims.includes(k));
  const updates = g.op('Transpose', [gy], { perm: [...idxDims, ...rest] }); // [idx…, data without axis…]
  const front = [axis, ...data.shape.map((_, a) => a).filter((a) => a !== axis)];
  const base = zeros(g, front.map((a) => data.shape[a]), data.elemType);
  let index: Value = ctx.inputs[1]!;
  if (idx) index = g.constant('int64', indices.shape, idx);
  const scattered = g.op('ScatterND', [base, g.op('Unsqueeze', [index, g.ints([-1])]), updates], { reduction: 'add' });
  const back = new Array<number>(rank);
  front.forEach((a, i) => (back[a] = i));
  return g.op('Transpose', [scattered], { perm: back });
}
