// The training graphs compute what inference computes: the evaluation graph's per-token NLL equals
// the NLL of the package's own decoder run through the runtime (ModelRunner, the path generation and
// perplexity use) — for a one-run delta rule, a gated delta product cut into chained runs, and the
// tptt-0.12 semantics — and with trained LoRA matrices it equals the package merged from the written
// adapter. μ as a graph input reproduces a package converted with that μ.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { tokenNll } from '../../engine/bench/perplexity';
import { ModelRunner } from '../../engine/runtime/session';
import { readPackage, type LoadedPackage } from '../../engine/titanize/package';
import type { TpttSettingsInput } from '../../engine/titanize/settings';
import { titanize } from '../../engine/titanize/titanize';
import { buildTrainingGraph, planRuns } from '../../engine/train/graph';
import { loraSlots, shapeA, shapeB, type LoraSpec } from '../../engine/train/lora';
import { writeAdapter, writeMergedPackage } from '../../engine/train/output';
import { TrainingSessions } from '../../engine/train/sessions';
import { rng, tinyTitanPackage } from '../helpers/workspace';

const SPEC: LoraSpec = { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], rslora: false };

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-train-graph-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** NLL of every next token of `ids` under the package, through the runtime. */
async function runtimeNll(dir: string, ids: number[]): Promise<number[]> {
  const runner = await ModelRunner.open(dir, { provider: 'cpu', threads: 1 });
  try {
    const rows = ids.slice(0, -1).map((_, i) => i);
    const logits = await runner.forward(ids.slice(0, -1), rows);
    return rows.map((r) => tokenNll(logits[r], ids[r + 1]));
  } finally {
    await runner.release();
  }
}

/** NLL of the same tokens through the evaluation graph with the given LoRA values and μ. */
async function graphNll(pkg: LoadedPackage, ids: number[], values: Map<string, Float32Array>, mu: number, workDir: string): Promise<number[]> {
  const sessions = new TrainingSessions(pkg, SPEC, { provider: 'cpu', threads: 1, workDir });
  try {
    const T = ids.length - 1;
    const seq = { tokens: Int32Array.from(ids), scored: new Uint8Array(T).fill(1), source: 'test' };
    const { nll } = await sessions.run('eval', T, seq, values, mu, 1, null);
    return Array.from(nll);
  } finally {
    await sessions.release();
  }
}

function loraValues(pkg: LoadedPackage, zeroB: boolean, seed: number): Map<string, Float32Array> {
  const random = rng(seed);
  const values = new Map<string, Float32Array>();
  for (const s of loraSlots(pkg.config, SPEC)) {
    values.set(s.a, Float32Array.from({ length: shapeA(s, SPEC.r).reduce((a, b) => a * b, 1) }, () => (random() * 2 - 1) * 0.3));
    values.set(s.b, Float32Array.from({ length: shapeB(s, SPEC.r).reduce((a, b) => a * b, 1) }, () => (zeroB ? 0 : (random() * 2 - 1) * 0.2)));
  }
  return values;
}

const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('training graphs: runs are planned as the runtime plans them', () => {
  test('planRuns equals ModelRunner.runPlan for multi-chunk, single-chunk and tptt-0.12 packages', async () => {
    const cases: TpttSettingsInput[] = [
      { operator_mode: 'delta_rule', max_chunk_size: 16 },
      { operator_mode: 'gated_delta_rule', max_chunk_size: 16 },
      { operator_mode: 'delta_rule', max_chunk_size: 12, semantics: 'tptt-0.12' },
    ];
    for (const [k, settings] of cases.entries()) {
      const dir = await tinyTitanPackage(path.join(root, `plan${k}`), settings);
      const runner = await ModelRunner.open(dir, { provider: 'cpu', threads: 1 });
      try {
        for (const length of [1, 7, 16, 17, 40, 130, 600]) assert.deepEqual(planRuns(runner.pkg.manifest, 0, length), runner.runPlan(length), `${JSON.stringify(settings)} length ${length}`);
      } finally {
        await runner.release();
      }
    }
  });
});

describe('training graphs: the evaluation graph equals inference', () => {
  const ids = Array.from({ length: 41 }, (_, i) => (i * 97 + 13) % 250);
  const cases: { name: string; settings: TpttSettingsInput }[] = [
    { name: 'delta rule, one run of several chunks', settings: { operator_mode: 'delta_rule', max_chunk_size: 16, max_self_attn_length: 16 } },
    { name: 'gated delta product, three chained runs', settings: { operator_mode: 'gated_delta_product', max_chunk_size: 16, max_self_attn_length: 16 } },
    { name: 'tptt-0.12 semantics, delta rule with the GELU squash', settings: { operator_mode: 'delta_rule_gelu', max_chunk_size: 16, semantics: 'tptt-0.12' } },
  ];
  for (const c of cases) {
    test(`${c.name}: B = 0 gives the package's NLL`, async (t) => {
      const dir = await tinyTitanPackage(path.join(root, c.name.replace(/\W+/g, '-')), c.settings);
      const pkg = readPackage(dir);
      const fromGraph = await graphNll(pkg, ids, loraValues(pkg, true, 3), 0.5, path.join(root, `${path.basename(path.dirname(dir))}-work`));
      const fromRuntime = await runtimeNll(dir, ids);
      const diff = maxDiff(fromGraph, fromRuntime);
      t.diagnostic(`max |NLL difference| over ${ids.length - 1} tokens: ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-4, `max diff ${diff}`);
    });
  }

  test('trained LoRA matrices give the NLL of the package merged from the written adapter', async (t) => {
    const dir = await tinyTitanPackage(path.join(root, 'merge'), { operator_mode: 'delta_product', max_chunk_size: 16, max_self_attn_length: 16 });
    const pkg = readPackage(dir);
    const values = loraValues(pkg, false, 7);
    const out = path.join(root, 'merge-out');
    const adapter = writeAdapter(out, pkg, SPEC, loraSlots(pkg.config, SPEC), values);
    const merged = writeMergedPackage(out, pkg, adapter.dir);
    assert.equal(merged.sourceChanged, false);
    const fromGraph = await graphNll(pkg, ids, values, 0.5, path.join(root, 'merge-work'));
    const fromMerged = await runtimeNll(merged.dir, ids);
    const fromUnmerged = await runtimeNll(dir, ids);
    const diff = maxDiff(fromGraph, fromMerged);
    t.diagnostic(`max |NLL difference| graph+LoRA vs merged package: ${diff.toExponential(2)}; the LoRA moves the NLL by up to ${maxDiff(fromMerged, fromUnmerged).toExponential(2)}`);
    assert.ok(maxDiff(fromMerged, fromUnmerged) > 1e-2, 'the adapter must change the model visibly');
    assert.ok(diff < 2e-4, `max diff ${diff}`);
  });

  test('μ as a graph input: μ = 0.2 equals a package converted with mag_weight 0.2', async () => {
    const settings: TpttSettingsInput = { operator_mode: 'delta_rule', max_chunk_size: 16, max_self_attn_length: 16 };
    const dir = await tinyTitanPackage(path.join(root, 'mu'), settings);
    const pkg = readPackage(dir);
    const other = titanize(path.join(path.dirname(dir), 'hf'), path.join(root, 'mu-0.2'), { ...settings, mag_weight: 0.2 }).pkg.dir;
    const fromGraph = await graphNll(pkg, ids, loraValues(pkg, true, 1), 0.2, path.join(root, 'mu-work'));
    const fromRuntime = await runtimeNll(other, ids);
    assert.ok(maxDiff(fromGraph, fromRuntime) < 1e-4);
    const atHalf = await graphNll(pkg, ids, loraValues(pkg, true, 1), 0.5, path.join(root, 'mu-work'));
    assert.ok(maxDiff(fromGraph, atHalf) > 1e-3, 'μ must change the output');
  });
});

describe('training graphs with recomputation', () => {
  test('per-layer recomputation gives the same loss and gradients, bit for bit', async (t) => {
    const dir = await tinyTitanPackage(path.join(root, 'recompute'), { operator_mode: 'gated_delta_product', max_chunk_size: 16, max_self_attn_length: 16 });
    const pkg = readPackage(dir);
    const T = 40;
    const values = loraValues(pkg, false, 9);
    const run = async (recompute: boolean) => {
      const built = buildTrainingGraph(pkg, { sequence: T, kind: 'train', lora: SPEC, recompute });
      const file = path.join(dir, `train-${recompute}.onnx`);
      fs.writeFileSync(file, built.bytes);
      const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'], intraOpNumThreads: 1, logSeverityLevel: 3 });
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 11) % 250)), [T]),
        targets: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 13 + 1) % 250)), [T]),
        loss_weights: new ort.Tensor('float32', new Float32Array(T).fill(1 / T), [T]),
        mag_weight: new ort.Tensor('float32', Float32Array.from([0.5]), []),
      };
      for (const s of built.slots) {
        feeds[s.a] = new ort.Tensor('float32', values.get(s.a)!, shapeA(s, SPEC.r));
        feeds[s.b] = new ort.Tensor('float32', values.get(s.b)!, shapeB(s, SPEC.r));
      }
      const out = await session.run(feeds);
      await session.release();
      return { nodes: built.nodeCount, out };
    };
    const kept = await run(false);
    const again = await run(true);
    t.diagnostic(`nodes: ${kept.nodes} keeping activations, ${again.nodes} recomputing them`);
    assert.ok(again.nodes > kept.nodes, 'the recomputed graph must hold the copies');
    for (const name of Object.keys(kept.out)) assert.deepEqual(Array.from(again.out[name].data as Float32Array), Array.from(kept.out[name].data as Float32Array), name);
  });
});

describe('training graphs in half precision', () => {
  test('fp16 activations on WebGPU: the loss of the fp32 graph, and with loss scaling its gradients', async (t) => {
    const dir = await tinyTitanPackage(path.join(root, 'fp16'), { operator_mode: 'delta_rule', max_chunk_size: 16 });
    const pkg = readPackage(dir);
    const T = 40;
    const spec: LoraSpec = { ...SPEC, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj'] };
    const full = buildTrainingGraph(pkg, { sequence: T, kind: 'train', lora: spec });
    const half = buildTrainingGraph(pkg, { sequence: T, kind: 'train', lora: spec, compute: 'float16' });
    fs.writeFileSync(path.join(dir, 'train32.onnx'), full.bytes);
    fs.writeFileSync(path.join(dir, 'train16.onnx'), half.bytes);
    let gpu: ort.InferenceSession;
    try {
      gpu = await ort.InferenceSession.create(path.join(dir, 'train16.onnx'), { executionProviders: ['webgpu'], logSeverityLevel: 4 });
    } catch (e) {
      // CI machines have no Vulkan driver; the half-precision graph needs a GPU provider.
      t.skip(`no WebGPU adapter here (${String((e as Error).message).split('\n')[0]})`);
      return;
    }
    const cpu = await ort.InferenceSession.create(path.join(dir, 'train32.onnx'), { executionProviders: ['cpu'], logSeverityLevel: 3 });
    const values = loraValues(pkg, false, 5);
    const feeds = (scale: number): Record<string, ort.Tensor> => {
      const f: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 7) % 250)), [T]),
        targets: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 7 + 7) % 250)), [T]),
        loss_weights: new ort.Tensor('float32', new Float32Array(T).fill(scale / T), [T]),
        mag_weight: new ort.Tensor('float32', Float32Array.from([0.5]), []),
      };
      for (const s of full.slots) {
        f[s.a] = new ort.Tensor('float32', values.get(s.a)!, shapeA(s, spec.r));
        f[s.b] = new ort.Tensor('float32', values.get(s.b)!, shapeB(s, spec.r));
      }
      return f;
    };
    const ref = await cpu.run(feeds(1));
    const scale = 1024;
    const got = await gpu.run(feeds(scale));
    const lossRef = Number(ref.loss.data[0]);
    const loss = Number(got.loss.data[0]) / scale;
    let worst = 0;
    for (const s of full.slots) {
      for (const name of [`grad.${s.a}`, `grad.${s.b}`]) {
        const a = ref[name].data as Float32Array;
        const b = got[name].data as Float32Array;
        let d = 0;
        let n = 0;
        for (let i = 0; i < a.length; i++) {
          d += (a[i] - b[i] / scale) ** 2;
          n += a[i] ** 2;
        }
        worst = Math.max(worst, Math.sqrt(d / n));
      }
    }
    t.diagnostic(`loss ${lossRef.toFixed(6)} (fp32, CPU) vs ${loss.toFixed(6)} (fp16, WebGPU); worst relative gradient error ${worst.toExponential(2)}`);
    assert.ok(Math.abs(loss - lossRef) < 1e-3 * lossRef);
    assert.ok(worst < 0.05, `worst relative gradient error ${worst}`);
    await cpu.release();
    await gpu.release();
  });
});
