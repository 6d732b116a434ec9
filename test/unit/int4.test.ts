// The int4 block quantizer (engine/titanize/int4.ts): the MatMulNBits bit layout on a hand-made
// block, and error properties against a textbook round-to-nearest written here independently.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readForm } from '../../engine/server/settings-form';
import { dequantizeInt4, INT4_DEFAULTS, quantizeInt4, resolveQuantization, validateQuantization } from '../../engine/titanize/int4';
import { seededRandom } from '../../engine/util/random';

/** Roughly normal weights with a few outliers, like a trained projection's rows. */
function weights(N: number, K: number, seed: number): Float32Array {
  const rand = seededRandom(seed);
  const w = new Float32Array(N * K);
  for (let i = 0; i < w.length; i++) {
    const g = (rand() + rand() + rand() + rand() - 2) * 0.05;
    w[i] = rand() < 0.01 ? g * 8 : g;
  }
  return w;
}

/** Textbook asymmetric (or absmax symmetric) round-to-nearest of one block, no range search: its squared error. */
function plainRoundingError(block: Float32Array, symmetric: boolean): number {
  let lo = 0;
  let hi = 0;
  let extreme = 0;
  for (const v of block) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
    if (Math.abs(v) > Math.abs(extreme)) extreme = v;
  }
  const scale = symmetric ? extreme / -8 : (hi - lo) / 15;
  if (scale === 0) return 0;
  const zero = symmetric ? 8 : Math.min(15, Math.max(0, Math.round(-lo / scale)));
  let error = 0;
  for (const v of block) {
    const q = Math.min(15, Math.max(0, Math.round(v / scale) + zero));
    error += (v - (q - zero) * scale) ** 2;
  }
  return error;
}

describe('int4 quantizer', () => {
  it('packs codes low nibble first along K, one zero point nibble per block (MatMulNBits layout)', () => {
    // One row, two blocks of 16: 0, 0.1, …, 1.5 is exactly codes 0..15 with scale 0.1 and zero point 0;
    // the second block is all zeros (scale 0, zero point 8, codes 8).
    const w = new Float32Array(32);
    for (let k = 0; k < 16; k++) w[k] = Math.fround(k * 0.1);
    const q = quantizeInt4(w, 1, 32, 16, false);
    assert.deepEqual([...q.codes.slice(0, 8)], [0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe]);
    assert.deepEqual([...q.codes.slice(8)], Array(8).fill(0x88));
    assert.ok(Math.abs(q.scales[0] - 0.1) < 1e-7, `scale ${q.scales[0]}`);
    assert.equal(q.scales[1], 0);
    assert.deepEqual([...q.zeroPoints!], [0x80]); // block 0 → low nibble 0, block 1 → high nibble 8
    const back = dequantizeInt4(q);
    for (let k = 0; k < 32; k++) assert.ok(Math.abs(back[k] - w[k]) < 1e-6, `value ${k}: ${back[k]} vs ${w[k]}`);
  });

  for (const symmetric of [false, true]) {
    for (const [K, blockSize] of [
      [384, 16],
      [384, 32],
      [1024, 128],
      [40, 16],
    ] as const) {
      it(`${symmetric ? 'symmetric' : 'asymmetric'}, K ${K}, block ${blockSize}: every block does at least as well as plain rounding; zeros stay zero`, () => {
        const N = 24;
        const w = weights(N, K, K + blockSize + (symmetric ? 1 : 0));
        w[5] = 0; // an exact zero must survive
        const q = quantizeInt4(w, N, K, blockSize, symmetric);
        const kBlocks = Math.ceil(K / blockSize);
        assert.equal(q.codes.length, N * kBlocks * (blockSize / 2));
        assert.equal(q.scales.length, N * kBlocks);
        assert.equal(q.zeroPoints === null, symmetric);
        if (q.zeroPoints) assert.equal(q.zeroPoints.length, N * Math.ceil(kBlocks / 2));
        const back = dequantizeInt4(q);
        assert.ok(back[5] === 0, `zero came back as ${back[5]}`); // −0 (a negative scale times 0) counts
        let total = 0;
        let energy = 0;
        for (let n = 0; n < N; n++) {
          for (let b = 0; b < kBlocks; b++) {
            const from = n * K + b * blockSize;
            const to = n * K + Math.min(K, (b + 1) * blockSize);
            let error = 0;
            for (let i = from; i < to; i++) error += (w[i] - back[i]) ** 2;
            const plain = plainRoundingError(w.subarray(from, to), symmetric);
            assert.ok(error <= plain * (1 + 1e-6) + 1e-12, `row ${n} block ${b}: squared error ${error} above plain rounding's ${plain}`);
            total += error;
            for (let i = from; i < to; i++) energy += w[i] ** 2;
          }
        }
        // 4 bits leave 1/15 of a block's range per step: a relative error of several percent (more with
        // outliers in large symmetric blocks), far from the ~100 % of codes read in the wrong order.
        assert.ok(Math.sqrt(total / energy) < 0.3, `relative RMS error ${Math.sqrt(total / energy)}`);
        // Padding past K (K 40 in blocks of 16) holds the block's zero point: it dequantizes to 0.
        if (K % blockSize) {
          const lastBlock = kBlocks - 1;
          const zero = q.zeroPoints ? (q.zeroPoints[lastBlock >> 1] >> (lastBlock & 1 ? 4 : 0)) & 15 : 8;
          const byte = q.codes[lastBlock * (blockSize / 2) + ((K % blockSize) >> 1)];
          assert.equal(byte & 15, zero);
          assert.equal(byte >> 4, zero);
        }
      });
    }
  }

  it('refuses block sizes MatMulNBits does not take, and unknown settings, with one message each', () => {
    assert.throws(() => quantizeInt4(new Float32Array(48), 1, 48, 48, false), /block size must be one of 16, 32, 64, 128, 256, got 48/);
    assert.deepEqual(validateQuantization({ blockSize: 32, accuracyLevel: 4, symmetric: true, head: 'keep' }), []);
    const errors = validateQuantization({ blockSize: 12, accuracyLevel: 2, symmetric: 'yes' as unknown as boolean });
    assert.equal(errors.length, 3, errors.join('\n'));
    assert.throws(() => resolveQuantization({ blockSize: 8 }), /invalid quantization: quantization block size/);
    assert.deepEqual(resolveQuantization({}), { method: 'int4', blockSize: 16, symmetric: false, head: 'int8', accuracyLevel: 4 });
  });

  it('the Titanize form\'s precision "int4" means fp32 compute with the CLI\'s int4 defaults', () => {
    const int4 = readForm({ dtype: 'int4' });
    assert.deepEqual([int4.dtype, int4.quantization, int4.errors], ['fp32', INT4_DEFAULTS, []]);
    assert.equal(readForm({ dtype: 'fp16' }).quantization, null);
    assert.match(readForm({ dtype: 'int3' }).errors[0].message, /precision must be fp32 or fp16 \(or int4: 4-bit projection weights\), got "int3"/);
  });
});
