// Rewrites a serialized float32 graph into float64: every float32 initializer, graph input/output and
// Cast-to-float becomes double. Gradient checks run graphs this way, so central finite differences
// are accurate to ~1e-10 and a wrong rule shows as a clear mismatch (onnxruntime's CPU provider has
// double kernels for every op the decoder and its gradient use).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const DOUBLE = onnx.TensorProto.DataType.DOUBLE;

function float32Bytes(t: onnx.ITensorProto, modelDir: string | null): Float32Array {
  const count = (t.dims ?? []).reduce((a, b) => a * Number(b), 1);
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    if (!modelDir) throw new Error(`float64: ${t.name} is stored externally; give the model's folder`);
    const kv = new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
    const file = path.join(modelDir, kv.get('location') ?? '');
    const offset = Number(kv.get('offset') ?? 0);
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(count * 4);
      fs.readSync(fd, buf, 0, buf.length, offset);
      return new Float32Array(buf.buffer, buf.byteOffset, count);
    } finally {
      fs.closeSync(fd);
    }
  }
  if (t.rawData && t.rawData.length) {
    const bytes = new Uint8Array(t.rawData);
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  return Float32Array.from(t.floatData ?? []);
}

/**
 * The same model computing in float64. External float32 weights are read from `modelDir` and embedded
 * (meant for the small models of gradient checks).
 */
export function toFloat64(modelBytes: Uint8Array, modelDir: string | null = null): Uint8Array {
  const model = onnx.ModelProto.decode(modelBytes);
  const graph = model.graph!;
  graph.initializer = (graph.initializer ?? []).map((t) => {
    if (t.dataType !== FLOAT) return t;
    const values = Float64Array.from(float32Bytes(t, modelDir));
    return onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: DOUBLE, rawData: new Uint8Array(values.buffer) });
  });
  for (const vi of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) {
    if (vi.type?.tensorType?.elemType === FLOAT) vi.type.tensorType.elemType = DOUBLE;
  }
  for (const node of graph.node ?? []) {
    for (const a of node.attribute ?? []) {
      if (node.opType === 'Cast' && a.name === 'to' && Number(a.i) === FLOAT) a.i = DOUBLE;
    }
  }
  return onnx.ModelProto.encode(model).finish();
}
