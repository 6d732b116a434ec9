// LoRA adapters merged at conversion (engine/titanize/adapter.ts). For every key layout found in the wild
// the package's projections must equal W + s·B·A, recomputed here from the raw files (base checkpoint and
// adapter, read by this file's own parser) and read back from weights.bin through the manifest table;
// projections the adapter does not target must come through bit for bit. End to end, the built `titan`
// CLI merges an adapter whose logits match a checkpoint merged by hand and differ from the plain model,
// and every broken adapter is refused before any work with one line and a non-zero exit.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelError } from '../../engine/model/errors';
import { writeSafetensors, writeSafetensorsSync, type TensorSource } from '../../engine/model/safetensors-writer';
import { loadLoraAdapter } from '../../engine/titanize/adapter';
import type { PackageManifest } from '../../engine/titanize/package';
import type { TpttSettingsInput } from '../../engine/titanize/settings';
import { titanize } from '../../engine/titanize/titanize';
import { writeRandomCheckpoint, type GeneratedCheckpoint } from '../helpers/checkpoint';
import { ATTENTION_PROJECTIONS, KEY_STYLES, MLP_PROJECTIONS, writeRandomLoraAdapter, type AdapterKeyStyle, type GeneratedAdapter, type LoraAdapterOptions } from '../helpers/lora-adapter';

const ROOT = path.resolve(__dirname, '../..');
const TITAN = path.join(ROOT, 'bin', 'titan.js');
const TOLERANCE = 1e-6;
const TIMEOUT = { timeout: 60_000 };

let tmp: string;
let llama: GeneratedCheckpoint; // float32, C 64, 2 layers, GQA 4/2 heads
let qwen: GeneratedCheckpoint; // bfloat16, q/k/v biases
let caseNo = 0;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-adapter-'));
  llama = await writeRandomCheckpoint(path.join(tmp, 'llama'), { arch: 'llama' });
  qwen = await writeRandomCheckpoint(path.join(tmp, 'qwen2'), { arch: 'qwen2', dtype: 'bfloat16', seed: 3 });
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const fresh = (what: string): string => path.join(tmp, `${what}-${++caseNo}`);

// --- reading back, independently of the engine --------------------------------------------------

/** A safetensors file's float tensors (F32 or BF16), parsed here rather than by the engine's reader. */
function readRawSafetensors(file: string): Map<string, { shape: number[]; values: Float32Array }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + n)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const start = 8 + n + e.data_offsets[0];
    const count = e.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(count);
    const scratch = Buffer.alloc(4);
    for (let i = 0; i < count; i++) {
      if (e.dtype === 'F32') values[i] = buf.readFloatLE(start + 4 * i);
      else if (e.dtype === 'BF16') {
        scratch.writeUInt32LE(buf.readUInt16LE(start + 2 * i) << 16 >>> 0);
        values[i] = scratch.readFloatLE(0);
      } else throw new Error(`test reader: dtype ${e.dtype} not handled`);
    }
    out.set(name, { shape: e.shape, values });
  }
  return out;
}

/** One float32 tensor of a package, located through titan-package.json's weight table. */
function packageTensor(pkgDir: string, name: string): { dims: number[]; values: Float32Array } {
  const manifest = JSON.parse(fs.readFileSync(path.join(pkgDir, 'titan-package.json'), 'utf8')) as PackageManifest;
  const t = manifest.weights.tensors[name];
  assert.ok(t, `package has no tensor ${name}`);
  assert.equal(t.dtype, 'float32');
  const fd = fs.openSync(path.join(pkgDir, manifest.weights.file), 'r');
  try {
    const buf = Buffer.alloc(t.length);
    fs.readSync(fd, buf, 0, t.length, t.offset);
    const values = new Float32Array(t.length / 4);
    for (let i = 0; i < values.length; i++) values[i] = buf.readFloatLE(4 * i);
    return { dims: t.dims, values };
  } finally {
    fs.closeSync(fd);
  }
}

/** W + s·(B·A), straight from the definition: out[o][i] = W[o][i] + s·Σ_k B[o][k]·A[k][i], in float64. */
function mergedReference(w: Float32Array, a: Float32Array, b: Float32Array, rows: number, cols: number, r: number, s: number): { merged: Float64Array; maxDelta: number } {
  const merged = new Float64Array(rows * cols);
  let maxDelta = 0;
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      let dot = 0;
      for (let k = 0; k < r; k++) dot += b[o * r + k] * a[k * cols + i];
      merged[o * cols + i] = w[o * cols + i] + s * dot;
      maxDelta = Math.max(maxDelta, Math.abs(s * dot));
    }
  }
  return { merged, maxDelta };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** How the package stacks source tensors along rows (engine/titanize/package.ts). */
const PACKAGE_ROWS: [string, string[]][] = [
  ['qkv', ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj']],
  ['o', ['self_attn.o_proj']],
  ['gate_up', ['mlp.gate_proj', 'mlp.up_proj']],
  ['down', ['mlp.down_proj']],
];

/**
 * Every projection of every layer in the package against the raw files: targeted ones within TOLERANCE of
 * W + s·B·A (and visibly moved), the others identical to W. With `biases`, qkv_bias likewise (moved by
 * s·lora_B.bias where the adapter has one, identical otherwise). Returns the
 * number of merged matrices checked.
 */
function checkPackage(pkgDir: string, ckpt: GeneratedCheckpoint, adapter: GeneratedAdapter, opts: { biases?: boolean } = {}): number {
  const base = readRawSafetensors(path.join(ckpt.dir, 'model.safetensors'));
  const raw = readRawSafetensors(path.join(adapter.dir, 'adapter_model.safetensors'));
  const L = ckpt.config.num_hidden_layers as number;
  let merged = 0;
  for (let layer = 0; layer < L; layer++) {
    for (const [entry, parts] of PACKAGE_ROWS) {
      const pkg = packageTensor(pkgDir, `layers.${layer}.${entry}`);
      let row = 0;
      for (const part of parts) {
        const name = `model.layers.${layer}.${part}.weight`;
        const w = base.get(name)!;
        const [rows, cols] = w.shape;
        assert.equal(pkg.dims[1], cols);
        const got = pkg.values.subarray(row * cols, (row + rows) * cols);
        row += rows;
        const module = `model.layers.${layer}.${part}`;
        if (!adapter.modules.includes(module)) {
          assert.deepEqual(got, w.values, `${module} is not targeted and must come through unchanged`);
          continue;
        }
        const proj = part.split('.')[1];
        const a = raw.get(adapter.keyFor(layer, proj, 'lora_A'))!;
        const b = raw.get(adapter.keyFor(layer, proj, 'lora_B'))!;
        const r = adapter.rank(module);
        assert.deepEqual(a.shape, [r, cols]);
        assert.deepEqual(b.shape, [rows, r]);
        const ref = mergedReference(w.values, a.values, b.values, rows, cols, r, adapter.scaling(module));
        assert.ok(ref.maxDelta > 1e-3, `${module}: the adapter should move the weights (max |s·BA| ${ref.maxDelta})`);
        const err = maxAbsDiff(got, ref.merged);
        assert.ok(err <= TOLERANCE, `${module}: merged weights differ from W + s·B·A by ${err}`);
        merged++;
      }
      assert.equal(row, pkg.dims[0], `layers.${layer}.${entry} rows`);
    }
    if (opts.biases) {
      const pkg = packageTensor(pkgDir, `layers.${layer}.qkv_bias`);
      let at = 0;
      for (const proj of ['q_proj', 'k_proj', 'v_proj']) {
        const module = `model.layers.${layer}.self_attn.${proj}`;
        const bias = base.get(`${module}.bias`)!.values;
        const got = pkg.values.subarray(at, at + bias.length);
        at += bias.length;
        const loraBias = raw.get(adapter.keyFor(layer, proj, 'lora_B', 'bias'));
        if (!adapter.modules.includes(module) || !loraBias) {
          assert.deepEqual(got, bias, `${module}.bias has no LoRA bias and must come through unchanged`);
          continue;
        }
        const lb = loraBias.values;
        const want = Array.from(bias, (v, i) => v + adapter.scaling(module) * lb[i]);
        assert.ok(maxAbsDiff(got, want) <= TOLERANCE, `${module}.bias: merged bias off by ${maxAbsDiff(got, want)}`);
        assert.ok(maxAbsDiff(got, bias) > 1e-3, `${module}.bias should move`);
      }
    }
  }
  return merged;
}

/** What `titan titanize --adapter` does, in-process. */
function convertWithAdapter(ckpt: GeneratedCheckpoint, adapterDir: string, input: TpttSettingsInput = {}): { pkgDir: string; summary: Record<string, unknown>; manifest: PackageManifest } {
  const adapter = loadLoraAdapter(adapterDir, ckpt.dir);
  const out = fresh('pkg');
  const { pkg } = titanize(ckpt.dir, out, { ...input, lora_config: adapter.loraConfig }, { transformTensor: adapter.transformTensor });
  return { pkgDir: pkg.dir, summary: adapter.summary, manifest: pkg.manifest };
}

// --- merging ------------------------------------------------------------------------------------

describe('merging: every key layout gives W + s·B·A', () => {
  const cases: [AdapterKeyStyle, number, number][] = [
    ['peft', 4, 8],
    ['bare', 2, 16],
    ['base-attn', 8, 8],
    ['default', 3, 5],
    ['tptt', 4, 16],
  ];
  assert.deepEqual(cases.map((c) => c[0]).sort(), Object.keys(KEY_STYLES).sort());
  for (const [style, r, alpha] of cases) {
    const example = writeExampleKey(style);
    it(`${style} (${example}), r ${r}, alpha ${alpha}`, TIMEOUT, () => {
      const adapter = writeRandomLoraAdapter(fresh(`adapter-${style}`), llama, { style, r, alpha, seed: r * 100 + alpha });
      assert.ok(adapter.shapes.has(adapter.keyFor(0, 'q_proj', 'lora_A')));
      const { pkgDir, summary, manifest } = convertWithAdapter(llama, adapter.dir);
      assert.equal(checkPackage(pkgDir, llama, adapter), 8);
      assert.equal(summary.r, r);
      assert.equal(summary.lora_alpha, alpha);
      assert.equal(summary.scaling, alpha / r);
      assert.equal(summary.mergedMatrices, 8);
      assert.equal(summary.configFile, style === 'tptt' ? 'config.json lora_config' : 'adapter_config.json');
      if (style === 'tptt') assert.deepEqual(summary.trainedWith, { base_model_name: llama.dir, operator_mode: 'delta_rule', mag_weight: 0.5, max_chunk_size: 64 });
      else assert.equal(summary.trainedWith, undefined);
      assert.deepEqual((manifest.tptt as { lora_config: unknown }).lora_config, { r, lora_alpha: alpha, lora_dropout: 0.05, target_modules: ATTENTION_PROJECTIONS });
    });
  }

  it('MLP projections too, rsLoRA scaling alpha/√r, bf16 factors on a bf16 qwen2 checkpoint', TIMEOUT, () => {
    const targets = ['q_proj', 'v_proj', ...MLP_PROJECTIONS];
    const adapter = writeRandomLoraAdapter(fresh('adapter-mlp'), qwen, { targetModules: targets, useRslora: true, r: 4, alpha: 8, dtype: 'BF16' });
    assert.equal(adapter.scaling('model.layers.0.mlp.up_proj'), 4);
    const { pkgDir, summary } = convertWithAdapter(qwen, adapter.dir);
    assert.equal(checkPackage(pkgDir, qwen, adapter, { biases: true }), 10);
    assert.equal(summary.scaling, 4);
    assert.deepEqual(summary.perModule, { down_proj: 2, gate_proj: 2, q_proj: 2, up_proj: 2, v_proj: 2 });
  });

  it('rank_pattern and alpha_pattern give single modules their own rank and alpha', TIMEOUT, () => {
    const ranks = { 'model.layers.1.self_attn.q_proj': 2 };
    const alphas = { 'model.layers.0.self_attn.v_proj': 3 };
    const adapter = writeRandomLoraAdapter(fresh('adapter-patterns'), llama, { style: 'tptt', r: 4, alpha: 8, ranks, alphas });
    assert.equal(adapter.scaling('model.layers.1.self_attn.q_proj'), 4);
    assert.equal(adapter.scaling('model.layers.0.self_attn.v_proj'), 0.75);
    const { pkgDir, summary } = convertWithAdapter(llama, adapter.dir);
    assert.equal(checkPackage(pkgDir, llama, adapter), 8);
    assert.deepEqual(summary.scaling, [2, 0.75, 4]);
    assert.deepEqual(summary.ranks, [4, 2]);
  });

  it('layers_to_transform: an adapter for layer 1 only leaves layer 0 untouched', TIMEOUT, () => {
    const adapter = writeRandomLoraAdapter(fresh('adapter-layers'), llama, { layers: [1], configExtra: { layers_to_transform: [1] } });
    const { pkgDir, summary } = convertWithAdapter(llama, adapter.dir);
    assert.equal(checkPackage(pkgDir, llama, adapter), 4);
    assert.equal(summary.mergedMatrices, 4);
  });

  it('LoRA biases (lora_bias) add s·b to the base biases of qwen2', TIMEOUT, () => {
    const adapter = writeRandomLoraAdapter(fresh('adapter-bias'), qwen, { targetModules: ['q_proj', 'k_proj', 'v_proj'], loraBias: true, r: 2, alpha: 4 });
    const { pkgDir, summary } = convertWithAdapter(qwen, adapter.dir);
    assert.equal(checkPackage(pkgDir, qwen, adapter, { biases: true }), 6);
    assert.equal(summary.mergedBiases, 6);
  });
});

/** The q_proj lora_A key of layer 0 in a style, for test names. */
function writeExampleKey(style: AdapterKeyStyle): string {
  const s = KEY_STYLES[style];
  return `${s.prefix}model.layers.0.self_attn.${s.baseAttn ? 'base_attn.' : ''}q_proj.lora_A${s.adapterName ? `.${s.adapterName}` : ''}.weight`;
}

// --- broken adapters, in-process ----------------------------------------------------------------

/** `fn` throws a ModelError with a one-line message containing every fragment. */
function expectModelError(fn: () => unknown, ...fragments: string[]): string {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, 'expected a ModelError, nothing was thrown');
  assert.ok(error instanceof ModelError, `expected a ModelError, got ${(error as Error)?.name}: ${(error as Error)?.message}`);
  assert.ok(!error.message.includes('\n'), `message is not one line: ${JSON.stringify(error.message)}`);
  for (const f of fragments) assert.ok(error.message.includes(f), `message ${JSON.stringify(error.message)} lacks ${JSON.stringify(f)}`);
  return error.message;
}

/** Rewrites an adapter's safetensors file with edited tensors (values from the generator). */
function rewriteTensors(adapter: GeneratedAdapter, edit: (tensors: TensorSource[]) => TensorSource[]): void {
  const tensors: TensorSource[] = [...adapter.shapes].map(([name, shape]) => ({ name, shape, dtype: 'F32', data: adapter.values(name) }));
  writeSafetensorsSync(path.join(adapter.dir, 'adapter_model.safetensors'), edit(tensors));
}

function editConfig(adapter: GeneratedAdapter, edit: (config: Record<string, unknown>) => void): void {
  const file = path.join(adapter.dir, 'adapter_config.json');
  const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(config);
  fs.writeFileSync(file, JSON.stringify(config));
}

function randomAdapter(options: LoraAdapterOptions = {}, ckpt: GeneratedCheckpoint = llama): GeneratedAdapter {
  return writeRandomLoraAdapter(fresh('bad'), ckpt, options);
}

describe('broken adapters are refused before any work', () => {
  it('a key for a tensor no projection has (lm_head)', () => {
    const adapter = randomAdapter();
    rewriteTensors(adapter, (t) => [...t, { name: 'base_model.model.lm_head.lora_A.weight', shape: [4, 64], dtype: 'F32', data: new Float32Array(256) }]);
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'base_model.model.lm_head.lora_A.weight', 'not a LoRA matrix');
  });

  it('a rank that disagrees with adapter_config.json', () => {
    const adapter = randomAdapter({ r: 4 });
    editConfig(adapter, (c) => (c.r = 8));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', 'shape [4,64]', 'needs lora_A [8,64]');
  });

  it('lora_B with the wrong number of rows', () => {
    const adapter = randomAdapter();
    const key = adapter.keyFor(1, 'v_proj', 'lora_B');
    rewriteTensors(adapter, (t) => t.map((x) => (x.name === key ? { ...x, shape: [64, 4], data: new Float32Array(256) } : x)));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), key, 'shape [64,4]', 'needs lora_B [32,4]');
  });

  it('lora_A without its lora_B', () => {
    const adapter = randomAdapter();
    const gone = adapter.keyFor(0, 'o_proj', 'lora_B');
    rewriteTensors(adapter, (t) => t.filter((x) => x.name !== gone));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), adapter.keyFor(0, 'o_proj', 'lora_A'), 'no matching lora_B');
  });

  it('a module outside target_modules', () => {
    const adapter = randomAdapter();
    editConfig(adapter, (c) => (c.target_modules = ['q_proj', 'v_proj']));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'k_proj', 'target_modules ["q_proj","v_proj"]');
  });

  it('the same matrix twice (with and without the adapter name)', () => {
    const adapter = randomAdapter();
    const key = adapter.keyFor(0, 'q_proj', 'lora_A');
    rewriteTensors(adapter, (t) => [...t, { name: key.replace('.weight', '.default.weight'), shape: [4, 64], dtype: 'F32', data: adapter.values(key) }]);
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), key, 'twice');
  });

  it('two adapter names in one file (keys without a name count as "default")', () => {
    const adapter = randomAdapter();
    const rename = (layer: number, name: string) => (x: TensorSource): TensorSource =>
      x.name.includes(`layers.${layer}.self_attn.q_proj.`) ? { ...x, name: x.name.replace(/\.weight$/, `.${name}.weight`) } : x;
    rewriteTensors(adapter, (t) => t.map(rename(0, 'default')));
    assert.equal(loadLoraAdapter(adapter.dir, llama.dir).summary.mergedMatrices, 8);
    rewriteTensors(adapter, (t) => t.map(rename(1, 'other')));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'several adapter names (default, other)');
  });

  it('DoRA, in the config or as magnitude vectors', () => {
    const a = randomAdapter();
    editConfig(a, (c) => (c.use_dora = true));
    expectModelError(() => loadLoraAdapter(a.dir, llama.dir), 'use_dora', 'DoRA');
    const b = randomAdapter();
    rewriteTensors(b, (t) => [...t, { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', shape: [64], dtype: 'F32', data: new Float32Array(64) }]);
    expectModelError(() => loadLoraAdapter(b.dir, llama.dir), 'lora_magnitude_vector', 'DoRA');
  });

  it('a non-finite value', () => {
    const adapter = randomAdapter();
    const key = adapter.keyFor(1, 'q_proj', 'lora_B');
    rewriteTensors(adapter, (t) => t.map((x) => (x.name === key ? { ...x, data: new Float32Array(64 * 4).fill(Number.NaN) } : x)));
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), key, 'non-finite');
  });

  it('a LoRA bias where the base projection has none', () => {
    const adapter = randomAdapter({ loraBias: true });
    expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'lora_B.bias', 'has no model.layers.0.self_attn.k_proj.bias');
  });

  it('another PEFT method, a bad rank or alpha', () => {
    for (const [field, value, fragment] of [['peft_type', 'IA3', 'not LORA'], ['r', 0, '"r" must be a positive integer'], ['lora_alpha', 'x', '"lora_alpha" must be a positive number'], ['target_modules', [], '"target_modules"']] as const) {
      const adapter = randomAdapter();
      editConfig(adapter, (c) => (c[field] = value));
      expectModelError(() => loadLoraAdapter(adapter.dir, llama.dir), 'adapter_config.json', fragment);
    }
  });

  it('a tptt config.json without lora_config; a key for a layer the model does not have', () => {
    const a = randomAdapter({ style: 'tptt' });
    const file = path.join(a.dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    delete config.lora_config;
    fs.writeFileSync(file, JSON.stringify(config));
    expectModelError(() => loadLoraAdapter(a.dir, llama.dir), 'no adapter_config.json', 'lora_config');
    const b = randomAdapter();
    rewriteTensors(b, (t) => [...t, { name: 'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight', shape: [4, 64], dtype: 'F32', data: new Float32Array(256) }]);
    expectModelError(() => loadLoraAdapter(b.dir, llama.dir), 'model.layers.2.self_attn.q_proj.weight', 'the model has 2 layers');
  });
});

// --- end to end through the built CLI -----------------------------------------------------------

function titan(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TITAN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function logits(pkgDir: string): number[][] {
  const r = titan(['logits', pkgDir, '--ids', '5,17,42,99,3,250,8,64,128,7,31,200', '--positions', '0,5,11', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { logits: number[][] };
  for (const row of out.logits) assert.ok(row.every(Number.isFinite));
  return out.logits;
}

const maxRowDiff = (a: number[][], b: number[][]): number => Math.max(...a.map((row, i) => maxAbsDiff(row, b[i])));

describe('titan titanize --adapter (built CLI)', () => {
  before(() => {
    execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'pipe' });
  });

  it('merges a tptt adapter: summary, weights, and logits equal to a checkpoint merged by hand', TIMEOUT, async () => {
    const adapter = writeRandomLoraAdapter(fresh('cli-adapter'), llama, { style: 'tptt', r: 4, alpha: 16, targetModules: [...ATTENTION_PROJECTIONS, ...MLP_PROJECTIONS] });
    const out = fresh('cli-pkg');
    const r = titan(['titanize', llama.dir, '--out', out, '--adapter', adapter.dir, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { package: string; adapter: Record<string, unknown>; tptt: { lora_config: unknown } };
    assert.equal(report.package, out);
    assert.equal(report.adapter.path, fs.realpathSync(adapter.dir));
    assert.equal(report.adapter.r, 4);
    assert.equal(report.adapter.lora_alpha, 16);
    assert.equal(report.adapter.scaling, 4);
    assert.equal(report.adapter.mergedMatrices, 14);
    assert.deepEqual(report.tptt.lora_config, { r: 4, lora_alpha: 16, lora_dropout: 0.05, target_modules: [...ATTENTION_PROJECTIONS, ...MLP_PROJECTIONS] });
    assert.equal(checkPackage(out, llama, adapter), 14);

    // The same model with the merge done here, written as an ordinary checkpoint.
    const byHand = fresh('merged-by-hand');
    fs.mkdirSync(byHand);
    for (const f of fs.readdirSync(llama.dir)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(llama.dir, f), path.join(byHand, f));
    const rawAdapter = readRawSafetensors(path.join(adapter.dir, 'adapter_model.safetensors'));
    const mergedValues = (name: string): Float32Array => {
      const module = name.replace(/\.weight$/, '');
      if (!adapter.modules.includes(module)) return llama.values(name);
      const [layer, proj] = [Number(module.split('.')[2]), module.split('.')[4]];
      const [rows, cols] = llama.shapes.get(name)!;
      const a = rawAdapter.get(adapter.keyFor(layer, proj, 'lora_A'))!.values;
      const b = rawAdapter.get(adapter.keyFor(layer, proj, 'lora_B'))!.values;
      return Float32Array.from(mergedReference(llama.values(name), a, b, rows, cols, 4, 4).merged);
    };
    await writeSafetensors(path.join(byHand, 'model.safetensors'), [...llama.shapes].map(([name, shape]) => ({ name, shape, dtype: 'F32' as const, data: () => mergedValues(name) })));
    const byHandPkg = fresh('merged-by-hand-pkg');
    // μ as the adapter's config.json records it (the adapter package takes it from there).
    assert.equal(titan(['titanize', byHand, '--out', byHandPkg, '--mag-weight', '0.5']).status, 0);
    const plainPkg = fresh('plain-pkg');
    assert.equal(titan(['titanize', llama.dir, '--out', plainPkg, '--mag-weight', '0.5']).status, 0);

    const adapted = logits(out);
    const handMerged = logits(byHandPkg);
    const plain = logits(plainPkg);
    const sameAsHand = maxRowDiff(adapted, handMerged);
    const fromPlain = maxRowDiff(adapted, plain);
    assert.ok(sameAsHand <= 1e-5, `adapter package vs hand-merged checkpoint: logits differ by ${sameAsHand}`);
    assert.ok(fromPlain > 1e-2, `the adapter should change the logits (max difference ${fromPlain})`);
  });

  /** The CLI refuses `adapterDir`: exit 1, one line on stderr naming the problem, no package written. */
  function expectCliError(adapterDir: string, ...fragments: string[]): void {
    const out = fresh('cli-bad-pkg');
    const r = titan(['titanize', llama.dir, '--out', out, '--adapter', adapterDir]);
    assert.equal(r.status, 1, `exit status (stderr: ${r.stderr})`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `stderr is not one line: ${JSON.stringify(r.stderr)}`);
    assert.ok(lines[0].startsWith('titan titanize: '), lines[0]);
    assert.ok(!lines[0].includes('internal error'), lines[0]);
    for (const f of fragments) assert.ok(lines[0].includes(f), `${JSON.stringify(lines[0])} lacks ${JSON.stringify(f)}`);
    assert.ok(!fs.existsSync(out), 'nothing may be written for a refused adapter');
  }

  it('refuses a shape mismatch', TIMEOUT, () => {
    const adapter = randomAdapter();
    const key = adapter.keyFor(1, 'q_proj', 'lora_A');
    rewriteTensors(adapter, (t) => t.map((x) => (x.name === key ? { ...x, shape: [4, 32], data: new Float32Array(128) } : x)));
    expectCliError(adapter.dir, key, '[4,32]', 'needs lora_A [4,64]');
  });

  it('refuses a key for a layer the model does not have', TIMEOUT, () => {
    const adapter = randomAdapter({ style: 'tptt' });
    const extra = (f: 'lora_A' | 'lora_B', shape: number[]): TensorSource => ({ name: adapter.keyFor(5, 'v_proj', f), shape, dtype: 'F32', data: new Float32Array(shape[0] * shape[1]).fill(0.01) });
    rewriteTensors(adapter, (t) => [...t, extra('lora_A', [4, 64]), extra('lora_B', [32, 4])]);
    expectCliError(adapter.dir, 'model.layers.5.self_attn.v_proj.weight', 'the model has 2 layers');
  });

  it('refuses adapter_model.safetensors as a symbolic link out of the folder', TIMEOUT, () => {
    const elsewhere = randomAdapter();
    const adapter = randomAdapter();
    fs.rmSync(path.join(adapter.dir, 'adapter_model.safetensors'));
    fs.symlinkSync(path.join(elsewhere.dir, 'adapter_model.safetensors'), path.join(adapter.dir, 'adapter_model.safetensors'));
    expectCliError(adapter.dir, 'adapter_model.safetensors is a symbolic link', 'outside the adapter folder');
  });

  it('refuses an index pointing at ../', TIMEOUT, () => {
    const elsewhere = randomAdapter();
    const adapter = randomAdapter();
    fs.rmSync(path.join(adapter.dir, 'adapter_model.safetensors'));
    const rel = path.join('..', path.basename(elsewhere.dir), 'adapter_model.safetensors');
    const weightMap = Object.fromEntries([...elsewhere.shapes.keys()].map((k) => [k, rel]));
    fs.writeFileSync(path.join(adapter.dir, 'adapter_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    expectCliError(adapter.dir, `points at ${rel}`, 'outside the adapter folder');
  });

  it('refuses a folder without adapter_config.json', TIMEOUT, () => {
    const adapter = randomAdapter();
    fs.rmSync(path.join(adapter.dir, 'adapter_config.json'));
    expectCliError(adapter.dir, 'no adapter_config.json');
  });

  it('refuses a folder with only adapter_model.bin, without reading it', TIMEOUT, () => {
    const adapter = randomAdapter();
    fs.rmSync(path.join(adapter.dir, 'adapter_model.safetensors'));
    fs.writeFileSync(path.join(adapter.dir, 'adapter_model.bin'), Buffer.from('\x80\x02}q\x00.', 'latin1'));
    expectCliError(adapter.dir, 'only adapter_model.bin', 'pickle files are never loaded');
  });
});
