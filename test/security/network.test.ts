// The engine makes no network requests. Every engine process below runs with no-network.cjs
// preloaded (in it and in its worker threads): net/tls/http/https/http2/dgram/dns, fetch, undici and
// WebSocket record the attempt and throw. The commands and the engine server do their real work —
// titanize, generate, memory, ask, and the server's initialize/configure/ask — and the log must hold
// no attempt. A control run shows the hooks do catch a request.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { CLI_BUNDLE, ensureEngineBundle, SERVER_BUNDLE } from '../reliability/engine-bundle';
import { REPO_ROOT, tracked } from '../reliability/record';

const PRELOAD = path.join(__dirname, 'no-network.cjs');
const FILE = 'security-network';
let tmp = '';
let hf = '';
let pkg = '';
let ws = '';

interface Run { code: number | null; stdout: string; stderr: string; log: { call?: string; target?: string; loaded?: boolean; threadId: number; pid: number }[] }

/** `node --require no-network.cjs <script> …args` with its own network log. */
function runHooked(script: string, args: string[], name: string, onSpawn?: (child: ReturnType<typeof spawn>) => Promise<void>): Promise<Run> {
  const log = path.join(tmp, `${name}.net.log`);
  fs.rmSync(log, { force: true });
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, ['--require', PRELOAD, ...loader, script, ...args], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, TITAN_NET_LOG: log, HF_HUB_OFFLINE: '', NO_PROXY: '' },
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  if (!onSpawn) {
    child.stdin!.end();
    child.stdout!.on('data', (b: Buffer) => out.push(b));
  }
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const entries = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), log: entries });
    });
    onSpawn?.(child).catch((e) => {
      child.kill('SIGKILL');
      reject(e);
    });
  });
}

const cli = (args: string[], name: string) => runHooked(CLI_BUNDLE, args, name);

function assertNoNetwork(run: Run, what: string, figures: Record<string, number | string>): void {
  assert.equal(run.code, 0, `${what} failed: ${run.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const calls = run.log.filter((e) => e.call);
  const threads = new Set(run.log.filter((e) => e.loaded).map((e) => `${e.pid}:${e.threadId}`));
  figures['threads hooked'] = threads.size;
  figures['network calls'] = calls.length;
  assert.ok(threads.size >= 1, `${what}: the hooks were not loaded`);
  assert.deepEqual(calls.map((c) => `${c.call} ${c.target}`), [], `${what} tried to reach the network`);
}

before(async () => {
  ensureEngineBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-no-network-'));
  hf = path.join(tmp, 'hf');
  await writeRandomCheckpoint(hf, { arch: 'llama', hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, chatTemplate: 'inline' });
  pkg = path.join(tmp, 'pkg');
  ws = path.join(tmp, 'ws');
  fs.mkdirSync(path.join(ws, 'src'), { recursive: true });
  fs.writeFileSync(path.join(ws, 'src/retry.ts'), 'export const RETRY_LIMIT = 3;\nexport function retry(f: () => void) { for (let i = 0; i < RETRY_LIMIT; i++) f(); }\n');
  fs.writeFileSync(path.join(ws, 'README.md'), '# demo\nSee https://example.com and http://localhost:8080 for docs.\n');
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('no network access', { timeout: 600_000 }, () => {
  it('the hooks catch a request (control)', async () => {
    await tracked(FILE, { section: 'security', name: 'network hooks (control)', injected: 'a child with the hooks preloaded calls fetch, http.get and dns.lookup', expected: 'all three recorded and refused' }, async (figures) => {
      const script = path.join(tmp, 'control.js');
      fs.writeFileSync(script, "const http = require('node:http');\nconst dns = require('node:dns');\nfor (const f of [() => fetch('http://127.0.0.1:9/'), () => http.get('http://127.0.0.1:9/'), () => dns.lookup('example.com', () => undefined)]) { try { void f(); } catch { /* refused */ } }\n");
      const run = await runHooked(script, [], 'control');
      figures['calls caught'] = run.log.filter((e) => e.call).length;
      assert.deepEqual(run.log.filter((e) => e.call).map((e) => e.call), ['fetch', 'http.get', 'dns.lookup']);
    });
  });

  it('titan titanize, generate, memory and ask make no network request', async () => {
    await tracked(FILE, { section: 'security', name: 'no network: CLI', injected: 'titan titanize, generate, memory, ask with every Node network entry point hooked (main thread and workers)', expected: 'each command succeeds; no network call recorded' }, async (figures) => {
      const runs: [string, string[]][] = [
        ['titanize', ['titanize', hf, '--out', pkg, '--window', '64', '--chunk', '16']],
        ['generate', ['generate', pkg, '--prompt', 'def retry', '--max-new-tokens', '4', '--provider', 'auto']],
        ['memory', ['memory', pkg, '--workspace', ws, '--storage', path.join(tmp, 'mem'), '--provider', 'cpu', '--json']],
        ['ask', ['ask', pkg, '--workspace', ws, '--storage', path.join(tmp, 'mem'), '--provider', 'cpu', '--max-new-tokens', '4', '--json', 'where is RETRY_LIMIT set?']],
      ];
      for (const [name, args] of runs) {
        const f: Record<string, number | string> = {};
        assertNoNetwork(await cli(args, name), `titan ${name}`, f);
        figures[`${name}: threads hooked`] = f['threads hooked'];
      }
      figures.commands = runs.length;
    });
  });

  it('the engine server makes no network request while it initializes, opens a model and answers', async () => {
    await tracked(FILE, { section: 'security', name: 'no network: engine server', injected: 'engine server (JSON-RPC over stdio) initialize → configure (model + workspace memory) → ask → shutdown, network hooked', expected: 'every request answered; no network call recorded' }, async (figures) => {
      let answer = '';
      const run = await runHooked(SERVER_BUNDLE, [], 'server', async (child) => {
        const rpc = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
        rpc.listen();
        await rpc.sendRequest('titan/initialize', { clientName: 'network-test', globalStorageDir: path.join(tmp, 'global'), demoModelDir: path.join(tmp, 'no-demo') });
        await rpc.sendRequest('titan/configure', { modelPath: pkg, provider: 'auto', threads: 1, workspaces: [{ path: ws }], exclude: [], memoryStorageDir: path.join(tmp, 'server-mem'), maxFileBytes: 1 << 20, storageCapBytes: 1 << 26 });
        await rpc.sendRequest('titan/updateMemory', {});
        const r = (await rpc.sendRequest('titan/ask', { question: 'where is RETRY_LIMIT set?', maxNewTokens: 4 })) as { answer: string };
        answer = r.answer;
        await rpc.sendRequest('titan/shutdown');
        await rpc.sendNotification('titan/exit');
        rpc.dispose();
      });
      figures['answer chars'] = answer.length;
      assertNoNetwork(run, 'engine server', figures);
    });
  });
});
