// `titanize --run-tokens`: the run length is how many tokens one graph run takes, a speed setting
// only. A package with longer runs (more chunk slots per graph) gives the logits of the default one,
// over a stream long enough to span several runs of both; bad values are refused in one line.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelError } from '../../engine/model/errors';
import { ModelRunner } from '../../engine/runtime/session';
import { titanize } from '../../engine/titanize/titanize';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { maxAbsDiff } from '../helpers/compare';
import { TEST_MAG_WEIGHT } from '../helpers/workspace';

test('titanize --run-tokens: longer runs give the same logits; bad run lengths are refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-run-length-'));
  try {
    const ckpt = await writeRandomCheckpoint(path.join(dir, 'hf'), { arch: 'llama', seed: 5 });
    const settings = { operator_mode: 'delta_rule', mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 24, max_chunk_size: 8 };
    const short = titanize(ckpt.dir, path.join(dir, 'short'), settings, { runTokens: 16 }).pkg;
    const long = titanize(ckpt.dir, path.join(dir, 'long'), settings, { runTokens: 72 }).pkg;
    assert.equal(short.manifest.runCapacity, 16);
    assert.equal(long.manifest.runCapacity, 72);
    const ids = Array.from({ length: 150 }, (_, i) => (i * 71) % 250 + 3);
    const rows = Array.from({ length: ids.length }, (_, i) => i);
    const logits = async (dir: string) => {
      const runner = await ModelRunner.open(dir, { provider: 'cpu' });
      try {
        // One call and then calls that end mid-run, so runs start at other chunk offsets too.
        const whole = await runner.forward(ids, rows);
        runner.reset();
        const parts: Float32Array[] = [];
        for (const [a, b] of [[0, 37], [37, 38], [38, 150]]) parts.push(...(await runner.forward(ids.slice(a, b), Array.from({ length: b - a }, (_, i) => i))));
        return { whole, parts };
      } finally {
        await runner.release();
      }
    };
    const a = await logits(short.dir);
    const b = await logits(long.dir);
    const worst = (x: Float32Array[], y: Float32Array[]) => Math.max(...x.map((row, i) => maxAbsDiff(row, y[i])));
    assert.ok(worst(a.whole, b.whole) < 1e-4, `one call: runs of 16 vs 72 differ by ${worst(a.whole, b.whole)}`);
    assert.ok(worst(a.parts, b.parts) < 1e-4, `split calls: runs of 16 vs 72 differ by ${worst(a.parts, b.parts)}`);
    assert.ok(worst(b.whole, b.parts) < 1e-4, `runs of 72: one call vs split calls differ by ${worst(b.whole, b.parts)}`);

    for (const [runTokens, pattern] of [[4, /from the chunk size \(8\) to 8192, got 4/], [9000, /got 9000/], [20.5, /whole number/]] as const) {
      assert.throws(() => titanize(ckpt.dir, path.join(dir, 'bad'), settings, { runTokens }), (e: unknown) => e instanceof ModelError && pattern.test(e.message) && !e.message.includes('\n'));
    }
    assert.throws(() => titanize(ckpt.dir, path.join(dir, 'bad'), { ...settings, operator_mode: 'gated_delta_rule' }, { runTokens: 64 }), /applies only to exact-semantics packages without per-column decay/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
