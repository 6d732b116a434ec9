// Reverse-mode differentiation of the graphs GraphBuilder emits: onnxruntime-node has no training
// API, so a training graph is the forward graph plus its own gradient nodes, and any execution
// provider that runs the forward ops runs the backward ones too.
//
//   const [gA, gB] = gradients(g, loss, [a, b]);   // appends the backward pass to g
//
// Three passes over the node list (which is topological: nodes are appended after their inputs):
//   1. static info: every value's element type and shape, with small integer tensors evaluated, so the
//      shape arithmetic the decoder graph does in-graph becomes constants (graphs must be static:
//      every input shape a number — training graphs fix the sequence length);
//   2. activity: a value needs a gradient when it depends on a `wrt` value and the loss depends on it;
//   3. the reverse sweep: each active node's rule (autodiff/*.ts) turns its outputs' gradients into its
//      inputs' gradients, summed where a value feeds several nodes.
// A float value that depends on a trained input through an op without a gradient rule is an error,
// never a silently missing gradient.
import type { onnx } from 'onnx-proto';
import type { GraphBuilder, GraphView, Value } from './builder';
import { ELEMENTWISE_RULES } from './autodiff/elementwise';
import { LINALG_RULES } from './autodiff/linalg';
import { isSlab, type Gradient, type NodeContext, type OpRule, type Slab, type VjpContext } from './autodiff/rule';
import { SHAPE_RULES } from './autodiff/shape-ops';
import { Attrs, ElemType, initializerInfo, isFloat, scalar as scalarOf, zeros, type TensorInfo } from './autodiff/tensor';

export type { TensorInfo } from './autodiff/tensor';

const RULES: Record<string, OpRule> = { ...ELEMENTWISE_RULES, ...SHAPE_RULES, ...LINALG_RULES };

const DTYPE_CODES: Record<string, number> = {
  float32: ElemType.FLOAT,
  float16: ElemType.FLOAT16,
  int64: ElemType.INT64,
  int32: ElemType.INT32,
  bool: ElemType.BOOL,
  uint8: ElemType.UINT8,
};

/** Op types autodiff can differentiate (the others may appear only off the gradient path). */
export const DIFFERENTIABLE_OPS: readonly string[] = Object.entries(RULES)
  .filter(([, r]) => r.vjp)
  .map(([op]) => op)
  .sort();

function describe(node: onnx.INodeProto): string {
  return `${node.opType} '${node.name ?? ''}'`;
}

function nodeContext(node: onnx.INodeProto, infos: Map<string, TensorInfo>): NodeContext {
  const where = describe(node);
  const names = node.input ?? [];
  const input = (i: number): TensorInfo | undefined => {
    const name = names[i];
    if (!name) return undefined;
    const info = infos.get(name);
    if (!info) throw new Error(`autodiff: ${where} reads ${name}, which no earlier node, input or initializer defines`);
    return info;
  };
  return {
    node,
    attrs: new Attrs(node),
    where,
    input,
    need(i) {
      const info = input(i);
      if (!info) throw new Error(`autodiff: ${where} lacks input ${i}`);
      return info;
    },
    valueOf(i, what) {
      const info = input(i);
      if (!info?.value) throw new Error(`autodiff: ${where}: its ${what} (${names[i]}) is not a static value; training graphs must have fixed shapes`);
      return info.value;
    },
  };
}

/** Static element type, shape and small integer values of every value in the graph built so far. */
export function staticInfo(view: GraphView): Map<string, TensorInfo> {
  const infos = new Map<string, TensorInfo>();
  for (const inp of view.inputs) {
    if (inp.shape.some((d) => typeof d !== 'number')) throw new Error(`autodiff: graph input ${inp.name} has a symbolic shape [${inp.shape}]; differentiated graphs must be static`);
    infos.set(inp.name, { elemType: DTYPE_CODES[inp.dtype], shape: inp.shape as number[] });
  }
  for (const node of view.nodes) {
    for (const name of node.input ?? []) {
      if (name && !infos.has(name)) {
        const init = view.initializer(name);
        if (init) infos.set(name, initializerInfo(init));
      }
    }
    const rule = RULES[node.opType ?? ''];
    if (!rule) throw new Error(`autodiff: no shape rule for op ${describe(node)}`);
    const outs = rule.infer(nodeContext(node, infos));
    (node.output ?? []).forEach((name, j) => {
      if (name) infos.set(name, outs[j]);
    });
  }
  return infos;
}

export interface GradientOptions {
  /**
   * Activation recomputation (gradient checkpointing): nodes mapped to the same key form a segment
   * whose float values the backward pass recomputes from the segment's inputs instead of keeping them
   * from the forward pass (null: kept). Segments must be contiguous runs of nodes, e.g. one decoder
   * layer of one run. The recomputation of a segment waits for the gradient reaching it, so each
   * segment's activations exist twice briefly instead of all of them for the whole step.
   */
  recompute?: (node: onnx.INodeProto) => string | null;
}

/**
 * Appends to `g` the gradient of the scalar `loss` with respect to each of `wrt` (graph inputs or any
 * float values), returning one value per entry, each of its shape. Values the loss does not depend on
 * get zeros.
 */
export function gradients(g: GraphBuilder, loss: Value, wrt: readonly Value[], options: GradientOptions = {}): Value[] {
  const view = g.view();
  const nodes = view.nodes.slice();
  const infos = staticInfo(view);
  const lossInfo = infos.get(loss.name);
  if (!lossInfo) throw new Error(`autodiff: the loss ${loss.name} is not a value of this graph`);
  if (lossInfo.shape.reduce((a, b) => a * b, 1) !== 1 || !isFloat(lossInfo.elemType)) throw new Error(`autodiff: the loss must be a float scalar, got shape [${lossInfo.shape}]`);

  // Forward activity: values that depend on a trained value.
  const active = new Set(wrt.map((v) => v.name));
  for (const node of nodes) {
    if (!(node.input ?? []).some((n) => n && active.has(n))) continue;
    const rule = RULES[node.opType ?? '']!;
    const floatOuts = (node.output ?? []).filter((n) => n && isFloat(infos.get(n)!.elemType));
    if (floatOuts.length === 0) continue;
    if (!rule.vjp) throw new Error(`autodiff: ${describe(node)} depends on a trained value but has no gradient rule (differentiable ops: ${DIFFERENTIABLE_OPS.join(', ')})`);
    for (const n of floatOuts) active.add(n);
  }
  // Backward relevance: active values the loss depends on.
  const needed = new Set<string>([loss.name]);
  for (let k = nodes.length - 1; k >= 0; k--) {
    const node = nodes[k];
    if (!(node.output ?? []).some((n) => needed.has(n))) continue;
    for (const n of node.input ?? []) if (n && active.has(n)) needed.add(n);
  }

  // The reverse sweep. A value's gradient contributions are collected and summed when it is first
  // read, which is after every consumer has contributed (consumers come later in the node order).
  const pending = new Map<string, Gradient[]>();
  const done = new Map<string, Value | null>();
  const accumulate = (name: string, grad: Gradient) => {
    const list = pending.get(name) ?? [];
    list.push(grad);
    pending.set(name, list);
  };
  const gradOf = (name: string): Value | null => {
    if (!done.has(name)) done.set(name, sumContributions(g, pending.get(name) ?? [], infos.get(name)!));
    return done.get(name)!;
  };
  accumulate(loss.name, g.constant('float32', lossInfo.shape, new Float32Array(lossInfo.shape.length ? lossInfo.shape.reduce((a, b) => a * b, 1) : 1).fill(1)));
  const recompute = options.recompute ? new Recomputation(g, nodes, infos, options.recompute) : null;
  for (let k = nodes.length - 1; k >= 0; k--) {
    const node = nodes[k];
    const outNames = node.output ?? [];
    const gys = outNames.map((n) => (n && needed.has(n) ? gradOf(n) : null));
    if (gys.every((x) => x === null)) continue;
    const inNames = node.input ?? [];
    if (!inNames.some((n) => n && needed.has(n))) continue;
    const base = nodeContext(node, infos);
    // Forward values the rule reads: the kept ones, or recomputed copies inside a checkpointed segment.
    const firstGrad = gys.findIndex((x) => x !== null);
    const forward = recompute?.enter(k, gys[firstGrad]!, infos.get(outNames[firstGrad])!.elemType) ?? ((name: string): Value => ({ name }));
    const ctx: VjpContext = {
      ...base,
      g,
      inputs: lazyValues(inNames, forward),
      outputs: lazyValues(outNames, forward) as Value[],
      output: (j) => infos.get(outNames[j])!,
      wants: (i) => Boolean(inNames[i] && needed.has(inNames[i])),
    };
    const rule = RULES[node.opType ?? '']!;
    const gxs = g.within('grad', () => rule.vjp!(ctx, gys));
    inNames.forEach((n, i) => {
      const gx = gxs[i];
      if (gx && ctx.wants(i)) accumulate(n, gx);
    });
  }
  return wrt.map((v) => {
    const grad = needed.has(v.name) ? gradOf(v.name) : null;
    if (grad) return grad;
    const info = infos.get(v.name);
    if (!info) throw new Error(`autodiff: ${v.name} is not a value of this graph`);
    return zeros(g, info.shape, info.elemType);
  });
}

/**
 * The sum of a value's gradient contributions. Slabs (blocks along one axis) that do not overlap are
 * laid side by side with zero fill in one Concat — the gradient of a run of Gathers or Slices over one
 * tensor — instead of one full-size padded tensor per block.
 */
function sumContributions(g: GraphBuilder, parts: Gradient[], info: TensorInfo): Value | null {
  if (parts.length === 0) return null;
  const shape = info.shape;
  const dense = parts.filter((p): p is Value => !isSlab(p));
  let slabs = parts.filter(isSlab);
  const pad = (s: Slab): Value => {
    const pads = new Array<number>(2 * shape.length).fill(0);
    pads[s.axis] = s.start;
    pads[shape.length + s.axis] = shape[s.axis] - s.start - s.size;
    return g.op('Pad', [s.value, g.ints(pads)]);
  };
  const terms: Value[] = [...dense];
  if (slabs.length === 1) terms.push(pad(slabs[0]));
  else if (slabs.length > 1) {
    slabs = [...slabs].sort((a, b) => a.start - b.start);
    const axis = slabs[0].axis;
    const disjoint = slabs.every((s, i) => s.axis === axis && (i === 0 || s.start >= slabs[i - 1].start + slabs[i - 1].size));
    if (!disjoint) terms.push(...slabs.map(pad));
    else {
      const pieces: Value[] = [];
      const gap = (size: number) => {
        const dims = [...shape];
        dims[axis] = size;
        pieces.push(zeros(g, dims, info.elemType));
      };
      let at = 0;
      for (const s of slabs) {
        if (s.start > at) gap(s.start - at);
        pieces.push(s.value);
        at = s.start + s.size;
      }
      if (at < shape[axis]) gap(shape[axis] - at);
      terms.push(g.op('Concat', pieces, { axis }));
    }
  }
  return terms.reduce((acc, t) => g.op('Add', [acc, t]));
}

/** An array whose entries are resolved on first read (so only the forward values a rule uses get recomputed). */
function lazyValues(names: readonly string[], resolve: (name: string) => Value): (Value | null)[] {
  const out: (Value | null)[] = new Array(names.length).fill(null);
  names.forEach((n, i) => {
    if (!n) return;
    let v: Value | undefined;
    Object.defineProperty(out, i, { get: () => (v ??= resolve(n)), enumerable: true });
  });
  return out;
}

/**
 * Recomputed copies of checkpointed segments. While the reverse sweep is inside a segment, a forward
 * value produced in that segment is replaced by a copy computed again from the segment's inputs; each
 * float input enters through `u + 0·Σ(gradient)`, which makes the copy wait for the backward pass to
 * reach the segment (onnxruntime runs nodes in dependency order and frees each tensor after its last
 * reader, so the forward activations are then freed during the forward pass).
 */
class Recomputation {
  private readonly segmentOf: (string | null)[];
  private readonly producer = new Map<string, number>();
  private current: string | null = null;
  private renamed = new Map<string, Value>();
  private barrier = new Map<number, Value>();
  private source: { grad: Value; elemType: number } | null = null;

  constructor(
    private readonly g: GraphBuilder,
    private readonly nodes: readonly onnx.INodeProto[],
    private readonly infos: Map<string, TensorInfo>,
    key: (node: onnx.INodeProto) => string | null,
  ) {
    this.segmentOf = nodes.map(key);
    nodes.forEach((n, k) => (n.output ?? []).forEach((o) => o && this.producer.set(o, k)));
  }

  /** Called for each node the sweep differentiates; returns how that node's rule reads forward values. */
  enter(k: number, gradient: Value, elemType: number): (name: string) => Value {
    const segment = this.segmentOf[k];
    if (segment !== this.current) {
      this.current = segment;
      this.renamed = new Map();
      this.barrier = new Map();
      this.source = { grad: gradient, elemType };
    }
    return (name) => this.value(name);
  }

  private inSegment(name: string): boolean {
    const k = this.producer.get(name);
    return this.current !== null && k !== undefined && this.segmentOf[k] === this.current;
  }

  private value(name: string): Value {
    if (!this.inSegment(name) || !isFloat(this.infos.get(name)!.elemType)) return { name };
    const known = this.renamed.get(name);
    if (known) return known;
    const node = this.nodes[this.producer.get(name)!];
    const inputs = (node.input ?? []).map((n) => (!n ? '' : this.inSegment(n) ? this.value(n).name : isFloat(this.infos.get(n)?.elemType ?? 0) ? this.gated(n).name : n));
    const outputs = (node.output ?? []).map((n) => (n ? this.g.fresh('recompute') : ''));
    this.g.copyNode(node, inputs, outputs);
    (node.output ?? []).forEach((n, j) => n && this.renamed.set(n, { name: outputs[j] }));
    return this.renamed.get(name)!;
  }

  /** A segment input made to depend on the gradient that reached the segment. */
  private gated(name: string): Value {
    const type = this.infos.get(name)!.elemType;
    let zero = this.barrier.get(type);
    if (!zero) {
      const g = this.g;
      const srcType = this.source!.elemType;
      let z = g.op('Mul', [g.op('ReduceSum', [this.source!.grad], { keepdims: 0 }), scalarOf(g, srcType, 0)]);
      if (srcType !== type) z = g.op('Cast', [z], { to: type });
      zero = z;
      this.barrier.set(type, zero);
    }
    const key = `${name}|gated`;
    const known = this.renamed.get(key);
    if (known) return known;
    const v = this.g.op('Add', [{ name }, zero]);
    this.renamed.set(key, v);
    return v;
  }
}
