// The memory's storage folder deleted while the engine runs: in the middle of a `titan memory`
// ingestion, and between operations of the engine server (as a user cleaning up their disk would).
// Nothing may crash; the running update goes on and ends with a complete checkpoint in a folder
// created again, the next question and update succeed, and a notice says what happened.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MemoryStats } from '../../engine/memory/workspace-memory';
import * as P from '../../protocol/engine';
import { memoryDirIn } from '../helpers/workspace';
import { CLI_BUNDLE, ensureEngineBundle } from './engine-bundle';
import { configureEngine, startEngine } from './engine-process';
import { checkStorage, finalDifference, memoryReference, type MemoryReference } from './memory-reference';
import { tracked } from './record';

const FILE = 'faults-storage-deleted';
let tmp = '';
let ref: MemoryReference;

function titanMemory(storage: string) {
  const child = spawn(process.execPath, [CLI_BUNDLE, 'memory', ref.pkg, '--workspace', ref.ws, '--storage', storage, '--checkpoint-every', '512', '--provider', 'cpu', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code, signal) => {
    clearTimeout(timer);
    resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
  }));
  return { child, done };
}

/** Waits until a checkpoint state file exists under `storage` (or `stop()` says to give up). */
async function firstCheckpoint(storage: string, stop: () => boolean): Promise<boolean> {
  const started = Date.now();
  while (!stop() && Date.now() - started < 60_000) {
    for (const d of fs.existsSync(storage) ? fs.readdirSync(storage) : []) {
      const dir = path.join(storage, d);
      if (fs.statSync(dir).isDirectory() && fs.readdirSync(dir).some((f) => /^state-\d+\.bin$/.test(f))) return true;
    }
    await sleep(10);
  }
  return false;
}

before(async () => {
  ensureEngineBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-storage-deleted-'));
  ref = await memoryReference(tmp);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('titan memory goes on when its storage folder is deleted mid-ingestion, and the next run resumes', { timeout: 180_000 }, async () => {
  await tracked(FILE, {
    section: 'fault',
    name: 'storage folder deleted during ingestion',
    injected: 'the whole storage folder moved away and deleted while titan memory ingests (right after its first checkpoint)',
    expected: 'the run succeeds, says so in a notice, and ends with a complete checkpoint equal to a clean full read in the re-created folder; the next run resumes at the end (nothing re-read)',
  }, async (figures) => {
    const storage = path.join(tmp, 'cli-storage');
    const run = titanMemory(storage);
    let exited = false;
    void run.done.then(() => (exited = true));
    assert.ok(await firstCheckpoint(storage, () => exited), 'no checkpoint appeared');
    assert.ok(!exited, 'the run ended before the folder could be deleted');
    // At once, as a move to the trash does: rm -rf of a folder the engine writes into races with
    // the engine re-creating it, which is the point, but it makes a flaky test.
    fs.renameSync(storage, `${storage}.trash`);
    fs.rmSync(`${storage}.trash`, { recursive: true, force: true });
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const stats = JSON.parse(r.stdout) as MemoryStats;
    assert.equal(stats.position, ref.total);
    const notice = stats.notices.find((n) => /was deleted while the engine ran/.test(n));
    assert.ok(notice, `no notice of the deletion in ${JSON.stringify(stats.notices)}`);
    assert.match(r.stderr, /notice: the memory storage folder .* was deleted/);
    assert.ok(fs.existsSync(path.join(storage, '.gitignore')), 'the re-created storage folder lacks its .gitignore');
    const memDir = memoryDirIn(storage);
    assert.equal(checkStorage(memDir, ref), ref.total);
    const diff = finalDifference(storage, ref);
    assert.ok(diff <= 1e-5, `final state differs from a clean full read by ${diff}`);

    const next = await titanMemory(storage).done;
    assert.equal(next.code, 0, next.stderr);
    const again = JSON.parse(next.stdout) as MemoryStats;
    assert.equal(again.resumedFrom, ref.total);
    assert.equal(again.tokensReread, 0);
    Object.assign(figures, { 'stream tokens': ref.total, 'checkpoints in the re-created folder': readCheckpoints(memDir), 're-read by the next run': again.tokensReread });
  });
});

function readCheckpoints(memDir: string): number {
  return (JSON.parse(fs.readFileSync(path.join(memDir, 'manifest.json'), 'utf8')) as { checkpoints: unknown[] }).checkpoints.length;
}

it('the engine server answers and updates after its storage folder is deleted between operations', { timeout: 180_000 }, async () => {
  await tracked(FILE, {
    section: 'fault',
    name: 'storage folder deleted between operations (engine server)',
    injected: 'rm -rf of the storage folder after a completed update, then ask and update; then the engine restarted',
    expected: 'the question is answered; the update succeeds with a notice (logged and in the memory status), saving the held state into the re-created folder without re-reading; a restarted engine restores from it',
  }, async (figures) => {
    const storage = path.join(tmp, 'server-storage');
    const globalStorageDir = path.join(tmp, 'global');
    const engine = startEngine();
    try {
      await configureEngine(engine, { globalStorageDir, pkg: ref.pkg, ws: ref.ws, storage });
      const first = await engine.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(first.tokensIngested, ref.total);
      fs.rmSync(storage, { recursive: true, force: true });

      const { result } = await engine.ask('where is retryDelay computed?');
      assert.ok(result.answer.length > 0, 'empty answer');
      const second = await engine.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(second.tokensIngested, ref.total);
      assert.equal(second.tokensReread, 0, 'the update read the workspace again instead of saving the held state');
      assert.ok(second.notices?.some((n) => /was deleted while the engine ran.*saved into it again/.test(n)), `no notice in ${JSON.stringify(second.notices)}`);
      const status = await engine.rpc.sendRequest(P.StatusRequest);
      assert.ok(status.memory?.notices?.some((n) => /was deleted/.test(n)), 'the memory status does not carry the notice');
      assert.match(engine.stderr(), /\[warn\] memory: the memory storage folder .* was deleted/);
      const again = await engine.ask('and where is it used?');
      assert.ok(again.result.answer.length > 0);
    } finally {
      const end = await engine.close();
      assert.equal(end.code, 0, engine.stderr());
    }
    assert.equal(checkStorage(memoryDirIn(storage), ref), ref.total);
    const diff = finalDifference(storage, ref);
    assert.ok(diff <= 1e-5, `state saved back differs from a clean full read by ${diff}`);

    const restarted = startEngine();
    try {
      await configureEngine(restarted, { globalStorageDir, pkg: ref.pkg, ws: ref.ws, storage });
      const stats = await restarted.rpc.sendRequest(P.UpdateMemoryRequest, {});
      assert.equal(stats.restoredFromCheckpoint, true);
      assert.equal(stats.tokensReread, 0);
      figures['re-read after the restart'] = stats.tokensReread;
    } finally {
      await restarted.close();
    }
    figures['stream tokens'] = ref.total;
  });
});
