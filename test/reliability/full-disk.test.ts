// A full disk during checkpoint writes, in a real `titan memory` process: a preload (full-disk.cjs)
// lets the storage folder take only a random number of bytes more, then fails writes with ENOSPC
// (the crossing write is cut short, like a real full disk). Each such run must end with one clear
// line and a non-zero exit, leave every checkpoint the manifest names intact and equal to a clean
// read's state, and leave no half-written file; the next run with space must resume from the newest
// checkpoint and end in the clean read's final state.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import type { MemoryStats } from '../../engine/memory/workspace-memory';
import { seededRandom } from '../../engine/util/random';
import { memoryDirIn } from '../helpers/workspace';
import { CLI_BUNDLE, ensureEngineBundle } from './engine-bundle';
import { checkStorage, finalDifference, memoryReference, type MemoryReference } from './memory-reference';
import { tracked } from './record';

const PRELOAD = path.join(__dirname, 'full-disk.cjs');
const ROUNDS = Number(process.env.TITAN_FAULT_REPEATS ?? 4);
let tmp = '';
let ref: MemoryReference;

function titanMemory(storage: string, env: Record<string, string> = {}, preload = false, command: string[] = ['memory']): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const args = [...(preload ? ['--require', PRELOAD] : []), CLI_BUNDLE, ...command.slice(0, 1), ref.pkg, ...command.slice(1), '--workspace', ref.ws, '--storage', storage, '--checkpoint-every', '512', '--provider', 'cpu', '--json'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) => child.on('close', (code, signal) => {
    clearTimeout(timer);
    resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
  }));
}

before(async () => {
  ensureEngineBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-full-disk-'));
  ref = await memoryReference(tmp);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('a full disk during checkpoint writes fails the run with one line, keeps the last good checkpoint, and the next run resumes from it', { timeout: 300_000 }, async (t) => {
  await tracked('faults-full-disk', {
    section: 'fault',
    name: 'full disk during a checkpoint write',
    injected: `titan memory with the storage folder's disk full after a random 0.3–2.8 state sizes of writes (ENOSPC; the crossing write cut short), ${ROUNDS} runs in a row on one storage folder`,
    expected: 'each run exits non-zero with one line naming ENOSPC and the folder; every checkpoint the manifest names is intact and equals a clean read there; no temp file left; the next run with space resumes from the newest checkpoint and ends equal to a clean full read; titan ask on the still-full disk answers (the retrieval index not saved, with a notice)',
  }, async (figures) => {
    const seed = Number(process.env.TITAN_FAULT_SEED ?? Date.now() % 100_000);
    t.diagnostic(`budgets seeded with ${seed} (TITAN_FAULT_SEED=${seed} repeats them); stream of ${ref.total} tokens, state ${ref.stateBytes} bytes`);
    const random = seededRandom(seed);
    const storage = path.join(tmp, 'storage');
    const faultLog = path.join(tmp, 'faults.jsonl');
    let kept = 0;
    const newest: number[] = [];
    let failed = 0;
    let hits = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const budget = Math.floor(ref.stateBytes * (0.3 + 2.5 * random()));
      const r = await titanMemory(storage, { TITAN_FAULT_FULL_DISK_DIR: storage, TITAN_FAULT_FULL_DISK_BYTES: String(budget), TITAN_FAULT_LOG: faultLog }, true);
      const hit = fs.existsSync(faultLog) && fs.readFileSync(faultLog, 'utf8').includes('"enospc"');
      fs.rmSync(faultLog, { force: true });
      if (r.code === 0) {
        // The rest of the stream fit in the budget: nothing to fail.
        assert.ok(!hit, 'a write failed with ENOSPC, yet the run reported success');
        newest.push(checkStorage(memoryDirIn(storage), ref));
        break;
      }
      hits++;
      failed++;
      assert.equal(r.signal, null, `the run died of ${r.signal}`);
      assert.equal(r.code, 1, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
      assert.match(lines[0], /^titan memory: cannot save .* in .*: no space left on the device \(ENOSPC\); free some space/);
      const now = checkStorage(memoryDirIn(storage), ref);
      assert.ok(now >= kept, `the newest checkpoint went back from ${kept} to ${now}`);
      kept = now;
      newest.push(now);
    }
    t.diagnostic(`newest checkpoint after each run: ${newest.join(', ')} of ${ref.total}`);
    assert.ok(failed >= 2, `only ${failed} runs hit the full disk`);

    const last = await titanMemory(storage);
    assert.equal(last.code, 0, last.stderr);
    const stats = JSON.parse(last.stdout) as MemoryStats;
    assert.equal(stats.restoredFromCheckpoint, kept > 0);
    assert.equal(stats.resumedFrom, kept);
    assert.equal(stats.position, ref.total);
    assert.equal(stats.tokensReread, ref.total - kept);
    checkStorage(memoryDirIn(storage), ref);
    const diff = finalDifference(storage, ref);
    assert.ok(diff <= 1e-5, `final state differs from a clean full read by ${diff}`);

    // A question on the full disk: the memory is current, so only the retrieval index wants writing;
    // its failure must not cost the answer.
    const ask = await titanMemory(storage, { TITAN_FAULT_FULL_DISK_DIR: storage, TITAN_FAULT_FULL_DISK_BYTES: '0' }, true, ['ask', 'where is retryDelay computed?', '--max-new-tokens', '8']);
    assert.equal(ask.code, 0, ask.stderr);
    assert.ok((JSON.parse(ask.stdout) as { answer: string }).answer.length > 0);
    assert.match(ask.stderr, /notice: the retrieval index was not saved \(.*ENOSPC.*\); it is rebuilt when needed/);
    checkStorage(memoryDirIn(storage), ref);
    Object.assign(figures, { 'runs failed with ENOSPC': hits, 'stream tokens': ref.total, 'newest checkpoint after each': newest.join(' → '), 'resumed from': kept, seed });
  });
});
