// A small typed layer over the ONNX protobuf, so graph code reads like the model's forward pass.
//
// Values are named edges; `op()` appends a node and returns its outputs. Weights are never embedded:
// they are initializers whose bytes live in an external data file (so models over 2 GB work and
// several graphs can share one weights file). Graph construction is a pure function of the config
// and the weight table — no tensor data passes through here.
import { onnx } from 'onnx-proto';
import { floatToHalf } from '../model/safetensors';

export type DType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool' | 'uint8';

const ONNX_DTYPE: Record<DType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
  uint8: onnx.TensorProto.DataType.UINT8,
};

export interface Value {
  readonly name: string;
}

/** A dimension is a fixed size or a symbolic name (dynamic). */
export type Dim = number | string;

export type AttrValue = number | string | number[] | string[] | { float: number } | { floats: number[] } | { tensor: onnx.ITensorProto } | { graph: onnx.IGraphProto };

/** Where a weight's bytes live in the package's external data file. */
export interface ExternalTensor {
  dtype: DType;
  dims: number[];
  offset: number;
  length: number;
}

/** A declared graph input, as the builder was told it. */
export interface InputSpec {
  name: string;
  dtype: DType;
  shape: Dim[];
}

/** What a graph transform (autodiff, training graphs) may read of a builder: everything built so far. */
export interface GraphView {
  readonly nodes: readonly onnx.INodeProto[];
  readonly inputs: readonly InputSpec[];
  readonly outputs: readonly string[];
  /** Constants and weights by name (weights carry only their external location). */
  initializer(name: string): onnx.ITensorProto | undefined;
}

/** Supplies a value in place of a graph input (static graphs); undefined declares the input as usual. */
export type InputBinding = (name: string, dtype: DType, shape: Dim[]) => Value | undefined;

export class GraphBuilder {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly inputSpecs: InputSpec[] = [];
  private inputBinding: InputBinding | null = null;
  private outputSink: ((name: string, value: Value) => void) | null = null;
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly initializers = new Map<string, onnx.ITensorProto>();
  private readonly constants = new Map<string, Value>();
  private counter = 0;
  private scope: string[] = [];

  constructor(
    readonly name: string,
    /** Name of the external data file, relative to the saved model. */
    private readonly weightsFile = 'weights.bin',
  ) {}

  /** Prefixes node and value names created inside `fn` (e.g. "layers.3/attn"), for readable graphs. */
  within<T>(name: string, fn: () => T): T {
    this.scope.push(name);
    try {
      return fn();
    } finally {
      this.scope.pop();
    }
  }

  fresh(hint: string): string {
    return `${this.scope.length ? this.scope.join('/') + '/' : ''}${hint}_${this.counter++}`;
  }

  /** Declares a graph input; declaring the same name again (same type and shape) returns the same input. */
  input(name: string, dtype: DType, shape: Dim[]): Value {
    const bound = this.inputBinding?.(name, dtype, shape);
    if (bound) return bound;
    const declared = this.inputSpecs.find((s) => s.name === name);
    if (declared) {
      if (declared.dtype !== dtype || JSON.stringify(declared.shape) !== JSON.stringify(shape)) {
        throw new Error(`graph input ${name} declared twice: ${declared.dtype} [${declared.shape}] and ${dtype} [${shape}]`);
      }
      return { name };
    }
    this.inputs.push(valueInfo(name, dtype, shape));
    this.inputSpecs.push({ name, dtype, shape: [...shape] });
    return { name };
  }

  output(value: Value, name: string, dtype: DType, shape: Dim[]): void {
    if (this.outputSink) {
      this.outputSink(name, value);
      return;
    }
    // Graph outputs need their own names; an Identity renames an internal edge.
    const out = value.name === name ? value : this.op('Identity', [value], {}, 1, name);
    this.outputs.push(valueInfo(out.name, dtype, shape));
  }

  /** A weight stored in the external data file. Repeated calls with the same name share one initializer. */
  weight(name: string, t: ExternalTensor): Value {
    if (!this.initializers.has(name)) {
      this.initializers.set(name, {
        name,
        dataType: ONNX_DTYPE[t.dtype],
        dims: t.dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: this.weightsFile },
          { key: 'offset', value: String(t.offset) },
          { key: 'length', value: String(t.length) },
        ],
      });
    }
    return { name };
  }

  /** A small constant embedded in the graph (shapes, axes, scalars). Deduplicated by value. */
  constant(dtype: DType, dims: number[], values: number[] | Float32Array): Value {
    const key = `${dtype}:${dims.join(',')}:${Array.from(values).join(',')}`;
    const cached = this.constants.get(key);
    if (cached) return cached;
    const name = `const_${this.constants.size}`;
    const tensor: onnx.ITensorProto = { name, dataType: ONNX_DTYPE[dtype], dims };
    const arr = Array.from(values);
    if (dtype === 'float32') tensor.rawData = new Uint8Array(new Float32Array(arr).buffer);
    else if (dtype === 'int64') tensor.rawData = new Uint8Array(new BigInt64Array(arr.map((v) => BigInt(v))).buffer);
    else if (dtype === 'int32') tensor.rawData = new Uint8Array(new Int32Array(arr).buffer);
    else if (dtype === 'bool' || dtype === 'uint8') tensor.rawData = new Uint8Array(arr);
    else if (dtype === 'float16') tensor.rawData = new Uint8Array(new Uint16Array(arr).buffer); // values given as half bits
    this.initializers.set(name, tensor);
    const value = { name };
    this.constants.set(key, value);
    return value;
  }

  /** int64 vector constant: shapes, axes, indices. */
  ints(values: number[]): Value {
    return this.constant('int64', [values.length], values);
  }

  /** int64 scalar constant. */
  int(value: number): Value {
    return this.constant('int64', [], [value]);
  }

  /** float32 scalar constant. */
  float(value: number): Value {
    return this.constant('float32', [], [value]);
  }

  /** Scalar constant of a float dtype (half-precision graphs need half-precision constants). */
  floatIn(dtype: 'float32' | 'float16', value: number): Value {
    return dtype === 'float16' ? this.constant('float16', [], [floatToHalf(value)]) : this.float(value);
  }

  op(opType: string, inputs: (Value | null)[], attrs?: Record<string, AttrValue>, outputs?: 1, outName?: string, domain?: string): Value;
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue>, outputs: number, outName?: string, domain?: string): Value[];
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}, outputs = 1, outName?: string, domain?: string): Value | Value[] {
    const outNames = Array.from({ length: outputs }, (_, i) => (outName && outputs === 1 ? outName : this.fresh(opType.toLowerCase() + (outputs > 1 ? `${i}` : ''))));
    this.nodes.push({
      opType,
      domain: domain ?? '',
      name: this.fresh(opType),
      input: inputs.map((v) => (v === null ? '' : v.name)),
      output: outNames,
      attribute: Object.entries(attrs).map(([name, v]) => attribute(name, v)),
    });
    const vals = outNames.map((name) => ({ name }));
    return outputs === 1 ? vals[0] : vals;
  }

  /** Appends a copy of an existing node reading `inputs` and writing `outputs` (recomputation in training graphs). */
  copyNode(node: onnx.INodeProto, inputs: string[], outputs: string[]): void {
    this.nodes.push({ ...node, name: this.fresh(`${node.opType ?? 'node'}_recompute`), input: inputs, output: outputs });
  }

  /** The serialized ModelProto (opset 18 + the com.microsoft contrib domain). */
  toBytes(metadata: Record<string, string> = {}): Uint8Array {
    const model: onnx.IModelProto = {
      irVersion: 8,
      producerName: 'titan',
      producerVersion: '1',
      opsetImport: [
        { domain: '', version: 18 },
        { domain: 'com.microsoft', version: 1 },
      ],
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.name,
        node: withoutDeadNodes(withoutOutputCopies(this.nodes, this.outputs), this.outputs),
        input: this.inputs,
        output: this.outputs,
        initializer: [...this.initializers.values()],
      },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }

  /**
   * Static graphs (training): while set, `input()` asks `binding` first and uses the value it returns
   * in place of a graph input — a constant for a fixed run input, or the previous run's output when
   * several runs are chained in one graph. null restores plain inputs.
   */
  bindInputs(binding: InputBinding | null): void {
    this.inputBinding = binding;
  }

  /** While set, `output()` hands (name, value) to `sink` instead of declaring a graph output (chained runs). */
  captureOutputs(sink: ((name: string, value: Value) => void) | null): void {
    this.outputSink = sink;
  }

  /** A read-only view of the graph built so far (nodes in the order added, which is topological). */
  view(): GraphView {
    return {
      nodes: this.nodes,
      inputs: this.inputSpecs,
      outputs: this.outputs.map((o) => o.name ?? ''),
      initializer: (name) => this.initializers.get(name),
    };
  }

  get nodeCount(): number {
    return this.nodes.length;
  }

  opTypes(): Set<string> {
    return new Set(this.nodes.map((n) => n.opType ?? ''));
  }
}

/**
 * The nodes with each output-renaming Identity (see `output()`) folded into the node that computes
 * the value: the value takes the output's name and its readers follow. An Identity on a graph output
 * is a copy kernel on every run; onnxruntime drops one only when nothing else reads the value, while
 * state outputs are usually read further on too. Values that are graph inputs, weights or another
 * output keep their Identity.
 */
function withoutOutputCopies(nodes: onnx.INodeProto[], outputs: onnx.IValueInfoProto[]): onnx.INodeProto[] {
  const outputNames = new Set(outputs.map((o) => o.name ?? ''));
  const produced = new Set(nodes.flatMap((n) => n.output ?? []));
  const rename = new Map<string, string>();
  const dropped = new Set<onnx.INodeProto>();
  for (const n of nodes) {
    const [from] = n.input ?? [];
    const [to] = n.output ?? [];
    if (n.opType !== 'Identity' || !outputNames.has(to) || !produced.has(from) || outputNames.has(from) || rename.has(from)) continue;
    rename.set(from, to);
    dropped.add(n);
  }
  if (rename.size === 0) return nodes;
  const renamed = (names: string[] | null | undefined) => (names ?? []).map((name) => rename.get(name) ?? name);
  return nodes.filter((n) => !dropped.has(n)).map((n) => ({ ...n, input: renamed(n.input), output: renamed(n.output) }));
}

/**
 * The nodes some graph output depends on. Builders compute values a variant may not use (a gate the
 * recurrent config leaves out, say); onnxruntime runs such nodes anyway, and on a GPU each is a kernel.
 */
function withoutDeadNodes(nodes: onnx.INodeProto[], outputs: onnx.IValueInfoProto[]): onnx.INodeProto[] {
  const needed = new Set(outputs.map((o) => o.name ?? ''));
  const kept: onnx.INodeProto[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!(n.output ?? []).some((name) => needed.has(name))) continue;
    kept.push(n);
    for (const name of n.input ?? []) needed.add(name);
  }
  return kept.length === nodes.length ? nodes : kept.reverse();
}

function valueInfo(name: string, dtype: DType, shape: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[dtype],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'string') return { name, type: T.STRINGS, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) };
    return { name, type: T.INTS, ints: v as number[] };
  }
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  if ('tensor' in v) return { name, type: T.TENSOR, t: v.tensor };
  return { name, type: T.GRAPH, g: v.graph };
}
