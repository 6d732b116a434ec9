// Alignment through the engine server (dist/engine/server.js) over JSON-RPC, as the extension drives
// it: settings validated field by field, a run on a workspace with one progress report per step, the
// merged package registered among the models and opened by configure; a run cancelled through its
// cancellation token (and one through titan/stop) keeps its checkpoint, and `resume` finishes it.
// The model is a tiny random Titan package and the runs are a few steps of 64-token sequences.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CancellationTokenSource, createMessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import * as P from '../../protocol/engine';
import { tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';

const REPO = path.resolve(__dirname, '../..');
const SERVER = path.join(REPO, 'dist/engine/server.js');

let tmp: string;
let pkg: string;
let ws: string;
let child: ChildProcess;
let rpc: MessageConnection;
let stderr = '';

/** Settings for a run that finishes in seconds on a tiny model. */
const QUICK = { budget: 'steps', steps: 3, lr: 3e-3, magSchedule: 'constant', batch: 2, sequence: 64 };

async function rejection(p: Promise<unknown>): Promise<ResponseError<unknown>> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ResponseError, `expected a ResponseError, got ${String(e)}`);
    return e;
  }
  assert.fail('the request succeeded');
}

/** Starts titan/align, collecting its progress; `onProgress` may cancel. */
function align(params: Partial<P.AlignParams>, onProgress?: (v: P.AlignProgressValue) => void, cts?: CancellationTokenSource) {
  const progressToken = `align-${Math.random().toString(36).slice(2)}`;
  const progress: P.AlignProgressValue[] = [];
  const sub = rpc.onProgress(P.AlignProgress, progressToken, (v) => {
    progress.push(v);
    onProgress?.(v);
  });
  const request = rpc.sendRequest(P.AlignRequest, { packageDir: pkg, workspaces: [{ path: ws, name: 'ws' }], settings: QUICK, provider: 'cpu', threads: 1, ...params, progressToken }, cts?.token);
  return { request: request.finally(() => sub.dispose()), progress };
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-server-align-'));
  pkg = await tinyTitanPackage(path.join(tmp, 'tiny'), { operator_mode: 'delta_rule' });
  ws = path.join(tmp, 'ws');
  writeSyntheticWorkspace(ws, { count: 12, lines: 40 });
  assert.ok(fs.existsSync(SERVER), `${SERVER} is missing: run npm run build`);
  child = spawn(process.execPath, [SERVER], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (stderr += d));
  child.stdin!.on('error', () => undefined);
  rpc = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
  rpc.listen();
  await rpc.sendRequest(P.InitializeRequest, { clientName: 'server-align.test', globalStorageDir: path.join(tmp, 'global'), demoModelDir: path.join(REPO, 'media/models/code-llama-19m') });
});

after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    await rpc.sendRequest(P.ShutdownRequest).catch(() => undefined);
    await rpc.sendNotification(P.ExitNotification, null).catch(() => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await new Promise((r) => child.once('exit', r));
    clearTimeout(timer);
  }
  rpc?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('alignment through the engine server', () => {
  it('validates the settings field by field', async () => {
    const bad = await rpc.sendRequest(P.ValidateAlignSettingsRequest, { packageDir: pkg, settings: { budget: 'steps', steps: '2.5', lr: 'fast', magSchedule: 'wavy', batch: 0, sequence: 8 } });
    const byField = new Map(bad.errors.map((e) => [e.field, e.message]));
    assert.match(byField.get('steps') ?? '', /steps must be a whole number from 1 to 100000, got "2.5"/);
    assert.match(byField.get('lr') ?? '', /learning rate must be a number above 0/);
    assert.match(byField.get('magSchedule') ?? '', /μ schedule must be one of constant, gradual, cyclic/);
    assert.match(byField.get('batch') ?? '', /sequences per step must be a whole number from 1/);
    assert.match(byField.get('sequence') ?? '', /tokens per sequence must be a whole number from 16/);
    const minutes = await rpc.sendRequest(P.ValidateAlignSettingsRequest, { packageDir: pkg, settings: { budget: 'minutes', minutes: '-1' } });
    assert.deepEqual(minutes.errors.map((e) => e.field), ['minutes']);
    const good = await rpc.sendRequest(P.ValidateAlignSettingsRequest, { packageDir: pkg, settings: { budget: 'minutes', minutes: '0.5', lr: '1e-3', magSchedule: 'gradual', batch: '2', sequence: '64' } });
    assert.deepEqual(good.errors, []);
    const noPackage = await rpc.sendRequest(P.ValidateAlignSettingsRequest, { packageDir: path.join(tmp, 'nowhere'), settings: {} });
    assert.equal(noPackage.errors[0]?.field, null);
    assert.match(noPackage.errors[0]?.message ?? '', /is not a folder/);

    const refused = await rejection(rpc.sendRequest(P.AlignRequest, { packageDir: pkg, workspaces: [{ path: ws }], settings: { ...QUICK, lr: -1 } }));
    assert.equal(refused.code, P.EngineErrorCodes.ModelError);
    assert.match(refused.message, /learning rate/);
    const noFolder = await rejection(rpc.sendRequest(P.AlignRequest, { packageDir: pkg, workspaces: [], settings: QUICK }));
    assert.equal(noFolder.code, P.EngineErrorCodes.InvalidParams);
    assert.match(noFolder.message, /at least one workspace folder/);
  });

  it('aligns on the workspace with a progress report per step and registers the merged package as a model', async () => {
    const { request, progress } = align({});
    const result = await request;
    const kinds = new Set(progress.map((p) => p.kind));
    for (const k of ['stage', 'start', 'step', 'eval', 'checkpoint']) assert.ok(kinds.has(k as P.AlignProgressValue['kind']), `a ${k} report arrived`);
    const steps = progress.filter((p): p is Extract<P.AlignProgressValue, { kind: 'step' }> => p.kind === 'step');
    assert.deepEqual(steps.map((s) => s.step), [1, 2, 3]);
    for (const s of steps) {
      assert.equal(s.totalSteps, 3);
      assert.ok(s.loss !== null && s.loss > 0 && s.tokensPerSecond > 0 && s.mu === 0.5, JSON.stringify(s));
    }
    const start = progress.find((p) => p.kind === 'start') as Extract<P.AlignProgressValue, { kind: 'start' }>;
    assert.equal(start.provider, 'cpu');
    assert.ok(start.trainSequences > 0 && start.validationSequences > 0);

    assert.deepEqual(result.steps, { done: 3, total: 3, resumedFrom: null });
    assert.ok(result.validation.before !== null && result.validation.after !== null);
    assert.ok(result.model, 'the merged package is a model');
    assert.equal(result.model.kind, 'titan');
    assert.equal(result.model.name, 'pkg-aligned-ws');
    assert.match(result.model.summary, /· LoRA r8 merged$/);
    assert.equal(path.dirname(result.model.path), path.join(tmp, 'global', 'models'));
    assert.ok(fs.existsSync(path.join(result.adapter, 'adapter_model.safetensors')));
    assert.ok(fs.existsSync(path.join(result.out, 'report.json')));
    const manifest = JSON.parse(fs.readFileSync(path.join(result.model.path, 'titan-package.json'), 'utf8'));
    assert.match(manifest.adapter?.sha256 ?? '', /^[0-9a-f]{64}$/, 'the merged adapter is part of the package identity');

    const models = await rpc.sendRequest(P.ListModelsRequest, {});
    assert.ok(models.some((m) => m.path === result.model!.path), 'listed among the models');
    const status = await rpc.sendRequest(P.ConfigureRequest, { modelPath: result.model.path, provider: 'cpu', threads: 1, workspaces: [], exclude: [], memoryStorageDir: null, maxFileBytes: 1 << 20, storageCapBytes: 1 << 26 });
    assert.equal(status.model?.path, result.model.path, 'the aligned package opens as the model in use');
  });

  it('cancels a run through its token, keeps the checkpoint, and resumes it to the end', async () => {
    const cts = new CancellationTokenSource();
    const first = align({ settings: { ...QUICK, steps: 5 } }, (v) => v.kind === 'step' && cts.cancel(), cts);
    const cancelled = await rejection(first.request);
    assert.equal(cancelled.code, P.EngineErrorCodes.Cancelled);
    const stoppedAt = Math.max(...first.progress.filter((p) => p.kind === 'step').map((p) => (p as { step: number }).step));
    assert.ok(stoppedAt >= 1 && stoppedAt < 5, `stopped after step ${stoppedAt}`);
    const models = await rpc.sendRequest(P.ListModelsRequest, {});
    assert.ok(!models.some((m) => m.name === 'pkg-aligned-ws-2'), 'a cancelled run registers no model');
    const check = () => rpc.sendRequest(P.ValidateAlignSettingsRequest, { packageDir: pkg, workspaces: [ws], settings: {} });
    assert.equal((await check()).resumable, true, 'the cancelled run can be resumed');

    const resumed = align({ settings: { ...QUICK, steps: 5 }, resume: true });
    const result = await resumed.request;
    assert.equal(result.steps.done, 5);
    assert.ok(result.steps.resumedFrom !== null && result.steps.resumedFrom >= 1, JSON.stringify(result.steps));
    assert.equal(result.model?.name, 'pkg-aligned-ws-2', 'an earlier alignment keeps its name');
    assert.equal((await check()).resumable, false, 'a finished run leaves nothing to resume');
    const nothing = await rejection((align({ resume: true })).request);
    assert.match(nothing.message, /no cancelled alignment of pkg on ws to resume/);
  });

  it('stops a run on titan/stop', async () => {
    let stopped: Promise<{ stopped: number }> | null = null;
    const run = align({ settings: { ...QUICK, steps: 5 } }, (v) => {
      if (v.kind === 'step') stopped ??= rpc.sendRequest(P.StopRequest);
    });
    const e = await rejection(run.request);
    assert.equal(e.code, P.EngineErrorCodes.Cancelled);
    assert.ok((await stopped!)!.stopped >= 1);
    const status = await rpc.sendRequest(P.StatusRequest);
    assert.ok(!status.busy.includes('align'));
    assert.doesNotMatch(stderr, /internal error/);
  });
});
