// The matmul throughput a provider reaches on this machine: a chain of square matmuls (fp16 or
// fp32) in one ONNX graph, the weight matrix embedded (so only the first operand crosses from the
// host each run). The bench reports model throughput as a fraction of this figure.
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { floatToHalf } from '../model/safetensors';

export interface MatmulPeak {
  provider: string;
  dtype: 'float16' | 'float32';
  n: number;
  chain: number;
  runs: number;
  /** Best run, in TFLOP/s (2·n³ per matmul). */
  tflops: number;
  /** Median run, in TFLOP/s. */
  medianTflops: number;
}

function matmulChainModel(n: number, chain: number, dtype: 'float16' | 'float32'): Uint8Array {
  const elem = dtype === 'float16' ? onnx.TensorProto.DataType.FLOAT16 : onnx.TensorProto.DataType.FLOAT;
  // A well-scaled matrix (entries ±1/n) so values stay finite along the chain.
  const count = n * n;
  const raw = new Uint8Array(count * (dtype === 'float16' ? 2 : 4));
  const view = new DataView(raw.buffer);
  let seed = 12345;
  for (let i = 0; i < count; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const v = ((seed >>> 16) & 1 ? 1 : -1) / n;
    if (dtype === 'float16') view.setUint16(2 * i, floatToHalf(v), true);
    else view.setFloat32(4 * i, v, true);
  }
  const nodes: onnx.INodeProto[] = [];
  let prev = 'x';
  for (let i = 0; i < chain; i++) {
    const out = i === chain - 1 ? 'y' : `h${i}`;
    nodes.push({ opType: 'MatMul', input: [prev, 'w'], output: [out], name: `mm${i}` });
    prev = out;
  }
  const io = (name: string): onnx.IValueInfoProto => ({ name, type: { tensorType: { elemType: elem, shape: { dim: [{ dimValue: n }, { dimValue: n }] } } } });
  const model: onnx.IModelProto = {
    irVersion: 8,
    producerName: 'titan-bench',
    opsetImport: [{ domain: '', version: 18 }],
    graph: { name: 'matmul-chain', node: nodes, input: [io('x')], output: [io('y')], initializer: [{ name: 'w', dataType: elem, dims: [n, n], rawData: raw }] },
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

export async function measureMatmulPeak(provider: 'cpu' | 'webgpu' | 'cuda', options: { n?: number; chain?: number; runs?: number; dtype?: 'float16' | 'float32' } = {}): Promise<MatmulPeak> {
  const n = options.n ?? (provider === 'cpu' ? 1024 : 8192);
  const chain = options.chain ?? 8;
  const runs = options.runs ?? 5;
  const dtype = options.dtype ?? (provider === 'cpu' ? 'float32' : 'float16');
  const session = await ort.InferenceSession.create(matmulChainModel(n, chain, dtype), { executionProviders: [provider], logSeverityLevel: 3 });
  try {
    const x = dtype === 'float16' ? new ort.Tensor('float16', new Uint16Array(n * n).fill(floatToHalf(1 / n)), [n, n]) : new ort.Tensor('float32', new Float32Array(n * n).fill(1 / n), [n, n]);
    await session.run({ x }); // warm-up: shader compilation, allocations
    const seconds: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await session.run({ x });
      seconds.push((performance.now() - t0) / 1000);
    }
    const flop = 2 * n ** 3 * chain;
    const sorted = [...seconds].sort((a, b) => a - b);
    return { provider, dtype, n, chain, runs, tflops: flop / sorted[0] / 1e12, medianTflops: flop / sorted[Math.floor(sorted.length / 2)] / 1e12 };
  } finally {
    await session.release();
  }
}
