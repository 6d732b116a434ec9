// The engine server (dist/engine/server.js) driven over JSON-RPC on its stdio, as the extension
// drives it: the bundled demo model converted on first use, settings validation, a conversion
// cancelled half-way, the workspace memory built and updated incrementally, answers streamed with
// sources, cancellation and stop, bad messages, and a SIGKILL mid-answer followed by a fresh engine
// that restores the memory from its checkpoint.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CancellationTokenSource, createMessageConnection, ErrorCodes, ResponseError, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import * as P from '../../protocol/engine';

const REPO = path.resolve(__dirname, '../..');
const SERVER = path.join(REPO, 'dist/engine/server.js');
const DEMO = path.join(REPO, 'media/models/code-llama-19m');

interface Engine {
  child: ChildProcess;
  rpc: MessageConnection;
  stderr: () => string;
  statuses: P.EngineStatus[];
  rpcErrors: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  close(): Promise<void>;
}

let tmp: string;
let globalStorage: string;
let ws: string;
let memoryStorage: string;
const engines: Engine[] = [];

function startEngine(): Engine {
  assert.ok(fs.existsSync(SERVER), `${SERVER} is missing: run npm run build`);
  const child = spawn(process.execPath, [SERVER], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const rpc = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
  const statuses: P.EngineStatus[] = [];
  const rpcErrors: string[] = [];
  rpc.onNotification(P.StatusNotification, (s) => void statuses.push(s));
  rpc.onError(([e]) => rpcErrors.push(e.message));
  child.stdin!.on('error', () => undefined);
  rpc.listen();
  const engine: Engine = {
    child,
    rpc,
    stderr: () => err,
    statuses,
    rpcErrors,
    exited,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await rpc.sendRequest(P.ShutdownRequest).catch(() => undefined);
        await rpc.sendNotification(P.ExitNotification, null).catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rpc.dispose();
    },
  };
  engines.push(engine);
  return engine;
}

async function initialize(e: Engine): Promise<P.InitializeResult> {
  return e.rpc.sendRequest(P.InitializeRequest, { clientName: 'server.test', globalStorageDir: globalStorage, demoModelDir: DEMO });
}

function configureParams(extra: Partial<P.ConfigureParams> = {}): P.ConfigureParams {
  return {
    modelPath: null,
    provider: 'cpu',
    threads: 2,
    workspaces: [{ path: ws, name: 'ws', exclude: { '**/generated': true } }],
    exclude: [],
    memoryStorageDir: memoryStorage,
    maxFileBytes: 1024 * 1024,
    storageCapBytes: 256 * 1024 * 1024,
    ...extra,
  };
}

/** Rejection of a request as [code, message]. */
async function rejection(p: Promise<unknown>): Promise<[number, string]> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ResponseError, `expected a ResponseError, got ${String(e)}`);
    return [e.code, e.message];
  }
  assert.fail('the request succeeded');
}

async function until(what: string, test: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function ask(e: Engine, question: string, extra: Partial<P.AskParams> = {}, onFragment?: (text: string) => void, token?: CancellationTokenSource) {
  const progressToken = `ask-${Math.random().toString(36).slice(2)}`;
  const fragments: string[] = [];
  const sub = e.rpc.onProgress(P.AskProgress, progressToken, ({ text }) => {
    fragments.push(text);
    onFragment?.(text);
  });
  try {
    const result = await e.rpc.sendRequest(P.AskRequest, { question, maxNewTokens: 24, ...extra, progressToken }, token?.token);
    return { result, fragments };
  } finally {
    sub.dispose();
  }
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-server-'));
  globalStorage = path.join(tmp, 'global');
  memoryStorage = path.join(tmp, 'workspace-storage', 'memory');
  ws = path.join(tmp, 'ws');
  fs.mkdirSync(path.join(ws, 'src'), { recursive: true });
  fs.mkdirSync(path.join(ws, 'generated'), { recursive: true });
  fs.writeFileSync(path.join(ws, 'src', 'retry.ts'), '// Retry policy of the HTTP client.\nexport const MAX_RETRIES = 5;\nexport function retryDelay(attempt: number): number {\n  return Math.min(30000, 250 * 2 ** attempt);\n}\n');
  fs.writeFileSync(path.join(ws, 'src', 'client.ts'), "import { retryDelay, MAX_RETRIES } from './retry';\nexport async function fetchWithRetry(url: string) {\n  for (let i = 0; i < MAX_RETRIES; i++) await new Promise((r) => setTimeout(r, retryDelay(i)));\n  return url;\n}\n");
  fs.writeFileSync(path.join(ws, 'README.md'), '# Demo\nRequests are retried by `fetchWithRetry`.\n<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))\n');
  fs.writeFileSync(path.join(ws, 'generated', 'big.ts'), 'export const excluded = true;\n');
});

after(async () => {
  for (const e of engines) {
    if (e.child.exitCode === null && e.child.signalCode === null) e.child.kill('SIGKILL');
    e.rpc.dispose();
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('engine server over JSON-RPC', () => {
  let engine: Engine;

  it('initializes, and refuses bad messages with one-line errors', async () => {
    engine = startEngine();
    const init = await initialize(engine);
    assert.equal(init.pid, engine.child.pid);
    assert.match(init.engineVersion, /^\d+\.\d+\.\d+/);

    const [code, message] = await rejection(engine.rpc.sendRequest(P.AskRequest, { question: '   ' }));
    assert.equal(code, P.EngineErrorCodes.InvalidParams);
    assert.match(message, /^titan\/ask: question: the question is empty$/);

    const [code2, message2] = await rejection(engine.rpc.sendRequest(P.ConfigureRequest, { ...configureParams(), provider: 'tpu' as never }));
    assert.equal(code2, P.EngineErrorCodes.InvalidParams);
    assert.match(message2, /provider/);
    assert.ok(!message2.includes('\n'));

    const [code3] = await rejection(engine.rpc.sendRequest('titan/noSuchMethod', {}));
    assert.equal(code3, ErrorCodes.MethodNotFound);

    // A question before any model is configured: a clear NotReady, not a crash.
    const [code4, message4] = await rejection(engine.rpc.sendRequest(P.AskRequest, { question: 'hello' }));
    assert.equal(code4, P.EngineErrorCodes.NotReady);
    assert.match(message4, /no model is open/);
  });

  it('validates conversion settings field by field', async () => {
    const bad = await engine.rpc.sendRequest(P.ValidateSettingsRequest, {
      source: DEMO,
      settings: { operator: 'quantum', magWeight: 'abc', window: -3, chunk: 1000, semantics: 'fuzzy', dtype: 'fp8', crossGate: 'yes', adapter: path.join(tmp, 'no-such-adapter') },
    });
    const byField = new Map(bad.errors.map((e) => [e.field, e.message]));
    assert.match(byField.get('operator') ?? '', /operator_mode "quantum" is unknown/);
    assert.match(byField.get('magWeight') ?? '', /mag_weight must be a number in \[0, 1\], got "abc"/);
    assert.match(byField.get('window') ?? '', /window.*got -3/);
    assert.match(byField.get('chunk') ?? '', /max_chunk_size 1000 is too large/);
    assert.match(byField.get('semantics') ?? '', /semantics must be "exact" or "tptt-0.12"/);
    assert.match(byField.get('dtype') ?? '', /fp32 or fp16/);
    assert.match(byField.get('crossGate') ?? '', /on or off/);
    assert.match(byField.get('adapter') ?? '', /does not exist/);

    const good = await engine.rpc.sendRequest(P.ValidateSettingsRequest, { source: DEMO, settings: { operator: 'gated_delta_rule', magWeight: '0.25', window: '', chunk: '32', semantics: 'tptt-0.12', dtype: 'fp16', crossGate: true, adapter: '' } });
    assert.deepEqual(good.errors, []);

    const noModel = await engine.rpc.sendRequest(P.ValidateSettingsRequest, { source: path.join(tmp, 'nowhere'), settings: {} });
    assert.equal(noModel.errors.length, 1);
    assert.equal(noModel.errors[0].field, null);
    assert.match(noModel.errors[0].message, /is not a folder/);
  });

  it('refuses to convert with bad settings and cancels a conversion half-way without leftovers', async () => {
    const [code, message] = await rejection(engine.rpc.sendRequest(P.TitanizeRequest, { source: DEMO, settings: { magWeight: 7 } }));
    assert.equal(code, P.EngineErrorCodes.ModelError);
    assert.match(message, /mag_weight/);

    const out = path.join(tmp, 'cancelled-package');
    const cts = new CancellationTokenSource();
    const seen: P.TitanizeProgressValue[] = [];
    const sub = engine.rpc.onProgress(P.TitanizeProgress, 'conv', (p) => {
      seen.push(p);
      // Cancel at the first progress report: the demo model converts in well under a second on an
      // idle machine, and fp16 (below) keeps it busy long enough for the cancel to land mid-way.
      if (p.done >= 1) cts.cancel();
    });
    const [code2] = await rejection(engine.rpc.sendRequest(P.TitanizeRequest, { source: DEMO, out, settings: { window: 512, dtype: 'fp16' }, progressToken: 'conv' }, cts.token));
    sub.dispose();
    assert.equal(code2, P.EngineErrorCodes.Cancelled);
    assert.ok(seen.length > 0 && seen[0].total > 3, 'progress arrived before the cancel');
    assert.ok(!fs.existsSync(out), 'no package under the requested name');
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('cancelled-package')), [], 'no temporary folder left');
  });

  it('converts the demo model on first use, opens it and builds the workspace memory with progress', async () => {
    const configureProgress: string[] = [];
    const sub = engine.rpc.onProgress(P.ConfigureProgress, 'cfg', (p) => void configureProgress.push(p.message));
    const t0 = performance.now();
    const status = await engine.rpc.sendRequest(P.ConfigureRequest, { ...configureParams(), progressToken: 'cfg' });
    sub.dispose();
    console.log(`  configure (demo conversion + open): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.ok(configureProgress.some((m) => /Converting the bundled demo model/.test(m)));
    assert.equal(status.model?.demo, true);
    assert.equal(status.model?.kind, 'titan');
    assert.match(status.model?.summary ?? '', /delta_rule μ 0.05 · window 512 · chunk 64 · exact/);
    assert.equal(status.provider?.provider, 'cpu');
    assert.equal(status.modelError, null);

    const models = await engine.rpc.sendRequest(P.ListModelsRequest, {});
    assert.deepEqual(models.map((m) => m.name), ['code-llama-19m-titan']);

    const progress: P.MemoryProgress[] = [];
    const sub2 = engine.rpc.onProgress(P.MemoryProgressType, 'mem', (p) => void progress.push(p));
    const stats = await engine.rpc.sendRequest(P.UpdateMemoryRequest, { progressToken: 'mem' });
    sub2.dispose();
    console.log(`  memory build: ${stats.filesRead} files, ${stats.tokensIngested} tokens in ${stats.seconds.toFixed(1)} s (${stats.tokensPerSecond.toFixed(0)} tok/s)`);
    assert.equal(stats.filesRead, 3, 'README.md, src/client.ts, src/retry.ts; generated/ is excluded');
    assert.ok(stats.tokensIngested > 50);
    assert.equal(stats.tokensReread, stats.tokensIngested);
    assert.ok(progress.some((p) => p.phase === 'read' && p.tokens > 0 && p.tokensPerSecond > 0), 'progress reports tokens and tokens/s');
    assert.ok(progress.some((p) => p.phase === 'read' && p.filesTotal === 3), 'progress reports files');

    const again = await engine.rpc.sendRequest(P.UpdateMemoryRequest, {});
    assert.equal(again.tokensReread, 0, 'nothing changed: nothing re-read');
    assert.equal(again.restoredFromCheckpoint, true);
    const s = await engine.rpc.sendRequest(P.StatusRequest);
    assert.equal(s.memory?.fresh, true);
    assert.equal(s.memory?.position, stats.tokensIngested);
    assert.equal(s.memory?.files, 3);
  });

  it('answers with streamed fragments and sources', async () => {
    const { result, fragments } = await ask(engine, 'Where is retryDelay defined and what does MAX_RETRIES limit?');
    console.log(`  answer: ${result.stats.answerTokens} tokens, ${result.stats.tokensPerSecond.toFixed(1)} tok/s, ${result.stats.seconds.toFixed(1)} s`);
    assert.ok(result.stats.answerTokens > 0);
    assert.ok(fragments.length > 0, 'the answer arrived in fragments');
    assert.equal(fragments.join(''), result.answer);
    const retry = result.sources.filter((s) => s.path === 'src/retry.ts');
    assert.ok(retry.some((s) => s.reason === 'identifier' && s.line === 2), `MAX_RETRIES is on line 2 of src/retry.ts: ${JSON.stringify(result.sources)}`);
    assert.ok(retry.some((s) => s.line === 3 && /retryDelay/.test(s.snippet ?? '')));
    assert.ok(!result.sources.some((s) => s.path.startsWith('generated/')));
  });

  it('updates the memory incrementally after a file change notification', async () => {
    const before = await engine.rpc.sendRequest(P.StatusRequest);
    const from = engine.statuses.length;
    fs.appendFileSync(path.join(ws, 'src', 'retry.ts'), '// Jitter is added by the caller.\n');
    engine.rpc.sendNotification(P.FilesChangedNotification, { changes: [{ path: path.join(ws, 'src', 'retry.ts'), kind: 'changed' }] });
    // Status notifications are throttled, so a quick update may show only its end: a fresh memory
    // that holds more tokens than before.
    await until('the update to finish', () => {
      const last = engine.statuses.slice(from).at(-1)?.memory;
      return !!last && last.fresh && last.updating === null && last.position > before.memory!.position;
    });
    const after = await engine.rpc.sendRequest(P.StatusRequest);
    assert.ok(after.memory!.position > before.memory!.position, `the memory grew: ${before.memory!.position} → ${after.memory!.position}`);
    assert.notEqual(after.memory!.lastUpdate, before.memory!.lastUpdate);
  });

  it('cancels an answer half-way and keeps what was said', async () => {
    const cts = new CancellationTokenSource();
    const { result, fragments } = await ask(engine, 'Explain fetchWithRetry.', { maxNewTokens: 400 }, () => cts.cancel(), cts);
    assert.equal(result.stopReason, 'cancelled');
    assert.ok(result.stats.answerTokens < 400);
    assert.equal(result.answer, fragments.join(''));
  });

  it('stops every operation in flight on titan/stop', async () => {
    let stopped: Promise<{ stopped: number }> | null = null;
    const { result } = await ask(engine, 'Explain MAX_RETRIES.', { maxNewTokens: 400 }, () => {
      stopped ??= engine.rpc.sendRequest(P.StopRequest);
    });
    assert.equal(result.stopReason, 'cancelled');
    assert.ok(((await stopped!) as { stopped: number }).stopped >= 1);
  });

  it('reports a bad model folder as a one-line ModelError and keeps working', async () => {
    const notAPackage = path.join(tmp, 'not-a-package');
    fs.mkdirSync(notAPackage, { recursive: true });
    const [code, message] = await rejection(engine.rpc.sendRequest(P.ConfigureRequest, configureParams({ modelPath: notAPackage })));
    assert.equal(code, P.EngineErrorCodes.ModelError);
    assert.match(message, /is not a Titan model package/);
    assert.ok(!message.includes('\n'));
    const status = await engine.rpc.sendRequest(P.ConfigureRequest, configureParams());
    assert.equal(status.model?.demo, true);
    const { result } = await ask(engine, 'What does retryDelay return?');
    assert.ok(result.stats.answerTokens > 0);
    assert.deepEqual(engine.rpcErrors, [], 'stdout carried only JSON-RPC frames');
  });

  it('survives SIGKILL mid-answer: a fresh engine restores the memory and answers', async () => {
    const memoryBefore = (await engine.rpc.sendRequest(P.StatusRequest)).memory!;
    const pending = ask(engine, 'Explain fetchWithRetry in detail.', { maxNewTokens: 400 }, () => engine.child.kill('SIGKILL'));
    // JSON-RPC leaves a request pending when its peer dies; the client watches the process (as
    // extension/engine-client.ts does).
    const died = engine.exited.then((e) => Promise.reject(new Error(`engine exited (${e.signal})`)));
    await assert.rejects(Promise.race([pending, died]), /engine exited \(SIGKILL\)/);
    const exit = await engine.exited;
    assert.equal(exit.signal, 'SIGKILL');

    const next = startEngine();
    await initialize(next);
    const status = await next.rpc.sendRequest(P.ConfigureRequest, configureParams());
    assert.equal(status.model?.demo, true, 'the converted demo package is reused');
    assert.equal(status.memory?.position, memoryBefore.position, 'the memory restored from its checkpoint');
    const stats = await next.rpc.sendRequest(P.UpdateMemoryRequest, {});
    assert.equal(stats.tokensReread, 0, 'nothing re-read after the restart');
    const { result, fragments } = await ask(next, 'Where is MAX_RETRIES defined?');
    assert.ok(result.stats.answerTokens > 0);
    assert.equal(fragments.join(''), result.answer);
    assert.ok(result.sources.some((s) => s.path === 'src/retry.ts'));
    await next.close();
    const e = await next.exited;
    assert.equal(e.code, 0, 'shutdown + exit ends the process cleanly');
    assert.match(next.stderr(), /\[info\] engine \d+ ready/);
  });
});
