// Comparing logits rows: the largest absolute difference, argmax, and one assertion that names the
// position and the figure when it fails.
import assert from 'node:assert/strict';

type Row = ArrayLike<number>;

export function maxAbsDiff(a: Row, b: Row): number {
  assert.equal(a.length, b.length, `rows differ in length: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    // NaN never compares greater: count it as an infinite difference.
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

export function argmaxOf(row: Row): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Difference between the largest and second-largest value (how clear the argmax is). */
export function topMargin(row: Row): number {
  let first = -Infinity;
  let second = -Infinity;
  for (let i = 0; i < row.length; i++) {
    if (row[i] > first) [first, second] = [row[i], first];
    else if (row[i] > second) second = row[i];
  }
  return first - second;
}

/**
 * Asserts every row pair is within `tolerance` (max absolute difference) and returns the worst
 * difference seen; `label(i)` names row i in the failure message.
 */
export function assertRowsClose(actual: readonly Row[], expected: readonly Row[], tolerance: number, label: (i: number) => string): number {
  assert.equal(actual.length, expected.length, 'different numbers of rows');
  let worst = 0;
  actual.forEach((row, i) => {
    const d = maxAbsDiff(row, expected[i]);
    worst = Math.max(worst, d);
    assert.ok(d <= tolerance, `${label(i)}: max |logit diff| ${d.toExponential(3)} > ${tolerance}`);
  });
  return worst;
}

export function allFinite(row: Row): boolean {
  for (let i = 0; i < row.length; i++) if (!Number.isFinite(row[i])) return false;
  return true;
}
