// Building blocks of transformer graphs, each a few ONNX nodes. All take the builder first.
// Axis letters used in shape comments: T new tokens, S keys (past + new), C hidden, H heads,
// Hk key/value heads, G = H / Hk, d head dim, V vocab.
import type { GraphBuilder, Value } from './builder';

export const add = (g: GraphBuilder, a: Value, b: Value) => g.op('Add', [a, b]);
export const sub = (g: GraphBuilder, a: Value, b: Value) => g.op('Sub', [a, b]);
export const mul = (g: GraphBuilder, a: Value, b: Value) => g.op('Mul', [a, b]);
export const div = (g: GraphBuilder, a: Value, b: Value) => g.op('Div', [a, b]);
export const matmul = (g: GraphBuilder, a: Value, b: Value) => g.op('MatMul', [a, b]);
export const sigmoid = (g: GraphBuilder, x: Value) => g.op('Sigmoid', [x]);
export const reshape = (g: GraphBuilder, x: Value, shape: number[]) => g.op('Reshape', [x, g.ints(shape)]);
export const transpose = (g: GraphBuilder, x: Value, perm: number[]) => g.op('Transpose', [x], { perm });
export const unsqueeze = (g: GraphBuilder, x: Value, axes: number[]) => g.op('Unsqueeze', [x, g.ints(axes)]);
export const squeeze = (g: GraphBuilder, x: Value, axes: number[]) => g.op('Squeeze', [x, g.ints(axes)]);
export const concat = (g: GraphBuilder, xs: Value[], axis: number) => g.op('Concat', xs, { axis });
export const cast = (g: GraphBuilder, x: Value, to: 'float32' | 'float16' | 'int64' | 'bool') => g.op('Cast', [x], { to: { float32: 1, float16: 10, int64: 7, bool: 9 }[to] });

/** x[starts:ends] along `axes`; bounds may be values computed in the graph. */
export function slice(g: GraphBuilder, x: Value, starts: Value | number[], ends: Value | number[], axes: number[]): Value {
  const s = Array.isArray(starts) ? g.ints(starts) : starts;
  const e = Array.isArray(ends) ? g.ints(ends) : ends;
  return g.op('Slice', [x, s, e, g.ints(axes)]);
}

/** Size of dimension `axis` of x as an int64 vector of length 1. */
export function dimOf(g: GraphBuilder, x: Value, axis: number): Value {
  return g.op('Shape', [x], { start: axis, end: axis + 1 });
}

/** y = x · Wᵀ (+ b), with W stored as HF keeps it: [out, in]. x: [T, in] → [T, out]. */
export function linear(g: GraphBuilder, x: Value, w: Value, b?: Value | null): Value {
  return g.op('Gemm', b ? [x, w, b] : [x, w], { transB: 1 });
}

/**
 * y = x · dequant(W)ᵀ with W [out, in] stored as 4-bit blocks along `in` (com.microsoft MatMulNBits;
 * layout in titanize/int4.ts). x: [T, K] → [T, N]. zeroPoints null: the op's symmetric default (8).
 * accuracyLevel 4 lets the CPU provider quantize x to int8 per block and use integer dot products.
 */
export function matMulNBits(g: GraphBuilder, x: Value, codes: Value, scales: Value, zeroPoints: Value | null, shape: { K: number; N: number; blockSize: number; accuracyLevel: number; bits?: 4 | 8 }): Value {
  const inputs = zeroPoints ? [x, codes, scales, zeroPoints] : [x, codes, scales];
  return g.op('MatMulNBits', inputs, { K: shape.K, N: shape.N, bits: shape.bits ?? 4, block_size: shape.blockSize, accuracy_level: shape.accuracyLevel }, 1, undefined, 'com.microsoft');
}

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · w (w optional). Computed in float32. */
export function rmsNorm(g: GraphBuilder, x: Value, w: Value | null, eps: number): Value {
  const ms = g.op('ReduceMean', [mul(g, x, x), g.ints([-1])], { keepdims: 1 });
  const normed = div(g, x, g.op('Sqrt', [add(g, ms, g.float(eps))]));
  return w ? mul(g, normed, w) : normed;
}

export function silu(g: GraphBuilder, x: Value): Value {
  return mul(g, x, sigmoid(g, x));
}

/** L2 normalization over the last axis: x / max(‖x‖, eps) (torch F.normalize). */
export function l2Normalize(g: GraphBuilder, x: Value, eps: number): Value {
  const norm = g.op('Sqrt', [g.op('ReduceSum', [mul(g, x, x), g.ints([-1])], { keepdims: 1 })]);
  return div(g, x, g.op('Max', [norm, g.float(eps)]));
}

/**
 * Rotary embedding in the rotate-half convention of transformers' Llama:
 * out = [x1·cos − x2·sin, x2·cos + x1·sin] with x = [x1, x2] split at d/2.
 * x: [N, heads, d]; cos, sin: [N, 1, d/2].
 */
export function rope(g: GraphBuilder, x: Value, cos: Value, sin: Value, headDim: number): Value {
  const half = headDim / 2;
  const x1 = slice(g, x, [0], [half], [2]);
  const x2 = slice(g, x, [half], [headDim], [2]);
  const o1 = sub(g, mul(g, x1, cos), mul(g, x2, sin));
  const o2 = add(g, mul(g, x2, cos), mul(g, x1, sin));
  return concat(g, [o1, o2], 2);
}

/** int64 range [start, start+len) where start, len are int64 vectors of length 1 from the graph. */
export function range(g: GraphBuilder, start: Value, length: Value): Value {
  const s = g.op('Squeeze', [start, g.ints([0])]);
  const end = g.op('Squeeze', [add(g, start, length), g.ints([0])]);
  return g.op('Range', [s, end, g.int(1)]);
}
