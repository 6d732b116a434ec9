// The fused kernels the inference graphs rely on (DecoderGraphOptions.fusedOps), checked on the
// providers that run them: half-precision SimplifiedLayerNormalization must accumulate in float32
// (the fp16 graphs feed it fp16 directly; a sum of squares over 2,048 values of ±300 overflows fp16),
// and com.microsoft RotaryEmbedding must equal the primitive rotate-half RoPE of engine/graph/ops.ts.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../engine/graph/builder';
import { reshape, rope, transpose, unsqueeze } from '../../engine/graph/ops';
import { floatToHalf } from '../../engine/model/safetensors';
import { hasVulkan } from '../helpers/vulkan';

const providers = hasVulkan ? ['cpu', 'webgpu'] : ['cpu'];

test('fp16 SimplifiedLayerNormalization accumulates in float32', async (t) => {
  const N = 2048;
  const g = new GraphBuilder('sln16');
  const x = g.input('x', 'float16', [2, N]);
  const weight = g.constant('float16', [N], new Array(N).fill(floatToHalf(1)));
  g.output(g.op('Cast', [g.op('SimplifiedLayerNormalization', [x, weight], { axis: -1, epsilon: { float: 1e-5 } })], { to: 1 }), 'y', 'float32', [2, N]);
  const values = Array.from({ length: 2 * N }, (_, i) => (i < N ? (i % 2 ? 300 : -300) : ((i % 7) - 3) / 1000));
  const rms = Math.sqrt(values.slice(N).reduce((s, v) => s + v * v, 0) / N + 1e-5);
  for (const ep of providers) {
    const session = await ort.InferenceSession.create(g.toBytes(), { executionProviders: [ep], logSeverityLevel: 3 });
    const y = (await session.run({ x: new ort.Tensor('float16', Uint16Array.from(values.map(floatToHalf)), [2, N]) })).y.data as Float32Array;
    await session.release();
    t.diagnostic(`${ep}: row of ±300 → ${y[0]}, ${y[1]}`);
    for (let i = 0; i < N; i++) assert.ok(Math.abs(y[i] - (i % 2 ? 1 : -1)) < 2e-3, `${ep}: element ${i} of the ±300 row is ${y[i]}`);
    for (let i = N; i < 2 * N; i++) assert.ok(Math.abs(y[i] - values[i] / rms) < 5e-3, `${ep}: element ${i} is ${y[i]}, expected ${values[i] / rms}`);
  }
});

test('com.microsoft RotaryEmbedding equals the primitive RoPE, for keys [1, heads, S, d] and queries [1, T, heads·d] at an offset', async () => {
  const [Hk, S, d, offset] = [2, 9, 16, 5];
  const g = new GraphBuilder('rope');
  const x = g.input('x', 'float32', [Hk, S, d]);
  const cos = g.input('cos', 'float32', [offset + S, d / 2]);
  const sin = g.input('sin', 'float32', [offset + S, d / 2]);
  const tail = (table: ReturnType<GraphBuilder['input']>) => unsqueeze(g, g.op('Slice', [table, g.ints([offset]), g.ints([offset + S]), g.ints([0])]), [1]);
  const primitive = transpose(g, rope(g, transpose(g, x, [1, 0, 2]), tail(cos), tail(sin), d), [1, 0, 2]); // [Hk, S, d] at offset…
  const asKeys = reshape(g, g.op('RotaryEmbedding', [unsqueeze(g, x, [0]), g.ints([offset]), cos, sin], { interleaved: 0 }, 1, undefined, 'com.microsoft'), [Hk, S, d]);
  const asQueries = transpose(g, reshape(g, g.op('RotaryEmbedding', [reshape(g, transpose(g, x, [1, 0, 2]), [1, S, Hk * d]), g.ints([offset]), cos, sin], { interleaved: 0, num_heads: Hk }, 1, undefined, 'com.microsoft'), [S, Hk, d]), [1, 0, 2]);
  g.output(g.op('Sub', [asKeys, primitive]), 'keys_diff', 'float32', [Hk, S, d]);
  g.output(g.op('Sub', [asQueries, primitive]), 'queries_diff', 'float32', [Hk, S, d]);
  const angle = (p: number, i: number) => p / 10000 ** ((2 * i) / d);
  const table = (f: (a: number) => number) => Float32Array.from({ length: (offset + S) * (d / 2) }, (_, j) => f(angle(Math.floor(j / (d / 2)), j % (d / 2))));
  const xs = Float32Array.from({ length: Hk * S * d }, (_, i) => Math.sin(i * 1.7) * 2);
  for (const ep of providers) {
    const session = await ort.InferenceSession.create(g.toBytes(), { executionProviders: [ep], logSeverityLevel: 3 });
    const out = await session.run({ x: new ort.Tensor('float32', xs, [Hk, S, d]), cos: new ort.Tensor('float32', table(Math.cos), [offset + S, d / 2]), sin: new ort.Tensor('float32', table(Math.sin), [offset + S, d / 2]) });
    await session.release();
    for (const name of ['keys_diff', 'queries_diff']) {
      const worst = Math.max(...Array.from(out[name].data as Float32Array).map(Math.abs));
      assert.ok(worst < 1e-5, `${ep} ${name}: fused and primitive RoPE differ by ${worst}`);
    }
  }
});
