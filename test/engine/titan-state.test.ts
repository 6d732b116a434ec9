// The run state of Titan packages. Saving and restoring: save → restore → continue gives the logits
// of never stopping — in the same runner, in a fresh runner, and through the worker — and blobs that
// are corrupt, truncated or from another package/settings are refused with one clear line, leaving
// the runner's state as it was. Size: memory stays flat over a 100,000-token stream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ModelRunner } from '../../engine/runtime/session';
import { decodeState, encodeState } from '../../engine/runtime/state-blob';
import { WorkerModel } from '../../engine/runtime/worker-client';
import { writePackage } from '../../engine/titanize/package';
import type { TpttSettingsInput } from '../../engine/titanize/settings';
import { titanize } from '../../engine/titanize/titanize';
import { maxAbsDiff } from '../helpers/compare';
import { DEMO_MODEL_DIR, REPO_ROOT } from '../helpers/goldens';
import { TEST_MAG_WEIGHT } from '../helpers/workspace';

/** Same package, same inputs, same run plan: restoring must reproduce the logits (float32 noise at most). */
const SAME = 1e-6;
const SPLIT = 70; // tokens before the save
const TOTAL = 120;

let tmp: string;
let ids: number[];
let detour: number[];

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-state-'));
  const tokenizer = loadTokenizer(DEMO_MODEL_DIR);
  ids = tokenizer.encode(fs.readFileSync(path.join(REPO_ROOT, 'engine/runtime/state-blob.ts'), 'utf8')).slice(0, TOTAL);
  detour = tokenizer.encode('def unrelated(x):\n    return [y * 2 for y in x if y % 3]\n');
  assert.equal(ids.length, TOTAL);
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function worstDiff(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length);
  return Math.max(...a.map((row, i) => maxAbsDiff(row, b[i])));
}

/** `fn` throws (or rejects with) a ModelError whose one-line message matches `pattern`. */
async function rejectsWith(fn: () => unknown, pattern: RegExp): Promise<string> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof ModelError, `expected a ModelError, got ${error === undefined ? 'no error' : `${(error as Error).name}: ${(error as Error).message}`}`);
  assert.ok(!error.message.includes('\n'), `not one line: ${JSON.stringify(error.message)}`);
  assert.match(error.message, pattern);
  return error.message;
}

const rest = (): number[] => ids.slice(SPLIT);
const restRows = (): number[] => rest().map((_, i) => i);

const PACKAGES: { name: string; settings: TpttSettingsInput }[] = [
  // Order 2 (virtual-token history in the state), gated α, a window shorter than the stream, chunks
  // of 16 so the save falls inside a chunk (70 = 4·16 + 6).
  { name: 'exact gated_delta_product, window 32, chunk 16', settings: { operator_mode: 'gated_delta_product', mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 32, max_chunk_size: 16, semantics: 'exact' } },
  { name: 'tptt-0.12 delta_product_c', settings: { operator_mode: 'delta_product_c', mag_weight: TEST_MAG_WEIGHT, semantics: 'tptt-0.12' } },
];

for (const spec of PACKAGES) {
  describe(`state save/restore: ${spec.name}`, () => {
    let pkg: string;
    let runner: ModelRunner;
    let uninterrupted: Float32Array[];

    before(async () => {
      pkg = titanize(DEMO_MODEL_DIR, path.join(tmp, spec.name.replace(/\W+/g, '-')), spec.settings).pkg.dir;
      runner = await ModelRunner.open(pkg, { provider: 'cpu' });
      await runner.forward(ids.slice(0, SPLIT), [SPLIT - 1]);
      uninterrupted = await runner.forward(rest(), restRows());
    });
    after(async () => {
      await runner?.release();
    });

    /** A blob saved after the first SPLIT tokens. */
    async function blobAtSplit(): Promise<Buffer> {
      runner.reset();
      await runner.forward(ids.slice(0, SPLIT), [SPLIT - 1]);
      return await runner.saveState();
    }

    test('save → (other tokens) → restore → continue equals never stopping, in the same runner', async (t) => {
      const blob = await blobAtSplit();
      await runner.forward(detour, [0]); // move the state elsewhere
      const moved = await runner.forward(rest(), [0]);
      assert.ok(maxAbsDiff(moved[0], uninterrupted[0]) > 1e-2, 'the detour did not change the state: this test would prove nothing');
      runner.loadState(blob);
      assert.equal(runner.position, SPLIT);
      const resumed = await runner.forward(rest(), restRows());
      const d = worstDiff(resumed, uninterrupted);
      assert.ok(d <= SAME, `max |logit diff| ${d.toExponential(3)}`);
      t.diagnostic(`blob ${(blob.length / 1024).toFixed(0)} KiB, max |logit diff| ${d.toExponential(2)}`);
    });

    test('a fresh runner restored from the blob continues identically', async () => {
      const blob = await blobAtSplit();
      const fresh = await ModelRunner.open(pkg, { provider: 'cpu' });
      try {
        fresh.loadState(blob);
        assert.equal(fresh.position, SPLIT);
        const d = worstDiff(await fresh.forward(rest(), restRows()), uninterrupted);
        assert.ok(d <= SAME, `max |logit diff| ${d.toExponential(3)}`);
        // What it saves at the same point is the same state, byte for byte.
        fresh.reset();
        await fresh.forward(ids.slice(0, SPLIT), [SPLIT - 1]);
        assert.ok((await fresh.saveState()).equals(blob), 'two runners saved different blobs for the same stream');
      } finally {
        await fresh.release();
      }
    });

    test('through the worker: a blob from the runner restores there, and the worker\'s blob restores in a runner', async () => {
      const blob = await blobAtSplit();
      const worker = await WorkerModel.open(pkg, { provider: 'cpu' });
      try {
        await worker.forward(detour, [0]);
        await worker.loadState(blob);
        assert.equal(worker.position, SPLIT);
        let d = worstDiff(await worker.forward(rest(), restRows()), uninterrupted);
        assert.ok(d <= SAME, `worker after restore: max |logit diff| ${d.toExponential(3)}`);

        await worker.reset();
        await worker.forward(ids.slice(0, SPLIT), [SPLIT - 1]);
        const workerBlob = await worker.saveState();
        runner.reset();
        runner.loadState(workerBlob);
        d = worstDiff(await runner.forward(rest(), restRows()), uninterrupted);
        assert.ok(d <= SAME, `runner restored from the worker's blob: max |logit diff| ${d.toExponential(3)}`);

        // Refusals cross the thread as ModelErrors too.
        const bad = Buffer.from(workerBlob);
        bad[bad.length >> 1] ^= 0xff;
        await rejectsWith(() => worker.loadState(bad), /checksum/);
        assert.equal(worker.position, SPLIT);
      } finally {
        await worker.release();
      }
    });

    test('corrupt and truncated blobs are refused with a clear error, and the state is left as it was', async () => {
      const blob = await blobAtSplit();
      const cases: [string, Buffer, RegExp][] = [];
      for (const at of [12, blob.length >> 1, blob.length - 40, blob.length - 1]) {
        const flipped = Buffer.from(blob);
        flipped[at] ^= 0x01;
        cases.push([`one bit flipped at byte ${at}`, flipped, /state blob: (checksum mismatch|not a Titan state)/]);
      }
      cases.push(['cut to half its length', blob.subarray(0, blob.length >> 1), /state blob: checksum mismatch/]);
      cases.push(['last byte missing', blob.subarray(0, blob.length - 1), /state blob: checksum mismatch/]);
      cases.push(['cut to 16 bytes', blob.subarray(0, 16), /state blob: not a Titan state/]);
      cases.push(['empty', Buffer.alloc(0), /state blob: not a Titan state/]);
      cases.push(['not a state at all', Buffer.from(fs.readFileSync(path.join(pkg, 'titan-package.json'))), /state blob: not a Titan state/]);
      // Intact (checksum and package key right) but a tensor of the wrong shape, as a buggy writer would leave it.
      const snap = decodeState(blob);
      const i = snap.tensors.findIndex((x) => /^state_in\.0\.S$/.test(x.name));
      assert.ok(i >= 0, `no state_in.0.S among ${snap.tensors.map((x) => x.name).join(', ')}`);
      const [, ...rest] = snap.tensors[i].dims;
      const shrunk = { ...snap.tensors[i], dims: [1, ...rest.map(() => 1)], data: snap.tensors[i].data.slice(0, 1) };
      const reshaped = encodeState({ ...snap, tensors: snap.tensors.map((x, j) => (j === i ? shrunk : x)) });
      cases.push(['a tensor of the wrong shape', reshaped, /state blob: state_in\.0\.S has shape \[1(,1)*\], the graph expects/]);

      // Move on from the save point; every refused load must leave this state alone.
      await runner.forward(detour, [0]);
      const position = runner.position;
      const expectedNext = (await runner.forward([ids[SPLIT]], [0]))[0];
      runner.loadState(blob);
      await runner.forward(detour, [0]);
      for (const [what, bytes, pattern] of cases) {
        await rejectsWith(() => runner.loadState(bytes), pattern).catch((e: Error) => assert.fail(`${what}: ${e.message}`));
        assert.equal(runner.position, position, `${what}: position changed by a refused load`);
      }
      const next = (await runner.forward([ids[SPLIT]], [0]))[0];
      assert.ok(maxAbsDiff(next, expectedNext) <= SAME, 'a refused load changed the state');
    });
  });
}

describe('state blobs are tied to their package and settings', () => {
  test('a blob from another package, other TPTT settings, another window or the base model is refused', async () => {
    const made = (name: string, settings: TpttSettingsInput): string => titanize(DEMO_MODEL_DIR, path.join(tmp, `key-${name}`), settings).pkg.dir;
    const settings: TpttSettingsInput = { operator_mode: 'delta_rule', max_self_attn_length: 64, max_chunk_size: 32 };
    const packages = {
      reference: made('reference', settings),
      sameAgain: made('same-again', settings),
      otherMu: made('other-mu', { ...settings, mag_weight: 0.25 }),
      otherWindow: made('other-window', { ...settings, max_self_attn_length: 128 }),
      otherChunk: made('other-chunk', { ...settings, max_chunk_size: 64 }),
      otherSemantics: made('other-semantics', { ...settings, semantics: 'tptt-0.12' }),
      base: writePackage(DEMO_MODEL_DIR, path.join(tmp, 'key-base'), { dtype: 'fp32', window: null, kind: 'base' }).dir,
      fp16: titanize(DEMO_MODEL_DIR, path.join(tmp, 'key-fp16'), settings, { dtype: 'fp16' }).pkg.dir,
    };
    const blobOf = async (dir: string): Promise<Buffer> => {
      const r = await ModelRunner.open(dir, { provider: 'cpu' });
      try {
        await r.forward(ids.slice(0, 40), [39]);
        return await r.saveState();
      } finally {
        await r.release();
      }
    };
    const target = await ModelRunner.open(packages.reference, { provider: 'cpu' });
    try {
      // The same conversion written twice is the same package: its blobs load.
      target.loadState(await blobOf(packages.sameAgain));
      assert.equal(target.position, 40);
      for (const name of ['otherMu', 'otherWindow', 'otherChunk', 'otherSemantics', 'base', 'fp16'] as const) {
        const blob = await blobOf(packages[name]);
        await rejectsWith(() => target.loadState(blob), /state blob: saved by a different model package or TPTT configuration/).catch((e: Error) => assert.fail(`${name}: ${e.message}`));
      }
      // A blob of the base model into a Titan runner is refused the other way round too.
      const baseRunner = await ModelRunner.open(packages.base, { provider: 'cpu' });
      try {
        await rejectsWith(async () => baseRunner.loadState(await blobOf(packages.reference)), /different model package/);
      } finally {
        await baseRunner.release();
      }
    } finally {
      await target.release();
    }
  });
});

describe('constant memory over a long stream', () => {
  // 100,000 tokens through a window-512 package in a child process, sampling its RSS. The state is
  // fixed-size (KV window + linear state), so after warm-up the RSS must stay flat: the last sample
  // (and every one after warm-up) at most 64 MiB above the sample at 10,000 tokens. Calls of 512
  // tokens, the package's run capacity, as ingestion feeds it (64-token calls are ~3x slower: ~600
  // tokens/s on two idle cores). TITAN_LONG_TESTS=0 runs 20,000 tokens instead.
  const TOTAL_TOKENS = process.env.TITAN_LONG_TESTS === '0' ? 20_000 : 100_000;
  const WARM = 10_000;
  const EVERY = 2_000;
  const CALL = 512;
  const BOUND = 64 * 2 ** 20;

  test(`${TOTAL_TOKENS.toLocaleString('en')} tokens, window 512, chunk 64: RSS after ${WARM.toLocaleString('en')} tokens grows by < 64 MiB, logits stay finite`, { timeout: 30 * 60_000 }, async (t) => {
    const pkg = titanize(DEMO_MODEL_DIR, path.join(tmp, 'long'), { operator_mode: 'delta_rule', mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 512, max_chunk_size: 64 }).pkg.dir;
    const probe = path.join(REPO_ROOT, 'test/helpers/memory-probe.ts');
    const { stdout, stderr, code } = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', probe, pkg, String(TOTAL_TOKENS), String(EVERY), String(CALL)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.on('error', reject);
      child.on('close', (c) => resolve({ stdout: out, stderr: err, code: c }));
    });
    assert.equal(code, 0, `memory probe failed: ${stderr}`);
    const samples = stdout.trim().split('\n').map((line) => JSON.parse(line) as { tokens: number; rss: number; seconds: number; finite: boolean; done?: boolean });
    const done = samples.pop()!;
    assert.ok(done.done, 'the probe did not finish');
    assert.equal(samples[samples.length - 1].tokens, TOTAL_TOKENS);
    assert.ok(done.finite, 'non-finite logits in the stream');
    const at = (n: number) => samples.find((s) => s.tokens === n)!;
    const warm = at(WARM);
    const peakAfter = Math.max(...samples.filter((s) => s.tokens >= WARM).map((s) => s.rss));
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    const last = samples[samples.length - 1];
    const rate = (last.tokens - warm.tokens) / (last.seconds - warm.seconds);
    const marks = [WARM, TOTAL_TOKENS / 2, TOTAL_TOKENS].map((n) => `${n.toLocaleString('en')}: ${mib(at(n).rss)}`);
    t.diagnostic(`RSS at ${marks.join(', ')}; peak after warm-up ${mib(peakAfter)}; ${rate.toFixed(0)} tokens/s (calls of ${CALL}, ${done.seconds.toFixed(0)} s in all)`);
    assert.ok(last.rss <= warm.rss + BOUND, `RSS grew from ${mib(warm.rss)} at ${WARM} tokens to ${mib(last.rss)} at ${TOTAL_TOKENS}`);
    assert.ok(peakAfter <= warm.rss + BOUND, `RSS peaked at ${mib(peakAfter)} after warm-up (${mib(warm.rss)} at ${WARM} tokens)`);
  });
});
