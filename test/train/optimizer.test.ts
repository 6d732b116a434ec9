// The optimizer and schedules of engine/train/optimizer.ts against their definitions: AdamW as
// torch.optim.AdamW computes it (recomputed here in float64 from the formula), global-norm clipping,
// warmup + cosine learning rate, and the three μ schedules of the paper / tptt's LiZACallback.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { adamwStep, clipGradients, globalNorm, learningRate, magSchedule, magWeightAt, newParamState } from '../../engine/train/optimizer';

describe('AdamW', () => {
  test('three steps match torch.optim.AdamW computed in float64', () => {
    const o = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const lr = 0.05;
    const p = newParamState('w', Float32Array.from([0.5, -1.25, 2, 0]));
    const ref = { w: [0.5, -1.25, 2, 0], m: [0, 0, 0, 0], v: [0, 0, 0, 0] };
    const gradients = [
      [0.1, -0.2, 0.3, 0],
      [-0.5, 0.25, 0.125, 1],
      [0.01, 0.02, -0.03, -1],
    ];
    gradients.forEach((gr, k) => {
      const t = k + 1;
      adamwStep([p], [Float32Array.from(gr)], t, lr, o);
      for (let i = 0; i < 4; i++) {
        ref.w[i] *= 1 - lr * o.weightDecay;
        ref.m[i] = o.beta1 * ref.m[i] + (1 - o.beta1) * gr[i];
        ref.v[i] = o.beta2 * ref.v[i] + (1 - o.beta2) * gr[i] * gr[i];
        const mHat = ref.m[i] / (1 - o.beta1 ** t);
        const vHat = ref.v[i] / (1 - o.beta2 ** t);
        ref.w[i] -= (lr * mHat) / (Math.sqrt(vHat) + o.eps);
      }
    });
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(p.value[i] - ref.w[i]) < 1e-6, `w[${i}] ${p.value[i]} vs ${ref.w[i]}`);
  });
  test("the first step moves each weight by lr against the gradient's sign, whatever its scale", () => {
    const p = newParamState('w', Float32Array.from([0, 0]));
    adamwStep([p], [Float32Array.from([1e-3, -50])], 1, 0.01, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    assert.ok(Math.abs(p.value[0] + 0.01) < 1e-6 && Math.abs(p.value[1] - 0.01) < 1e-6, `${Array.from(p.value)}`);
  });
  test('weight decay shrinks weights even without gradient', () => {
    const p = newParamState('w', Float32Array.from([1, -2]));
    adamwStep([p], [new Float32Array(2)], 1, 0.1, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 });
    assert.deepEqual(Array.from(p.value), [0.95, -1.9].map(Math.fround));
  });
});

describe('gradient clipping', () => {
  test('scales the global norm down to the limit and leaves small gradients alone', () => {
    const g = [Float32Array.from([3, 0]), Float32Array.from([0, 4])];
    assert.equal(clipGradients(g, 1), 5);
    assert.ok(Math.abs(globalNorm(g) - 1) < 1e-5);
    const small = [Float32Array.from([0.3, 0.4])];
    clipGradients(small, 1);
    assert.deepEqual(Array.from(small[0]), [0.3, 0.4].map(Math.fround));
    const off = [Float32Array.from([30, 40])];
    clipGradients(off, 0);
    assert.deepEqual(Array.from(off[0]), [30, 40]);
  });
});

describe('learning rate: linear warmup, cosine decay', () => {
  test('ramps up over the warmup, peaks, decays to the floor', () => {
    const peak = 5e-4;
    assert.equal(learningRate(0, 100, peak, 10), peak / 10);
    assert.equal(learningRate(9, 100, peak, 10), peak);
    assert.ok(Math.abs(learningRate(10, 100, peak, 10) - peak) < 1e-12);
    assert.ok(Math.abs(learningRate(55, 100, peak, 10) - peak / 2) < 1e-12, 'half way through the decay: half the peak');
    assert.ok(learningRate(99, 100, peak, 10) < peak * 0.001);
    assert.ok(Math.abs(learningRate(100, 100, peak, 10, 1e-5) - 1e-5) < 1e-12);
    for (let s = 11; s < 100; s++) assert.ok(learningRate(s, 100, peak, 10) <= learningRate(s - 1, 100, peak, 10));
  });
});

describe('μ schedules', () => {
  test('constant holds the package μ', () => {
    const s = magSchedule('constant', 0.5);
    assert.deepEqual([0, 1, 1000].map((k) => magWeightAt(s, k)), [0.5, 0.5, 0.5]);
  });
  test('gradual: 0.01 → 0.5 over the first 100 steps, then 0.5', () => {
    const s = magSchedule('gradual', 0.5);
    assert.equal(magWeightAt(s, 0), 0.01);
    assert.ok(Math.abs(magWeightAt(s, 50) - 0.255) < 1e-12);
    assert.equal(magWeightAt(s, 100), 0.5);
    assert.equal(magWeightAt(s, 250), 0.5);
  });
  test('cyclic: 0, 0.5, 1 in turn', () => {
    const s = magSchedule('cyclic', 0.5);
    assert.deepEqual([0, 1, 2, 3, 4, 5].map((k) => magWeightAt(s, k)), [0, 0.5, 1, 0, 0.5, 1]);
  });
  test('bad schedules are one-line errors', () => {
    assert.throws(() => magSchedule('wavy' as never, 0.5), /μ schedule must be one of constant, gradual, cyclic/);
    assert.throws(() => magSchedule('cyclic', 0.5, { cycle: [0, 2] }), /μ values must be in \[0, 1\]/);
  });
});
