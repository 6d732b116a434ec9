// SIGKILL during `titan titanize`, at random moments, again and again, both into a new folder and over
// an existing package: afterwards the output folder is either absent or a complete package (its
// manifest reads, every graph and weight file is there, weights.bin holds every tensor the manifest
// lists) — never half-written — and the next conversion succeeds and leaves no temporary folder.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readPackage } from '../../engine/titanize/package';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { CLI_BUNDLE, ensureEngineBundle } from './engine-bundle';
import { tracked } from './record';

const KILLS = Number(process.env.TITAN_FAULT_REPEATS ?? 10);
let tmp = '';
let hf = '';

function titanize(out: string): ReturnType<typeof spawn> {
  return spawn(process.execPath, [CLI_BUNDLE, 'titanize', hf, '--out', out, '--window', '64', '--chunk', '16'], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function finished(child: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const err: Buffer[] = [];
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr: Buffer.concat(err).toString('utf8') })));
}

/** Why `dir` is not a complete package, or null when it is. */
function incomplete(dir: string): string | null {
  try {
    const pkg = readPackage(dir);
    const weights = fs.statSync(path.join(dir, pkg.manifest.weights.file)).size;
    const need = Math.max(...Object.values(pkg.manifest.weights.tensors).map((t) => t.offset + t.length));
    if (weights < need) return `weights.bin has ${weights} bytes, the manifest needs ${need}`;
    for (const f of pkg.manifest.tokenizerFiles) if (!fs.existsSync(path.join(dir, f))) return `${f} missing`;
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

before(async () => {
  ensureEngineBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-titanize-kill-'));
  hf = path.join(tmp, 'hf');
  await writeRandomCheckpoint(hf, { arch: 'llama', hiddenSize: 64, numLayers: 4, intermediateSize: 256, vocabSize: 300 });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it(`a package survives ${KILLS} SIGKILLs of titan titanize at random moments`, { timeout: 900_000 }, async () => {
  await tracked('faults-titanize', {
    section: 'fault',
    name: 'SIGKILL during titan titanize',
    injected: `SIGKILL at a random moment of the conversion (uniform over a clean run's duration), ${KILLS}× into a new folder and ${KILLS}× over an existing package`,
    expected: 'output absent or a complete, readable package (never half-written); the next conversion succeeds; no temporary folder left after it',
  }, async (figures) => {
    // A clean run: how long a conversion takes, so kills land all over it.
    const clean = path.join(tmp, 'clean');
    const t0 = performance.now();
    const r = await finished(titanize(clean));
    const cleanMs = performance.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(incomplete(clean), null);
    figures['clean run ms'] = Math.round(cleanMs);
    let seed = 12345;
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const outcomes: Record<string, number> = { absent: 0, complete: 0, 'old package kept': 0, 'finished before the kill': 0 };
    for (const mode of ['new', 'over existing'] as const) {
      const out = path.join(tmp, `out-${mode.replace(' ', '-')}`);
      for (let i = 0; i < KILLS; i++) {
        if (mode === 'new') fs.rmSync(out, { recursive: true, force: true });
        else if (incomplete(out) !== null) assert.equal((await finished(titanize(out))).code, 0);
        const before = mode === 'over existing' ? readPackage(out).manifest.createdAt : null;
        const child = titanize(out);
        const done = finished(child);
        await sleep(random() * cleanMs);
        child.kill('SIGKILL');
        const end = await done;
        if (end.signal !== 'SIGKILL') outcomes['finished before the kill']++;
        if (!fs.existsSync(out)) outcomes.absent++;
        else {
          const why = incomplete(out);
          assert.equal(why, null, `after kill ${i + 1} (${mode}), ${out} is half-written: ${why}`);
          if (before !== null && readPackage(out).manifest.createdAt === before) outcomes['old package kept']++;
          else outcomes.complete++;
        }
      }
      // The next operation succeeds and cleans up after the killed runs.
      const next = await finished(titanize(out));
      assert.equal(next.code, 0, `conversion after the kills failed: ${next.stderr}`);
      assert.equal(incomplete(out), null);
      const leftovers = fs.readdirSync(tmp).filter((n) => n.startsWith(`${path.basename(out)}.tmp-`));
      figures[`temporary folders left (${mode})`] = leftovers.length;
      assert.deepEqual(leftovers, [], 'temporary folders of killed conversions are left behind');
    }
    Object.assign(figures, outcomes, { kills: 2 * KILLS });
  });
});
