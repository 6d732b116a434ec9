// `titan memory` on this project's own repository: every eligible file is read, the rest are
// skipped with reasons, and a second run with no changes restores the checkpoint and re-reads
// nothing. The model is a small generated one with the demo model's tokenizer (the stream has
// the demo model's tokens; only the weights are random), so the test stays quick on two cores.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { discoverWorkspace } from '../../engine/memory/discovery';
import type { MemoryStats } from '../../engine/memory/workspace-memory';
import { REPO, runTitan, tinyTitanPackage } from '../helpers/workspace';

/** The repository read (another checkout, to test on a tree nobody edits meanwhile). */
const ROOT = process.env.TITAN_MEMORY_REPO ?? REPO;

let tmp: string;
let pkg: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-repo-'));
  pkg = await tinyTitanPackage(path.join(tmp, 'model'), { max_self_attn_length: 64, max_chunk_size: 128 }, { minimal: true, tokenizer: 'code-llama-19m' });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('reads the project repository, explains every skip, and re-reads nothing the second time', async (t) => {
  const storage = path.join(tmp, 'storage');
  const args = ['memory', pkg, '--workspace', ROOT, '--storage', storage, '--provider', 'cpu'];
  const first = await runTitan([...args, '--json'], { timeoutMs: 900_000 });
  assert.equal(first.code, 0, first.stderr);
  const s1 = JSON.parse(first.stdout) as MemoryStats;
  const discovered = await discoverWorkspace([ROOT]);
  assert.equal(s1.filesRead, discovered.files.length);
  assert.deepEqual(s1.filesSkipped.map((s) => s.path).sort(), discovered.skipped.map((s) => s.path).sort());
  assert.ok(s1.filesSkipped.some((s) => s.path === 'package-lock.json' && s.reason === 'lock-file'));
  for (const s of s1.filesSkipped) assert.ok(s.reason && s.detail, JSON.stringify(s));
  assert.equal(s1.tokensReread, s1.tokensIngested);
  t.diagnostic(`first run: ${s1.filesRead} files, ${s1.filesSkipped.length} skipped, ${s1.tokensIngested} tokens in ${s1.seconds.toFixed(1)} s (${s1.tokensPerSecond.toFixed(0)} tokens/s), state ${s1.stateBytes} bytes, checkpoints ${s1.checkpointBytes} bytes`);

  const second = await runTitan(args, { timeoutMs: 300_000 });
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /^tokens re-read: +0 \(resumed from the checkpoint at \d+\)$/m);
  assert.match(second.stdout, new RegExp(`^tokens ingested: +${s1.tokensIngested}$`, 'm'));
  assert.match(second.stdout, /^ {2}package-lock\.json: lock-file \(.+\)$/m);
  t.diagnostic(second.stdout.split('\n').filter((l) => /^(seconds|tokens re-read)/.test(l)).join('; '));
});
