// Every supported architecture, end to end through the CLI: a random-weight checkpoint (real layout,
// real tokenizer) → `titan convert` → `titan logits` / `titan generate`, checked against an
// independent float64 forward pass (test/helpers/hf-reference.ts, written from transformers'
// modeling code). Each case also shows that the comparison would notice its architecture's feature
// missing: the reference with that one feature switched off is far outside the tolerance.
//
// Tolerances: 1e-3 max |logit diff| (float32 graph vs float64 reference; measured figures are
// printed, ~1e-6 here). Splitting a sequence into runs: 1e-4. fp16 packages store matrices in half
// precision and compute in float32: they must match the reference fed the same half-rounded matrices
// within 1e-3; their drift from the fp32 package (the price of 11-bit mantissas) is bounded by
// FP16_DRIFT, a documented budget, not a correctness claim.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { writeRandomCheckpoint, type CheckpointOptions } from '../helpers/checkpoint';
import { CPU, titanLogits, titanOk } from '../helpers/cli';
import { argmaxOf, assertRowsClose, maxAbsDiff, topMargin } from '../helpers/compare';
import { DEMO_MODEL_DIR, loadGoldens } from '../helpers/goldens';
import { hfForward, hfGreedy, loadHfModel, type Ablation, type HfModel } from '../helpers/hf-reference';

const TOLERANCE = 1e-3;
const SPLIT_TOLERANCE = 1e-4;
/** Largest logit change fp16 weights may cause on these models (measured ≤ 5.3e-4; bf16 sources lose nothing). */
const FP16_DRIFT = 5e-3;
/** A feature counts as visible when switching it off moves some logit by this much (10× the tolerance). */
const VISIBLE = 10 * TOLERANCE;

const TEXT = `import { readFile } from 'node:fs/promises';
export async function load(path) {
  const text = await readFile(path, 'utf8');
  return text.split('\\n').map((line) => line.trim());
}
`;

interface ArchCase {
  name: string;
  options: CheckpointOptions;
  /** Features this checkpoint exercises, each of which must visibly change the logits. */
  features: Ablation[];
  /** Edits config.json after generation. */
  editConfig?: (config: Record<string, unknown>) => void;
  /** Also convert with --dtype fp16 (float32 sources only: bf16/fp16 values are exact in half precision). */
  fp16?: boolean;
}

// Small but not tiny: with C = 128 the random weights give attention sharp enough for RoPE and
// grouping to matter at the tolerance.
const dims = { hiddenSize: 128, numHeads: 4, numKvHeads: 2, numLayers: 2 };

const CASES: ArchCase[] = [
  {
    name: 'llama, llama3 rope scaling, 2 shards, float32, 4.x config',
    options: { arch: 'llama', rope: 'llama3', sharded: true, ...dims },
    features: ['rope-scaling', 'gqa-grouping'],
    fp16: true,
    // Llama 3.1's own parameters only rescale wavelengths above 2048 tokens, invisible in 48 tokens;
    // a 64-token original context puts these head dims in all three regimes (kept, smoothed, divided).
    editConfig: (c) => {
      c.rope_theta = 10000;
      (c.rope_scaling as Record<string, number>).original_max_position_embeddings = 64;
    },
  },
  {
    name: 'llama, linear rope scaling, bfloat16, 5.x config (rope_parameters), tied embeddings',
    options: { arch: 'llama', rope: 'linear', dtype: 'bfloat16', configStyle: 'new', tied: true, ...dims },
    features: ['rope-scaling'],
  },
  {
    name: 'mistral, sliding window 12, float16, 5.x config',
    options: { arch: 'mistral', slidingWindow: 12, dtype: 'float16', configStyle: 'new', ...dims },
    features: ['sliding-window', 'gqa-grouping'],
  },
  {
    name: 'qwen2, q/k/v bias, bfloat16, 3 shards',
    options: { arch: 'qwen2', dtype: 'bfloat16', sharded: 3, ...dims },
    features: ['qkv-bias'],
  },
  {
    name: 'qwen3, per-head q/k norm, head_dim ≠ C/H, 5.x config, tied embeddings',
    options: { arch: 'qwen3', configStyle: 'new', tied: true, ...dims },
    features: ['qk-norm'],
    fp16: true,
  },
  {
    name: 'olmo2, whole-projection q/k norm, post-norms, float16',
    options: { arch: 'olmo2', dtype: 'float16', ...dims },
    features: ['qk-norm', 'post-norm'],
  },
];

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-architectures-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

for (const c of CASES) {
  describe(c.name, () => {
    let ckptDir: string;
    let pkg: string;
    let model: HfModel;
    let ids: number[];
    let expected: Float64Array[];
    let ours: Float32Array[];

    before(async () => {
      const slug = c.name.split(',')[0] + '-' + CASES.indexOf(c);
      ckptDir = (await writeRandomCheckpoint(path.join(tmp, `ckpt-${slug}`), c.options)).dir;
      if (c.editConfig) {
        const file = path.join(ckptDir, 'config.json');
        const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
        c.editConfig(config);
        fs.writeFileSync(file, JSON.stringify(config, null, 2));
      }
      pkg = path.join(tmp, `pkg-${slug}`);
      model = await loadHfModel(ckptDir);
      ids = loadTokenizer(ckptDir).encode(TEXT).slice(0, 48);
      assert.ok(ids.length >= 40, `the test text encodes to only ${ids.length} tokens`);
      expected = hfForward(model, ids);
    });

    test('titan convert writes a package; titan logits match the float64 reference at every position', async (t) => {
      const report = JSON.parse(await titanOk(['convert', ckptDir, '--out', pkg, '--json'])) as { kind: string; modelType: string; dtype: string };
      assert.deepEqual([report.kind, report.modelType, report.dtype], ['base', c.options.arch, 'fp32']);
      ours = await titanLogits(pkg, ids, ids.map((_, i) => i));
      const worst = assertRowsClose(ours, expected, TOLERANCE, (i) => `position ${i}`);
      // Argmax where the reference is not a near-tie.
      ours.forEach((row, i) => {
        if (topMargin(expected[i]) > 2 * TOLERANCE) assert.equal(argmaxOf(row), argmaxOf(expected[i]), `position ${i}: argmax`);
      });
      t.diagnostic(`${ids.length} tokens, max |logit diff| ${worst.toExponential(2)}`);
    });

    test(`the comparison sees ${c.features.join(' and ')}: switched off in the reference, logits move by > ${VISIBLE}`, (t) => {
      assert.ok(ours, 'the conversion test did not run');
      for (const feature of c.features) {
        const ablated = hfForward(model, ids, { ablate: feature });
        const moved = Math.max(...ablated.map((row, i) => maxAbsDiff(row, ours[i])));
        assert.ok(moved > VISIBLE, `without ${feature} the reference moves only ${moved.toExponential(2)} from the package: this case would not catch ${feature} being wrong`);
        t.diagnostic(`${feature}: ${moved.toExponential(2)}`);
      }
    });

    test(`--segments 7,3,5 and --stepwise give the one-pass logits within ${SPLIT_TOLERANCE}`, async () => {
      assert.ok(ours, 'the conversion test did not run');
      const positions = ids.map((_, i) => i);
      const segmented = await titanLogits(pkg, ids, positions, ['--segments', '7,3,5']);
      assertRowsClose(segmented, ours, SPLIT_TOLERANCE, (i) => `segments, position ${i}`);
      const stepwise = await titanLogits(pkg, ids, positions, ['--stepwise']);
      assertRowsClose(stepwise, ours, SPLIT_TOLERANCE, (i) => `stepwise, position ${i}`);
    });

    test('titan generate --max-new-tokens 5 continues greedily as the reference does', async (t) => {
      const prompt = 'export async function load(path) {';
      const promptIds = loadTokenizer(ckptDir).encode(prompt);
      const result = JSON.parse(await titanOk(['generate', pkg, '--prompt', prompt, '--max-new-tokens', '5', '--json', ...CPU])) as { tokens: number[]; stopReason: string; promptTokens: number; text: string };
      assert.equal(result.promptTokens, promptIds.length);
      const eos = loadTokenizer(ckptDir).eosTokenIds;
      assert.ok(result.tokens.length === 5 || (result.stopReason === 'eos' && result.tokens.length < 5), `got ${result.tokens.length} tokens, stop ${result.stopReason}`);
      if (result.tokens.length === 5) assert.equal(result.stopReason, 'length');
      const ref = hfGreedy(model, promptIds, 5);
      // Compare until the reference meets a near-tie (a float32 graph may then pick the other token).
      let compared = 0;
      for (let i = 0; i < 5; i++) {
        if (i < result.tokens.length) assert.equal(result.tokens[i], ref.tokens[i], `generated token ${i}`);
        else assert.ok(eos.includes(ref.tokens[i]), `generation stopped at eos, the reference continues with ${ref.tokens[i]}`);
        compared++;
        if (i >= result.tokens.length || ref.margins[i] < 2 * TOLERANCE) break;
      }
      t.diagnostic(`generated ${JSON.stringify(result.text)} (${result.tokens.length} tokens, ${compared} checked against the reference)`);
    });

    if (c.fp16) {
      test(`titan convert --dtype fp16: matches the reference with half-rounded matrices within ${TOLERANCE}; drift from fp32 < ${FP16_DRIFT}`, async (t) => {
        assert.ok(ours, 'the conversion test did not run');
        const pkg16 = `${pkg}-fp16`;
        const report = JSON.parse(await titanOk(['convert', ckptDir, '--out', pkg16, '--dtype', 'fp16', '--json'])) as { dtype: string; weightsBytes: number };
        assert.equal(report.dtype, 'fp16');
        const fp32Bytes = fs.statSync(path.join(pkg, 'weights.bin')).size;
        assert.ok(report.weightsBytes < 0.6 * fp32Bytes, `fp16 weights ${report.weightsBytes} B vs fp32 ${fp32Bytes} B`);
        const half = await titanLogits(pkg16, ids, ids.map((_, i) => i));
        const halfRef = hfForward(await loadHfModel(ckptDir, { halfMatrices: true }), ids);
        const worst = assertRowsClose(half, halfRef, TOLERANCE, (i) => `fp16, position ${i}`);
        const drift = Math.max(...half.map((row, i) => maxAbsDiff(row, ours[i])));
        assert.ok(drift < FP16_DRIFT, `fp16 package drifts ${drift.toExponential(2)} from fp32`);
        t.diagnostic(`vs half-rounded reference ${worst.toExponential(2)}; drift from fp32 ${drift.toExponential(2)}`);
      });
    }
  });
}

describe('code-llama-19m as an fp16 package', () => {
  test(`titan convert --dtype fp16 stays within ${FP16_DRIFT} of the tptt 0.12.1 base logits with the same argmax`, async (t) => {
    const goldens = loadGoldens();
    const base = goldens.case('base');
    const pkg16 = path.join(tmp, 'code-llama-19m-fp16');
    await titanOk(['convert', DEMO_MODEL_DIR, '--out', pkg16, '--dtype', 'fp16', '--json']);
    const parts: string[] = [];
    for (const input of Object.keys(goldens.inputs)) {
      const positions = base.logits[input].positions;
      const ours16 = await titanLogits(pkg16, goldens.inputs[input], positions);
      const worst = assertRowsClose(ours16, goldens.rows(base, input), FP16_DRIFT, (i) => `${input} position ${positions[i]}`);
      positions.forEach((p, i) => assert.equal(argmaxOf(ours16[i]), base.logits[input].argmax[p], `${input} position ${p}: argmax`));
      parts.push(`${input} ${worst.toExponential(2)}`);
    }
    t.diagnostic(`max |logit diff| of the fp16 package vs fp32 goldens: ${parts.join(', ')}`);
  });
});
