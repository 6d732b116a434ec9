// The transformers.js export: `@huggingface/transformers` loads it offline with AutoModelForCausalLM,
// its logits equal the base package's (whole prompt and continued through its KV cache), and its
// greedy `generate` gives the same tokens as ours.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { exportTransformersJs } from '../../engine/export/transformers-js';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { generate } from '../../engine/runtime/generate';
import { ModelRunner } from '../../engine/runtime/session';
import { writePackage } from '../../engine/titanize/package';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { SHARED_MODEL_DIR } from '../helpers/paths';

const DEMO = SHARED_MODEL_DIR;
const TIMEOUT = { timeout: 120_000 };
const PROMPT = 'import * as fs from "node:fs";\n\nexport function readJson(file) {\n  const text = fs.readFileSync(file, "utf8");\n  return';

type TF = typeof import('@huggingface/transformers');
let tf: TF;
let tmp: string;
let exportDir: string;
let basePkg: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-export-tjs-'));
  exportDir = path.join(tmp, 'code-llama-19m-tjs');
  basePkg = path.join(tmp, 'base');
  exportTransformersJs(DEMO, exportDir);
  writePackage(DEMO, basePkg, { dtype: 'fp32', window: null, kind: 'base' });
  tf = await import('@huggingface/transformers');
  // Offline: only the local folder, never the Hub, no cache copies.
  tf.env.allowRemoteModels = false;
  tf.env.useFSCache = false;
  tf.env.localModelPath = tmp;
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const int64 = (values: readonly number[], dims: number[]) => new tf.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const ones = (n: number) => int64(new Array<number>(n).fill(1), [1, n]);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('transformers.js export of the demo model', () => {
  it('has the layout transformers.js expects', () => {
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx', 'onnx/model.onnx_data']) assert.ok(fs.existsSync(path.join(exportDir, f)), f);
    const config = JSON.parse(fs.readFileSync(path.join(exportDir, 'config.json'), 'utf8'));
    assert.equal(config.model_type, 'llama');
    assert.deepEqual(config['transformers.js_config'], { dtype: 'fp32', use_external_data_format: { 'model.onnx': 1 } });
  });

  it('loads offline; logits match the base package within 1e-3, whole and through its KV cache', TIMEOUT, async () => {
    const model = await tf.AutoModelForCausalLM.from_pretrained(path.basename(exportDir), { dtype: 'fp32', device: 'cpu' });
    const session = (model as unknown as { sessions: { model: { inputNames: string[]; outputNames: string[] } } }).sessions.model;
    assert.deepEqual(session.inputNames.slice(0, 4), ['input_ids', 'attention_mask', 'position_ids', 'num_logits_to_keep']);
    assert.ok(session.inputNames.includes('past_key_values.7.value') && session.outputNames.includes('present.7.key'));

    const ids = loadTokenizer(DEMO).encode(PROMPT);
    const runner = await ModelRunner.open(basePkg, { provider: 'cpu' });
    try {
      const ours = await runner.forward(ids, ids.map((_, i) => i));
      const V = ours[0].length;
      const whole = (await model({ input_ids: int64(ids, [1, ids.length]), attention_mask: ones(ids.length) })) as Record<string, InstanceType<typeof tf.Tensor>>;
      assert.deepEqual(whole.logits.dims, [1, ids.length, V]);
      const data = whole.logits.data as Float32Array;
      let worst = 0;
      ids.forEach((_, i) => (worst = Math.max(worst, maxAbsDiff(data.subarray(i * V, (i + 1) * V), ours[i]))));
      assert.ok(worst < 1e-3, `whole prompt: max |Δlogit| ${worst}`);

      // The same prompt in two calls, the second continuing from the first call's present.* cache.
      const cut = 11;
      const first = (await model({ input_ids: int64(ids.slice(0, cut), [1, cut]), attention_mask: ones(cut) })) as Record<string, InstanceType<typeof tf.Tensor>>;
      assert.deepEqual(first['present.0.key'].dims, [1, 2, cut, 64]);
      const cache: Record<string, InstanceType<typeof tf.Tensor>> = {};
      for (const [name, t] of Object.entries(first)) if (name.startsWith('present.')) cache[name.replace('present.', 'past_key_values.')] = t;
      const rest = ids.slice(cut);
      const second = (await model({
        input_ids: int64(rest, [1, rest.length]),
        attention_mask: ones(ids.length),
        past_key_values: new tf.DynamicCache(cache),
        num_logits_to_keep: new tf.Tensor('int64', BigInt64Array.from([2n]), []),
      })) as Record<string, InstanceType<typeof tf.Tensor>>;
      assert.deepEqual(second.logits.dims, [1, 2, V], 'num_logits_to_keep = 2 keeps the last two rows');
      assert.deepEqual(second['present.3.value'].dims, [1, 2, ids.length, 64]);
      const tail = second.logits.data as Float32Array;
      for (let k = 0; k < 2; k++) {
        const d = maxAbsDiff(tail.subarray(k * V, (k + 1) * V), ours[ids.length - 2 + k]);
        assert.ok(d < 1e-3, `cached continuation row ${k}: max |Δlogit| ${d}`);
      }
    } finally {
      await runner.release();
      await model.dispose();
    }
  });

  it('greedy generate gives the same tokens as the base package', TIMEOUT, async () => {
    const tokenizer = loadTokenizer(DEMO);
    const ids = tokenizer.encode(PROMPT);
    const model = await tf.AutoModelForCausalLM.from_pretrained(path.basename(exportDir), { dtype: 'fp32', device: 'cpu' });
    const runner = await ModelRunner.open(basePkg, { provider: 'cpu' });
    try {
      const out = (await model.generate({ inputs: int64(ids, [1, ids.length]), attention_mask: ones(ids.length), max_new_tokens: 12, do_sample: false } as unknown as Parameters<typeof model.generate>[0])) as InstanceType<typeof tf.Tensor>;
      const theirs = (out.tolist() as bigint[][])[0].slice(ids.length).map(Number);
      const ours = await generate(runner, tokenizer, ids, { maxNewTokens: 12, temperature: 0, stopIds: [] });
      assert.equal(theirs.length, 12);
      assert.deepEqual(theirs, ours.tokens);
    } finally {
      await runner.release();
      await model.dispose();
    }
  });
});

describe('transformers.js export: other architectures and bad input', () => {
  it('a Qwen3 checkpoint (q/k norms, GQA) exports with logits equal to its base package', TIMEOUT, async () => {
    const ck = await writeRandomCheckpoint(path.join(tmp, 'qwen3-src'), { arch: 'qwen3', dtype: 'bfloat16' });
    const out = path.join(tmp, 'qwen3-tjs');
    exportTransformersJs(ck.dir, out);
    const pkg = path.join(tmp, 'qwen3-pkg');
    writePackage(ck.dir, pkg, { dtype: 'fp32', window: null, kind: 'base' });
    const model = await tf.AutoModelForCausalLM.from_pretrained(path.basename(out), { dtype: 'fp32', device: 'cpu' });
    const runner = await ModelRunner.open(pkg, { provider: 'cpu' });
    try {
      const ids = [5, 17, 42, 99, 3, 250, 8, 64, 128, 7];
      const ours = await runner.forward(ids, ids.map((_, i) => i));
      const theirs = (await model({ input_ids: int64(ids, [1, ids.length]), attention_mask: ones(ids.length) })) as Record<string, InstanceType<typeof tf.Tensor>>;
      const V = ours[0].length;
      const data = theirs.logits.data as Float32Array;
      ids.forEach((_, i) => assert.ok(maxAbsDiff(data.subarray(i * V, (i + 1) * V), ours[i]) < 1e-3, `row ${i}`));
    } finally {
      await runner.release();
      await model.dispose();
    }
  });

  it('fp16 weights go to onnx/model_fp16.onnx and stay close to fp32', TIMEOUT, async () => {
    const out = path.join(tmp, 'demo-fp16');
    const made = exportTransformersJs(DEMO, out, { dtype: 'fp16' });
    assert.equal(made.modelFile, 'onnx/model_fp16.onnx');
    assert.ok(fs.existsSync(path.join(out, 'onnx', 'model_fp16.onnx_data')));
    const model = await tf.AutoModelForCausalLM.from_pretrained(path.basename(out), { device: 'cpu' });
    try {
      const ids = loadTokenizer(DEMO).encode(PROMPT);
      const r = (await model({ input_ids: int64(ids, [1, ids.length]), attention_mask: ones(ids.length), num_logits_to_keep: new tf.Tensor('int64', BigInt64Array.from([1n]), []) })) as Record<string, InstanceType<typeof tf.Tensor>>;
      const logits = r.logits.data as Float32Array;
      assert.ok(logits.every(Number.isFinite));
      const runner = await ModelRunner.open(basePkg, { provider: 'cpu' });
      const [full] = await runner.forward(ids, [ids.length - 1]);
      await runner.release();
      const d = maxAbsDiff(logits, full);
      assert.ok(d > 0 && d < 0.25, `fp16 vs fp32 weights: max |Δlogit| ${d}`);
      assert.equal(logits.indexOf(Math.max(...logits)), full.indexOf(Math.max(...full)));
    } finally {
      await model.dispose();
    }
  });

  it('refuses a missing source and a non-export output folder with one-line errors', () => {
    assert.throws(() => exportTransformersJs(path.join(tmp, 'nope'), path.join(tmp, 'x')), (e: Error) => e instanceof ModelError && /is not a folder/.test(e.message));
    const occupied = path.join(tmp, 'occupied');
    fs.mkdirSync(occupied);
    fs.writeFileSync(path.join(occupied, 'notes.txt'), 'mine');
    assert.throws(() => exportTransformersJs(DEMO, occupied), (e: Error) => e instanceof ModelError && /is not a transformers.js export/.test(e.message));
    assert.equal(fs.readFileSync(path.join(occupied, 'notes.txt'), 'utf8'), 'mine');
  });
});
