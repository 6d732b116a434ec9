// What autodiff knows about each value of a static graph: its element type, its shape, and — for small
// integer and boolean tensors (shapes, axes, indices, masks) — its contents, folded from constants.
//
// Training graphs are specialised to a fixed sequence length, so every shape is a number; the shape
// arithmetic the decoder graph does in-graph (Shape, Range, Slice bounds, Where on call_start…) is
// evaluated here so that each gradient rule can emit static axes, pads and slices.
import { onnx } from 'onnx-proto';
import type { GraphBuilder, Value } from '../builder';

export const ElemType = onnx.TensorProto.DataType;

/** Element type (ONNX code), static shape and, when small and integral, the values. */
export interface TensorInfo {
  elemType: number;
  shape: number[];
  /** Row-major values of int/bool tensors up to FOLD_LIMIT elements (bool as 0/1). */
  value?: number[];
}

/** Integer and boolean tensors up to this many elements are evaluated while shapes are inferred. */
export const FOLD_LIMIT = 1 << 16;

const FLOAT_TYPES = new Set<number>([ElemType.FLOAT, ElemType.FLOAT16, ElemType.DOUBLE, ElemType.BFLOAT16]);
const FOLDABLE_TYPES = new Set<number>([ElemType.INT64, ElemType.INT32, ElemType.BOOL, ElemType.UINT8]);

export const isFloat = (t: number): boolean => FLOAT_TYPES.has(t);
export const isFoldable = (t: number): boolean => FOLDABLE_TYPES.has(t);
export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** A node's attributes, read with defaults. */
export class Attrs {
  private readonly byName = new Map<string, onnx.IAttributeProto>();
  constructor(node: onnx.INodeProto) {
    for (const a of node.attribute ?? []) this.byName.set(a.name ?? '', a);
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  int(name: string, fallback: number): number {
    const a = this.byName.get(name);
    return a ? Number(a.i ?? 0) : fallback;
  }
  float(name: string, fallback: number): number {
    const a = this.byName.get(name);
    return a ? Number(a.f ?? 0) : fallback;
  }
  ints(name: string): number[] | undefined {
    const a = this.byName.get(name);
    return a ? (a.ints ?? []).map(Number) : undefined;
  }
  string(name: string, fallback: string): string {
    const a = this.byName.get(name);
    return a?.s ? new TextDecoder().decode(a.s) : fallback;
  }
}

/** Decodes a non-external initializer's values when it is small and foldable. */
export function initializerInfo(t: onnx.ITensorProto): TensorInfo {
  const shape = (t.dims ?? []).map(Number);
  const elemType = t.dataType ?? ElemType.FLOAT;
  const info: TensorInfo = { elemType, shape };
  if (!isFoldable(elemType) || numel(shape) > FOLD_LIMIT || t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) return info;
  const n = numel(shape);
  const raw = t.rawData && t.rawData.length ? t.rawData : null;
  if (raw) {
    const bytes = new Uint8Array(raw);
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    if (elemType === ElemType.INT64) info.value = Array.from(new BigInt64Array(buf, 0, n), Number);
    else if (elemType === ElemType.INT32) info.value = Array.from(new Int32Array(buf, 0, n));
    else info.value = Array.from(bytes.subarray(0, n));
  } else if (elemType === ElemType.INT64 && t.int64Data) info.value = t.int64Data.map(Number);
  else if (t.int32Data) info.value = t.int32Data.map(Number);
  return info;
}

/** numpy broadcasting of two shapes; throws on a mismatch. */
export function broadcastShapes(a: readonly number[], b: readonly number[], where: string): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`${where}: shapes [${a}] and [${b}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** Elementwise map over broadcast inputs (all values known). */
export function broadcastMap(inputs: TensorInfo[], outShape: number[], f: (xs: number[]) => number): number[] {
  const n = numel(outShape);
  const outStrides = strides(outShape);
  const plans = inputs.map((t) => {
    const s = strides(t.shape);
    const offset = outShape.length - t.shape.length;
    return outShape.map((_, axis) => (axis < offset || t.shape[axis - offset] === 1 ? 0 : s[axis - offset]));
  });
  const out = new Array<number>(n);
  const xs = new Array<number>(inputs.length);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < inputs.length; k++) {
      let idx = 0;
      let rem = i;
      for (let axis = 0; axis < outShape.length; axis++) {
        const coord = Math.floor(rem / outStrides[axis]);
        rem -= coord * outStrides[axis];
        idx += coord * plans[k][axis];
      }
      xs[k] = inputs[k].value![idx];
    }
    out[i] = f(xs);
  }
  return out;
}

/** Normalizes a possibly negative axis against a rank. */
export function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** The reduction that undoes numpy broadcasting: sums `grad` of shape `from` down to shape `to`. */
export function unbroadcast(g: GraphBuilder, grad: Value, from: readonly number[], to: readonly number[]): Value {
  const lead = from.length - to.length;
  const axes: number[] = [];
  for (let i = 0; i < from.length; i++) {
    if (i < lead) axes.push(i);
    else if (to[i - lead] === 1 && from[i] !== 1) axes.push(i);
  }
  let out = grad;
  if (axes.length) out = g.op('ReduceSum', [grad, g.ints(axes)], { keepdims: 1 });
  const reducedShape = from.map((d, i) => (axes.includes(i) ? 1 : d));
  if (reducedShape.length !== to.length || reducedShape.some((d, i) => d !== to[i])) out = g.op('Reshape', [out, g.ints([...to])]);
  return out;
}

/** A scalar constant of a float element type (half-precision graphs need half constants). */
export function scalar(g: GraphBuilder, elemType: number, v: number): Value {
  return g.floatIn(elemType === ElemType.FLOAT16 ? 'float16' : 'float32', v);
}

/** Zeros of a static shape and float element type (broadcast from a scalar, nothing stored). */
export function zeros(g: GraphBuilder, shape: readonly number[], elemType: number = ElemType.FLOAT): Value {
  return g.op('Expand', [scalar(g, elemType, 0), g.ints([...shape])]);
}
