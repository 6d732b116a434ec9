// Persistence under SIGKILL: `titan memory` is killed at random moments while it ingests, again and
// again; after every kill each checkpoint the manifest names must load and equal the state a clean
// read has at that position, and the next run must resume from the newest one and end in the state
// of a clean full read.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type MemoryStats } from '../../engine/memory/workspace-memory';
import { memoryDirIn, rng, runTitan, spawnTitan } from '../helpers/workspace';
import { checkStorage, finalDifference, memoryReference, type MemoryReference } from '../reliability/memory-reference';

let tmp: string;
/** A clean read that checkpoints after every segment: a reference state wherever a killed run could have left one. */
let ref: MemoryReference;
/** Milliseconds a clean read spends on 1024 tokens: kills land within about one checkpoint interval. */
let msPerCheckpoint = 0;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-kill-'));
  ref = await memoryReference(tmp, { count: 30, lines: 40 });
  msPerCheckpoint = (ref.updateMs / ref.total) * 1024;
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('never leaves a checkpoint that restores to a wrong state, and resumes from the newest good one', async (t) => {
  const seed = Number(process.env.TITAN_KILL_SEED ?? Date.now() % 100_000);
  t.diagnostic(`kill moments seeded with ${seed} (TITAN_KILL_SEED=${seed} repeats them); stream of ${ref.total} tokens, ${msPerCheckpoint.toFixed(0)} ms per 1024 tokens`);
  const random = rng(seed);
  const storage = path.join(tmp, 'killed');
  const args = ['memory', ref.pkg, '--workspace', ref.ws, '--storage', storage, '--checkpoint-every', '1024', '--provider', 'cpu', '--json'];
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
    const newest = checkStorage(path.join(storage, memDir()!), ref, { killed: true });
    kills.push(`${newest}`);
    assert.ok(newest >= kept, `the newest checkpoint went back from ${kept} to ${newest}`);
    kept = newest;
  }
  t.diagnostic(`newest checkpoint after each kill: ${kills.join(', ')} of ${ref.total}`);
  assert.ok(kills.length >= 3, `only ${kills.length} runs were killed before finishing`);

  const last = await runTitan(args);
  assert.equal(last.code, 0, last.stderr);
  const stats = JSON.parse(last.stdout) as MemoryStats;
  assert.equal(stats.restoredFromCheckpoint, kept > 0);
  assert.equal(stats.resumedFrom, kept);
  assert.equal(stats.tokensReread, ref.total - kept);
  assert.equal(stats.position, ref.total);
  checkStorage(memoryDirIn(storage), ref);
  const diff = finalDifference(storage, ref);
  assert.ok(diff <= 1e-5, `final state differs from a clean full read by ${diff}`);
});
