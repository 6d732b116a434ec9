// The GPU execution provider failing, in the real engine server with the WebGPU provider (Mesa's
// lavapipe on machines without a GPU, as on CI): a preload (gpu-fault.cjs) makes onnxruntime's
// WebGPU sessions fail at creation, or mid-run from a moment the test picks (mid-ingestion,
// mid-answer). The engine must go on on the CPU, report the fallback and its reason in its status
// and log, finish the update or answer it was in, and answer the next question.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { decodeState } from '../../engine/runtime/state-blob';
import { titanize } from '../../engine/titanize/titanize';
import * as P from '../../protocol/engine';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { memoryDirIn, TEST_MAG_WEIGHT } from '../helpers/workspace';
import { CLI_BUNDLE } from './engine-bundle';
import { configureEngine, startEngine } from './engine-process';
import { checkStorage, finalDifference, memoryReference, type MemoryReference } from './memory-reference';
import { tracked } from './record';
import { hasVulkan } from '../helpers/vulkan';

const FILE = 'faults-gpu';
const PRELOAD = path.join(__dirname, 'gpu-fault.cjs');
const skip = hasVulkan ? false : 'no Vulkan loader here (CI installs mesa-vulkan-drivers)';
let tmp = '';
let ref: MemoryReference;

before(async () => {
  if (skip) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-gpu-fault-'));
  ref = await memoryReference(tmp, { count: 6, lines: 40 });
});
after(() => tmp && fs.rmSync(tmp, { recursive: true, force: true }));

function injected(logFile: string, kind: 'create' | 'run'): number {
  if (!fs.existsSync(logFile)) return 0;
  return fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes(`"injected":"${kind}"`)).length;
}

it('a GPU provider that fails to start leaves the engine on the CPU, with the reason in its status', { skip, timeout: 180_000 }, async () => {
  await tracked(FILE, {
    section: 'fault',
    name: 'GPU provider fails at session creation',
    injected: 'engine server configured for WebGPU; every WebGPU session creation throws (onnxruntime-node InferenceSession.create wrapped by a preload, main and worker threads)',
    expected: 'the model opens on the CPU; status.provider names the fallback and its reason (the status bar shows "cpu (GPU failed)"); the memory builds and questions are answered; titan memory --provider webgpu succeeds on the CPU with a notice',
  }, async (figures) => {
    const logFile = path.join(tmp, 'create.jsonl');
    const engine = startEngine({ preload: [PRELOAD], env: { TITAN_FAULT_GPU: 'create', TITAN_FAULT_LOG: logFile } });
    try {
      const status = await configureEngine(engine, { globalStorageDir: path.join(tmp, 'global'), pkg: ref.pkg, ws: ref.ws, storage: path.join(tmp, 'create-storage'), provider: 'webgpu' });
      assert.equal(status.provider?.provider, 'cpu');
      assert.match(status.provider?.fallback ?? '', /webgpu failed to start: injected GPU fault/);
      assert.match(status.provider?.reason ?? '', /^cpu \(fallback: /);
      assert.ok(injected(logFile, 'create') >= 1, 'the fault was never injected');
      const stats = await engine.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(stats.tokensIngested, ref.total);
      const { result } = await engine.ask('where is retryDelay computed?');
      assert.ok(result.answer.length > 0);
    } finally {
      await engine.close();
    }
    // The command line says so too.
    const cli = spawnSync(process.execPath, ['--require', PRELOAD, CLI_BUNDLE, 'memory', ref.pkg, '--workspace', ref.ws, '--storage', path.join(tmp, 'create-cli-storage'), '--provider', 'webgpu', '--json'], { encoding: 'utf8', env: { ...process.env, TITAN_FAULT_GPU: 'create', TITAN_FAULT_LOG: logFile }, timeout: 120_000 });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal((JSON.parse(cli.stdout) as { provider: string }).provider, 'cpu');
    assert.match(cli.stderr, /notice: execution provider: webgpu failed to start: injected GPU fault.*the model ran on the CPU instead/);
    figures['creations refused'] = injected(logFile, 'create');
  });
});

it('a GPU provider that fails mid-ingestion and mid-answer: the work goes on on the CPU and the next question works', { skip, timeout: 300_000 }, async () => {
  await tracked(FILE, {
    section: 'fault',
    name: 'GPU provider fails mid-run',
    injected: 'engine server on WebGPU; from a moment the test picks, every WebGPU run throws (a lost device): once mid-ingestion (at the first progress report), once mid-answer (at the first streamed fragment, in a second engine)',
    expected: 'the update finishes on the CPU (the device-resident state is lost with the device: it resumes from the last checkpoint; host-resident state carries over) and its final checkpoint equals a clean CPU read within 1e-3; the answer in progress finishes unbroken (prompt and tokens so far replayed on the CPU; streamed text = answer); status and log report the fallback; the next question is answered on the CPU',
  }, async (figures) => {
    const storage = path.join(tmp, 'run-storage');
    const globalStorageDir = path.join(tmp, 'global');
    const logFile = path.join(tmp, 'run.jsonl');

    // Mid-ingestion.
    const triggerIngest = path.join(tmp, 'lose-device-ingest');
    const first = startEngine({ preload: [PRELOAD], env: { TITAN_FAULT_GPU: 'trigger', TITAN_FAULT_GPU_TRIGGER: triggerIngest, TITAN_FAULT_LOG: logFile } });
    try {
      const status = await configureEngine(first, { globalStorageDir, pkg: ref.pkg, ws: ref.ws, storage, provider: 'webgpu' });
      assert.equal(status.provider?.provider, 'webgpu', `WebGPU did not start here: ${status.provider?.reason}`);
      const progressToken = 'update';
      let tokensAtFault = -1;
      const sub = first.rpc.onProgress(P.MemoryProgressType, progressToken, (p) => {
        if (tokensAtFault < 0 && p.phase === 'read' && p.tokens > 0) {
          tokensAtFault = p.tokens;
          fs.writeFileSync(triggerIngest, '');
        }
      });
      const stats = await first.rpc.sendRequest(P.UpdateMemoryRequest, { progressToken });
      sub.dispose();
      assert.ok(tokensAtFault > 0 && tokensAtFault < ref.total, `the fault did not land mid-ingestion (at ${tokensAtFault} of ${ref.total})`);
      assert.ok(injected(logFile, 'run') >= 1, 'no run failed');
      assert.equal(stats.tokensIngested, ref.total);
      const after = await first.rpc.sendRequest(P.StatusRequest);
      assert.equal(after.provider?.provider, 'cpu');
      assert.match(after.provider?.fallback ?? '', /webgpu failed during a run: injected GPU fault/);
      const { result } = await first.ask('where is retryDelay computed?');
      assert.ok(result.answer.length > 0);
      figures['ingestion: GPU tokens before the fault'] = tokensAtFault;
      figures['ingestion: resumed from a checkpoint'] = stats.notices?.some((n) => /resumes on the CPU from the last checkpoint/.test(n)) ? 'yes' : 'no (state carried over)';
    } finally {
      await first.close();
    }
    assert.equal(checkStorage(memoryDirIn(storage), ref), ref.total);
    const diff = finalDifference(storage, ref);
    assert.ok(diff <= 1e-3, `the state after the fallback differs from a clean CPU read by ${diff}`);
    figures['ingestion: final state vs clean CPU read'] = diff.toExponential(1);

    // Mid-answer, in a fresh engine that is on the GPU again.
    const triggerAnswer = path.join(tmp, 'lose-device-answer');
    const second = startEngine({ preload: [PRELOAD], env: { TITAN_FAULT_GPU: 'trigger', TITAN_FAULT_GPU_TRIGGER: triggerAnswer, TITAN_FAULT_LOG: logFile } });
    try {
      const status = await configureEngine(second, { globalStorageDir, pkg: ref.pkg, ws: ref.ws, storage, provider: 'webgpu' });
      assert.equal(status.provider?.provider, 'webgpu');
      await second.rpc.sendRequest(P.UpdateMemoryRequest, {});
      const before = injected(logFile, 'run');
      const progressToken = 'answer';
      let fragments = 0;
      let streamed = '';
      const sub = second.rpc.onProgress(P.AskProgress, progressToken, ({ text }) => {
        streamed += text;
        if (fragments++ === 0) fs.writeFileSync(triggerAnswer, '');
      });
      const result = await second.rpc.sendRequest(P.AskRequest, { question: 'what does fetchWithRetry return?', maxNewTokens: 32, temperature: 0, progressToken });
      sub.dispose();
      assert.ok(injected(logFile, 'run') > before, 'no run failed during the answer');
      assert.ok(fragments >= 2, `the answer stopped after the fault (${fragments} fragment)`);
      assert.equal(result.answer, streamed);
      assert.notEqual(result.stopReason, 'cancelled');
      const status2 = await second.rpc.sendRequest(P.StatusRequest);
      assert.equal(status2.provider?.provider, 'cpu');
      assert.match(status2.provider?.fallback ?? '', /webgpu failed during a run/);
      assert.match(second.stderr(), /\[warn\] execution provider: webgpu failed during a run: injected GPU fault/);
      const next = await second.ask('where is retryDelay computed?');
      assert.ok(next.result.answer.length > 0);
      assert.equal(next.result.answer, next.streamed);
      Object.assign(figures, { 'answer: fragments streamed': fragments, 'answer tokens': result.stats.answerTokens, 'GPU runs refused': injected(logFile, 'run') });
    } finally {
      await second.close();
    }
  });
});

it('fp16 package: a GPU failure mid-answer widens the half-precision state for the CPU, and the next GPU session takes the CPU\'s float32 checkpoints', { skip, timeout: 300_000 }, async () => {
  await tracked(FILE, {
    section: 'fault',
    name: 'GPU provider fails mid-answer (fp16 package)',
    injected: 'engine server on WebGPU running a package\'s fp16 graphs; every WebGPU run throws from the first streamed fragment; then a file edit re-read on the CPU; then a fresh engine on WebGPU',
    expected: 'the answer finishes on the CPU from the half-precision state (widened to float32); the next question and the update run on the CPU (float32 checkpoints); a fresh WebGPU engine restores those checkpoints (narrowed to float16) without re-reading, and answers',
  }, async (figures) => {
    const hf = path.join(tmp, 'fp16-hf');
    await writeRandomCheckpoint(hf, { arch: 'llama', hiddenSize: 64, numLayers: 2, seed: 1, chatTemplate: 'inline', tokenizer: 'tiny' });
    const { pkg } = titanize(hf, path.join(tmp, 'fp16-pkg'), { mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 64, max_chunk_size: 16 }, { dtype: 'fp16' });
    const ws = path.join(tmp, 'fp16-ws');
    fs.cpSync(ref.ws, ws, { recursive: true, preserveTimestamps: true });
    const storage = path.join(tmp, 'fp16-storage');
    const globalStorageDir = path.join(tmp, 'global');
    const logFile = path.join(tmp, 'fp16.jsonl');
    const trigger = path.join(tmp, 'lose-device-fp16');
    const first = startEngine({ preload: [PRELOAD], env: { TITAN_FAULT_GPU: 'trigger', TITAN_FAULT_GPU_TRIGGER: trigger, TITAN_FAULT_LOG: logFile } });
    let total: number;
    try {
      const status = await configureEngine(first, { globalStorageDir, pkg: pkg.dir, ws, storage, provider: 'webgpu' });
      assert.equal(status.provider?.provider, 'webgpu');
      const built = await first.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.ok(built.tokensIngested > 0);
      const progressToken = 'answer';
      let fragments = 0;
      let streamed = '';
      const sub = first.rpc.onProgress(P.AskProgress, progressToken, ({ text }) => {
        streamed += text;
        if (fragments++ === 0) fs.writeFileSync(trigger, '');
      });
      const result = await first.rpc.sendRequest(P.AskRequest, { question: 'what does fetchWithRetry return?', maxNewTokens: 32, temperature: 0, progressToken });
      sub.dispose();
      assert.ok(injected(logFile, 'run') >= 1, 'no run failed during the answer');
      assert.ok(fragments >= 2, `the answer stopped after the fault (${fragments} fragment)`);
      assert.equal(result.answer, streamed);
      assert.equal((await first.rpc.sendRequest(P.StatusRequest)).provider?.provider, 'cpu');
      // The memory's fp16 checkpoint state, into the CPU's float32 graphs.
      const next = await first.ask('where is retryDelay computed?');
      assert.ok(next.result.answer.length > 0);
      // An edit: the tail is re-read on the CPU and checkpointed in float32.
      const edited = path.join(ws, 'src', 'net', 'file00003.ts');
      fs.appendFileSync(edited, 'export const edited = 1;\n');
      const update = await first.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(update.restoredFromCheckpoint, true);
      assert.ok(update.tokensReread > 0 && update.tokensReread < update.tokensIngested);
      total = update.tokensIngested;
      figures['answer fragments'] = fragments;
    } finally {
      await first.close();
    }
    const last = JSON.parse(fs.readFileSync(path.join(memoryDirIn(storage), 'manifest.json'), 'utf8')) as { checkpoints: { file: string }[] };
    const lastState = decodeState(fs.readFileSync(path.join(memoryDirIn(storage), last.checkpoints[last.checkpoints.length - 1].file)));
    assert.ok(lastState.tensors.every((t) => t.dtype === 'float32'), 'the CPU-written checkpoint is not float32');

    const second = startEngine();
    try {
      const status = await configureEngine(second, { globalStorageDir, pkg: pkg.dir, ws, storage, provider: 'webgpu' });
      assert.equal(status.provider?.provider, 'webgpu');
      assert.equal(status.provider?.fallback, undefined);
      const stats = await second.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(stats.restoredFromCheckpoint, true);
      assert.equal(stats.tokensReread, 0);
      assert.equal(stats.tokensIngested, total);
      const { result } = await second.ask('where is retryDelay computed?');
      assert.ok(result.answer.length > 0);
      figures['tokens in memory'] = total;
    } finally {
      await second.close();
    }
  });
});
