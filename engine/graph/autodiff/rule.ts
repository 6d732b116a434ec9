// One rule per ONNX op type: how its outputs' static info follows from its inputs' (shape inference
// with constant folding of small integer tensors), and — for differentiable ops — its vector-Jacobian
// product: the gradients of its inputs given the gradients of its outputs, as new graph nodes.
import type { onnx } from 'onnx-proto';
import type { GraphBuilder, Value } from '../builder';
import type { Attrs, TensorInfo } from './tensor';

export interface NodeContext {
  node: onnx.INodeProto;
  attrs: Attrs;
  /** "Op 'name'" for error messages. */
  where: string;
  /** Info of input i; undefined when the input is absent (''). */
  input(i: number): TensorInfo | undefined;
  /** Input i's info; throws when absent. */
  need(i: number): TensorInfo;
  /** Input i's folded value; throws when it is not known statically. */
  valueOf(i: number, what: string): number[];
}

export interface VjpContext extends NodeContext {
  g: GraphBuilder;
  inputs: (Value | null)[];
  outputs: Value[];
  output(j: number): TensorInfo;
  /** Whether input i needs a gradient (it depends on a trained value and the loss depends on it). */
  wants(i: number): boolean;
}

/**
 * A gradient that is zero outside one contiguous block along one axis (what Slice and Gather give
 * back). Several blocks of one value become a single Concat instead of a padded full-size tensor each.
 */
export interface Slab {
  kind: 'slab';
  axis: number;
  /** First index of the block along `axis`, and its length. */
  start: number;
  size: number;
  /** The block's gradient: the input's shape with `size` along `axis`. */
  value: Value;
}

export type Gradient = Value | Slab;

export function isSlab(g: Gradient): g is Slab {
  return (g as Slab).kind === 'slab';
}

export interface OpRule {
  infer(ctx: NodeContext): TensorInfo[];
  /**
   * Gradients of the inputs (null where none is needed or the input is not differentiable), each of
   * the input's exact shape, given the outputs' gradients (null for outputs the loss does not reach).
   * Absent: the op has no gradient (integer arithmetic, comparisons, shapes).
   */
  vjp?(ctx: VjpContext, gy: (Value | null)[]): (Gradient | null)[];
}
