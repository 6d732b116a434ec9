// Persistence under SIGKILL: `titan memory` is killed at random moments while it ingests, again and
// again; after every kill each checkpoint the manifest names must load and equal the state a clean
// read has at that position, and the next run must resume from the newest one and end in the state
// of a clean full read.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeState } from '../../engine/runtime/state-blob';
import { WorkspaceMemory, type MemoryStats } from '../../engine/memory/workspace-memory';
import { memoryDirIn, readStoredMemory, rng, runTitan, spawnTitan, stateDifference, tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';

let tmp: string;
let pkg: string;
let ws: string;
/** Position → state of a clean read, at every point where a run can end. */
const reference = new Map<number, Buffer>();
let total = 0;
/** Milliseconds a clean read spends on 1024 tokens: kills land within about one checkpoint interval. */
let msPerCheckpoint = 0;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-kill-'));
  pkg = await tinyTitanPackage(path.join(tmp, 'model'));
  ws = path.join(tmp, 'ws');
  writeSyntheticWorkspace(ws, { count: 30, lines: 40 });
  // A clean read that checkpoints after every segment: a reference state wherever a killed run could have left one.
  const storage = path.join(tmp, 'reference');
  const m = await WorkspaceMemory.open({ packageDir: pkg, workspaces: [ws], storageDir: storage, provider: 'cpu', checkpointEveryTokens: 1, storageCapBytes: 2 ** 40 });
  try {
    const started = performance.now();
    total = (await m.update()).position;
    msPerCheckpoint = ((performance.now() - started) / total) * 1024;
  } finally {
    await m.close();
  }
  const stored = readStoredMemory(memoryDirIn(storage));
  for (const c of stored.manifest.checkpoints) reference.set(c.position, stored.state(c.position));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Every checkpoint the manifest names is intact and equals the clean read's state there. */
function checkStorage(memDir: string): number {
  if (!fs.existsSync(path.join(memDir, 'manifest.json'))) return 0;
  const raw = JSON.parse(fs.readFileSync(path.join(memDir, 'manifest.json'), 'utf8')) as Record<string, unknown> & { checksum: string };
  const { checksum, ...body } = raw;
  assert.equal(createHash('sha256').update(JSON.stringify(body)).digest('hex'), checksum, 'manifest checksum');
  const stored = readStoredMemory(memDir);
  let newest = 0;
  for (const c of stored.manifest.checkpoints) {
    const blob = stored.state(c.position);
    assert.equal(createHash('sha256').update(blob).digest('hex'), c.sha256, `${c.file} does not match its manifest entry`);
    assert.equal(decodeState(blob).position, c.position);
    const want = reference.get(c.position);
    assert.ok(want, `checkpoint at ${c.position} is not at a segment boundary of the stream`);
    const diff = stateDifference(blob, want);
    assert.ok(diff <= 1e-5, `checkpoint at ${c.position} differs from a clean read by ${diff}`);
    newest = Math.max(newest, c.position);
  }
  return newest;
}

it('never leaves a checkpoint that restores to a wrong state, and resumes from the newest good one', async (t) => {
  const seed = Number(process.env.TITAN_KILL_SEED ?? Date.now() % 100_000);
  t.diagnostic(`kill moments seeded with ${seed} (TITAN_KILL_SEED=${seed} repeats them); stream of ${total} tokens, ${msPerCheckpoint.toFixed(0)} ms per 1024 tokens`);
  const random = rng(seed);
  const storage = path.join(tmp, 'killed');
  const args = ['memory', pkg, '--workspace', ws, '--storage', storage, '--checkpoint-every', '1024', '--provider', 'cpu', '--json'];
  let kept = 0;
  const kills: string[] = [];
  for (let round = 0; round < 5; round++) {
    const child = spawnTitan(args);
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    let finished = false;
    void exited.then(() => (finished = true));
    // Wait until this run has written a checkpoint of its own (or the folder's first), then kill at a random moment.
    const memDir = (): string | null => (fs.existsSync(storage) ? (fs.readdirSync(storage).find((d) => !d.startsWith('.')) ?? null) : null);
    const started = performance.now();
    for (;;) {
      if (finished || performance.now() - started > 120_000) break;
      const dir = memDir();
      const states = dir ? fs.readdirSync(path.join(storage, dir)).filter((f) => /^state-\d+\.bin$/.test(f)).map((f) => Number(f.slice(6, -4))) : [];
      if (states.some((p) => p > kept)) break;
      await sleep(20);
    }
    // Within one checkpoint interval of the new checkpoint: a kill before the next one, between two
    // writes or during one; a fixed delay lets a fast machine finish the stream before any kill.
    await sleep(Math.floor(random() * Math.min(1500, msPerCheckpoint)));
    if (finished) break; // it completed before the kill: nothing left to interrupt
    child.kill('SIGKILL');
    await exited;
    const newest = checkStorage(path.join(storage, memDir()!));
    kills.push(`${newest}`);
    assert.ok(newest >= kept, `the newest checkpoint went back from ${kept} to ${newest}`);
    kept = newest;
  }
  t.diagnostic(`newest checkpoint after each kill: ${kills.join(', ')} of ${total}`);
  assert.ok(kills.length >= 3, `only ${kills.length} runs were killed before finishing`);

  const last = await runTitan(args);
  assert.equal(last.code, 0, last.stderr);
  const stats = JSON.parse(last.stdout) as MemoryStats;
  assert.equal(stats.restoredFromCheckpoint, kept > 0);
  assert.equal(stats.resumedFrom, kept);
  assert.equal(stats.tokensReread, total - kept);
  assert.equal(stats.position, total);
  const memDir = memoryDirIn(storage);
  checkStorage(memDir);
  const diff = stateDifference(readStoredMemory(memDir).last(), reference.get(total)!);
  assert.ok(diff <= 1e-5, `final state differs from a clean full read by ${diff}`);
});
