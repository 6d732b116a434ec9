// Gradient checks of whole blocks of the project's graphs against central finite differences in
// float64 (tolerance in test/train/gradcheck.ts): the norms and RoPE of graph/ops.ts, the SwiGLU MLP,
// the LiZA linear-attention branch with Memory-as-Gate for every recurrent form (chunked delta rule
// over several chunks, per-column gated decay, the GELU state squash, delta products with each
// virtual-token trick, tptt-0.12's chunk, cross gate and base scale) — differentiated through the
// branch output and the carried state — and the whole training graph of a tiny random model (LoRA on
// every projection, a sequence cut into several chained runs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { GraphBuilder, Value } from '../../engine/graph/builder';
import { l2Normalize, linear, rmsNorm, rope, silu } from '../../engine/graph/ops';
import { parseModelConfig } from '../../engine/model/config';
import { LizaExtension } from '../../engine/titanize/liza';
import { readPackage } from '../../engine/titanize/package';
import { resolveTpttSettings, type TpttSettingsInput } from '../../engine/titanize/settings';
import { buildTrainingForward, planRuns } from '../../engine/train/graph';
import { shapeA, shapeB, type LoraSpec } from '../../engine/train/lora';
import { tinyTitanPackage } from '../helpers/workspace';
import { gradCheck, RTOL, type Param } from '../train/gradcheck';

const param = (g: GraphBuilder, name: string, shape: number[], low = -1, high = 1): Param => ({ value: g.input(name, 'float32', shape), shape, low, high });
const flat = (g: GraphBuilder, v: Value) => g.op('Reshape', [v, g.ints([-1])]);

function assertClean(name: string, r: { failures: string[]; worst: number; largest: number; compared: number }, t: { diagnostic(m: string): void }): void {
  t.diagnostic(`${name}: ${r.compared} derivatives, worst relative error ${r.worst.toExponential(2)} (tolerance ${RTOL})`);
  assert.deepEqual(r.failures.slice(0, 5), [], `${name}: worst ${r.worst.toExponential(2)}`);
  assert.ok(r.largest > 1e-4, `${name}: gradients are all ~0`);
}

describe('autodiff blocks: norms, RoPE, MLP', () => {
  test('RMSNorm with weight, L2 normalization, SiLU', async (t) => {
    const r = await gradCheck((g) => {
      const x = param(g, 'x', [3, 8]);
      const w = param(g, 'w', [8], 0.5, 1.5);
      const parts = [rmsNorm(g, x.value, w.value, 1e-5), l2Normalize(g, x.value, 1e-6), silu(g, x.value)].map((v) => flat(g, v));
      return { params: [x, w], output: g.op('Concat', parts, { axis: 0 }) };
    });
    assertClean('norms', r, t);
  });
  test('rotary embedding (rotate-half)', async (t) => {
    const r = await gradCheck((g) => {
      const x = param(g, 'x', [5, 2, 8]);
      const angles = g.constant('float32', [5, 1, 4], Float32Array.from({ length: 20 }, (_, i) => 0.3 * i));
      return { params: [x], output: rope(g, x.value, g.op('Cos', [angles]), g.op('Sin', [angles]), 8) };
    });
    assertClean('rope', r, t);
  });
  test('SwiGLU MLP: input and every weight', async (t) => {
    const r = await gradCheck((g) => {
      const x = param(g, 'x', [4, 6]);
      const gu = param(g, 'gate_up', [10, 6], -0.5, 0.5);
      const down = param(g, 'down', [6, 5], -0.5, 0.5);
      const h = linear(g, x.value, gu.value);
      const [gate, up] = g.op('Split', [h, g.ints([5, 5])], { axis: 1 }, 2);
      return { params: [x, gu, down], output: linear(g, g.op('Mul', [silu(g, gate), up]), down.value) };
    });
    assertClean('mlp', r, t);
  });
});

// A small attention layer shape: H = 2 query heads over Hk = 1 key/value head (GQA), d = 4, C = 8.
const CONFIG = parseModelConfig({ model_type: 'llama', hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, vocab_size: 32 });

/** The LiZA branch of one layer from trained raw q, k, v (and softmax output), as one run from an empty state. */
function lizaBlock(g: GraphBuilder, input: TpttSettingsInput, T: number) {
  const settings = resolveTpttSettings(input, CONFIG.headDim);
  const { numHeads: H, numKvHeads: Hk, headDim: d, hiddenSize: C } = CONFIG;
  const q = param(g, 'q', [T, H * d]);
  const k = param(g, 'k', [T, Hk * d]);
  const v = param(g, 'v', [T, Hk * d]);
  const soft = param(g, 'softmax_heads', [T, H * d]);
  const oW = g.constant('float32', [C, H * d], Float32Array.from({ length: C * H * d }, (_, i) => Math.sin(i * 1.7) * 0.4));
  const states = new Map<string, Value>();
  g.bindInputs((name, _dtype, shape) => {
    if (name === 'call_start') return g.constant('bool', [1], [1]);
    if (name === 'stream_position') return g.ints([0]);
    return g.constant('float32', shape.map((s) => (typeof s === 'number' ? s : 0)), new Float32Array(0));
  });
  g.captureOutputs((name, value) => states.set(name, value));
  const ext = new LizaExtension(CONFIG, settings, 'segment');
  ext.declare(g);
  const out = ext.mix(g, { layer: 0, q: q.value, k: k.value, v: v.value, qkv: g.op('Concat', [q.value, k.value, v.value], { axis: 1 }), softmaxHeads: soft.value, oProj: (h) => linear(g, h, oW), newTokens: g.ints([T]), dtype: 'float32', fusedOps: false });
  g.bindInputs(null);
  g.captureOutputs(null);
  // The carried state matters too: later runs (and the next chunk) read it.
  const output = g.op('Concat', [flat(g, out), flat(g, states.get('state_out.0.S')!)], { axis: 0 });
  return { params: [q, k, v, soft], output };
}

const LIZA_CASES: { name: string; input: TpttSettingsInput; T: number }[] = [
  { name: 'delta rule, chunked: 3 chunks of 4 in one run', input: { operator_mode: 'delta_rule', max_chunk_size: 4 }, T: 11 },
  { name: 'gated delta rule (per-column decay α)', input: { operator_mode: 'gated_delta_rule', max_chunk_size: 8 }, T: 7 },
  { name: 'delta rule with β from values and from k·v', input: { operator_mode: 'delta_rule_kv', max_chunk_size: 8 }, T: 6 },
  { name: 'delta rule with the GELU state squash at chunk ends', input: { operator_mode: 'delta_rule_gelu', max_chunk_size: 4 }, T: 9 },
  { name: 'delta product (order 2, derivative trick), 2 chunks', input: { operator_mode: 'delta_product', max_chunk_size: 4 }, T: 8 },
  { name: 'delta product with the rotation trick', input: { operator_mode: 'delta_product_r', max_chunk_size: 8 }, T: 5 },
  { name: 'delta product with the mixed trick', input: { operator_mode: 'delta_product_c', max_chunk_size: 8 }, T: 5 },
  { name: 'gated delta product', input: { operator_mode: 'gated_delta_product', max_chunk_size: 8 }, T: 6 },
  { name: 'Memory-as-Gate with cross gate and base scale, μ 0.3', input: { operator_mode: 'delta_rule', mag_weight: 0.3, cross_gate: true, base_scale_attn: true, max_chunk_size: 8 }, T: 6 },
  { name: 'tptt-0.12 chunk (delta rule)', input: { operator_mode: 'delta_rule', semantics: 'tptt-0.12', max_chunk_size: 8 }, T: 6 },
  { name: 'tptt-0.12 chunk (gated delta product)', input: { operator_mode: 'gated_delta_product', semantics: 'tptt-0.12', max_chunk_size: 8 }, T: 6 },
];

describe('autodiff blocks: LiZA + Memory-as-Gate', () => {
  for (const c of LIZA_CASES) {
    test(c.name, async (t) => {
      const r = await gradCheck((g) => lizaBlock(g, c.input, c.T), { seed: c.T * 31 + c.name.length, probes: 8 });
      assertClean(c.name, r, t);
    });
  }
});

describe('autodiff blocks: the whole training graph of a tiny model', () => {
  const cases: { name: string; settings: TpttSettingsInput; T: number; runs: number }[] = [
    { name: 'delta rule, one run of 3 chunks', settings: { operator_mode: 'delta_rule', max_chunk_size: 8, max_self_attn_length: 8 }, T: 20, runs: 1 },
    { name: 'gated delta product, 3 chained runs (state carried between them)', settings: { operator_mode: 'gated_delta_product', max_chunk_size: 8, max_self_attn_length: 8 }, T: 20, runs: 3 },
  ];
  for (const c of cases) {
    test(c.name, async (t) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-gradcheck-'));
      try {
        const pkg = readPackage(await tinyTitanPackage(dir, c.settings));
        const spec: LoraSpec = { r: 2, alpha: 4, dropout: 0, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], rslora: false };
        const T = c.T;
        assert.equal(planRuns(pkg.manifest, 0, T).length, c.runs);
        const V = pkg.config.vocabSize;
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 37 + 5) % V)), [T]),
          targets: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 53 + 11) % V)), [T]),
          loss_weights: new ort.Tensor('float64', Float64Array.from({ length: T }, (_, i) => (i % 3 === 0 ? 0 : 1 / T)), [T]),
          mag_weight: new ort.Tensor('float64', Float64Array.from([0.5]), []),
        };
        // The training graph's forward part, differentiated with respect to every LoRA matrix.
        const r = await gradCheck(
          (g) => {
            const inner = buildInto(g, pkg, spec, T);
            return { params: inner.params, output: inner.loss, isLoss: true };
          },
          { modelDir: pkg.dir, feeds, probes: 2, directions: 1, seed: 5 },
        );
        assertClean(c.name, r, t);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

/** The training graph's forward part built into the check's builder; the LoRA matrices are the trained values. */
function buildInto(g: GraphBuilder, pkg: ReturnType<typeof readPackage>, spec: LoraSpec, T: number): { params: Param[]; loss: Value } {
  const fwd = buildTrainingForward(g, pkg, { sequence: T, kind: 'eval', lora: spec });
  // B starts non-zero here (PEFT starts it at 0), so A's gradient is not trivially zero.
  const params = fwd.slots.flatMap((s): Param[] => [
    { value: { name: s.a }, shape: shapeA(s, spec.r), low: -0.3, high: 0.3 },
    { value: { name: s.b }, shape: shapeB(s, spec.r), low: -0.3, high: 0.3 },
  ]);
  return { params, loss: fwd.loss };
}
