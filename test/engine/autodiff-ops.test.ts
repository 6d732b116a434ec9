// Every gradient rule of engine/graph/autodiff against central finite differences in float64
// (test/train/gradcheck.ts: |fd − analytic| ≤ 1e-6·(|analytic| + rms(gradient)) + 1e-10), each op on
// small random inputs with broadcasting, negative axes and the attribute variants the graphs use.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { GraphBuilder, Value } from '../../engine/graph/builder';
import { DIFFERENTIABLE_OPS, gradients } from '../../engine/graph/autodiff';
import { GraphBuilder as Builder } from '../../engine/graph/builder';
import { gradCheck, type Param } from '../train/gradcheck';

interface OpCase {
  name: string;
  /** The ops the case exercises (every differentiable op must appear in some case). */
  ops: string[];
  build(g: GraphBuilder): { params: Param[]; output: Value };
}

const param = (g: GraphBuilder, name: string, shape: number[], low = -1, high = 1): Param => ({ value: g.input(name, 'float32', shape), shape, low, high });
const unary = (op: string, low = -1.5, high = 1.5, attrs: Record<string, number> = {}): OpCase => ({
  name: op,
  ops: [op],
  build(g) {
    const x = param(g, 'x', [3, 4], low, high);
    return { params: [x], output: g.op(op, [x.value], attrs) };
  },
});
/** a ∘ b with both trained, b broadcast from `bShape`. */
const binary = (op: string, bShape: number[], ranges: [number, number, number, number] = [-1, 1, -1, 1]): OpCase => ({
  name: `${op} [2,3,4] with [${bShape}]`,
  ops: [op],
  build(g) {
    const a = param(g, 'a', [2, 3, 4], ranges[0], ranges[1]);
    const b = param(g, 'b', bShape, ranges[2], ranges[3]);
    return { params: [a, b], output: g.op(op, [a.value, b.value]) };
  },
});

const CASES: OpCase[] = [
  binary('Add', [4]),
  binary('Add', [3, 1]),
  binary('Sub', [2, 1, 4]),
  binary('Sub', []),
  binary('Mul', [3, 4]),
  binary('Mul', [1, 1, 1]),
  binary('Div', [4], [-1, 1, 0.5, 2]),
  binary('Div', [2, 3, 1], [-1, 1, -2, -0.5]),
  binary('Max', [3, 4]),
  binary('Min', [2, 1, 4]),
  {
    name: 'Pow x³ (constant exponent) and x^p (trained exponent)',
    ops: ['Pow'],
    build(g) {
      const x = param(g, 'x', [3, 4], 0.2, 2);
      const p = param(g, 'p', [4], 0.5, 2.5);
      return { params: [x, p], output: g.op('Add', [g.op('Pow', [x.value, g.float(3)]), g.op('Pow', [x.value, p.value])]) };
    },
  },
  {
    name: 'Where with a broadcast mask and a scalar branch',
    ops: ['Where'],
    build(g) {
      const a = param(g, 'a', [3, 4]);
      const b = param(g, 'b', [4]);
      const mask = g.constant('bool', [3, 1], [1, 0, 1]);
      return { params: [a, b], output: g.op('Add', [g.op('Where', [mask, a.value, b.value]), g.op('Where', [mask, g.float(-2), a.value])]) };
    },
  },
  unary('Neg'),
  unary('Exp'),
  unary('Log', 0.3, 3),
  unary('Sqrt', 0.3, 3),
  unary('Sigmoid', -3, 3),
  unary('Tanh', -2, 2),
  unary('Cos', -3, 3),
  unary('Sin', -3, 3),
  unary('Abs'),
  unary('Reciprocal', 0.5, 2),
  unary('Relu'),
  unary('Identity'),
  unary('Cast', -1, 1, { to: 1 }),
  {
    name: 'Reshape, Flatten, Squeeze, Unsqueeze',
    ops: ['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze'],
    build(g) {
      const x = param(g, 'x', [2, 1, 6]);
      const r = g.op('Reshape', [x.value, g.ints([0, 3, -1])]); // [2, 3, 2] (0 copies the dim)
      const u = g.op('Unsqueeze', [r, g.ints([0, 3])]); // [1, 2, 3, 1, 2]
      const s = g.op('Squeeze', [u, g.ints([-2])]); // [1, 2, 3, 2]
      return { params: [x], output: g.op('Flatten', [s], { axis: 2 }) }; // [2, 6]
    },
  },
  {
    name: 'Transpose and Expand',
    ops: ['Transpose', 'Expand'],
    build(g) {
      const x = param(g, 'x', [2, 1, 3]);
      const e = g.op('Expand', [x.value, g.ints([4, 2, 5, 3])]);
      return { params: [x], output: g.op('Transpose', [e], { perm: [2, 0, 3, 1] }) };
    },
  },
  {
    name: 'Concat of trained, constant and empty parts',
    ops: ['Concat'],
    build(g) {
      const a = param(g, 'a', [2, 3]);
      const b = param(g, 'b', [2, 1]);
      const c = g.constant('float32', [2, 2], [1, 2, 3, 4]);
      const empty = g.constant('float32', [2, 0], []);
      return { params: [a, b], output: g.op('Concat', [a.value, empty, c, b.value, a.value], { axis: -1 }) };
    },
  },
  {
    name: 'Split with an output left unused',
    ops: ['Split'],
    build(g) {
      const x = param(g, 'x', [3, 7]);
      const [p, , r] = g.op('Split', [x.value, g.ints([2, 3, 2])], { axis: 1 }, 3);
      return { params: [x], output: g.op('Concat', [p, r], { axis: 1 }) };
    },
  },
  {
    name: 'Slice with negative, clamped and partial axes',
    ops: ['Slice'],
    build(g) {
      const x = param(g, 'x', [4, 5, 3]);
      const a = g.op('Slice', [x.value, g.ints([1, -4]), g.ints([2 ** 62, -1]), g.ints([0, 1])]);
      const b = g.op('Slice', [x.value, g.ints([0, 1]), g.ints([3, 3]), g.ints([2, 0])]);
      const flat = (v: Value) => g.op('Reshape', [v, g.ints([-1])]);
      return { params: [x], output: g.op('Concat', [flat(a), flat(g.op('Exp', [b]))], { axis: 0 }) };
    },
  },
  {
    name: 'Pad with zeros, a value, and negative pads (crop)',
    ops: ['Pad'],
    build(g) {
      const x = param(g, 'x', [3, 4]);
      const a = g.op('Pad', [x.value, g.ints([1, 0, 2, 3])]); // [6, 7]
      const b = g.op('Pad', [x.value, g.ints([3, 2, 0, 1]), g.float(1)]); // [6, 7]
      const c = g.op('Pad', [g.op('Pad', [x.value, g.ints([2, -1, 1, 2])]), g.ints([0, 0, 0, 0])]); // [6, 5]
      return { params: [x], output: g.op('Concat', [a, b, c], { axis: 1 }) };
    },
  },
  {
    name: 'Gather: scalar index, contiguous range, repeated and negative indices, inner axis',
    ops: ['Gather'],
    build(g) {
      const x = param(g, 'x', [5, 3, 4]);
      const one = g.op('Gather', [x.value, g.int(-2)], { axis: 0 }); // [3, 4]
      const range = g.op('Gather', [x.value, g.ints([1, 2])], { axis: 1 }); // [5, 2, 4]
      const any = g.op('Gather', [x.value, g.constant('int64', [2, 2], [3, -1, 3, 0])], { axis: 2 }); // [5, 3, 2, 2]
      const rows = g.op('Gather', [x.value, g.ints([4, 0, 4])], { axis: 0 }); // [3, 3, 4]
      const parts = [
        g.op('ReduceSum', [one], { keepdims: 0 }),
        g.op('ReduceSum', [g.op('Mul', [range, range])], { keepdims: 0 }),
        g.op('ReduceSum', [g.op('Mul', [any, g.op('Sin', [any])])], { keepdims: 0 }),
        g.op('ReduceSum', [g.op('Exp', [rows])], { keepdims: 0 }),
      ].map((v) => g.op('Unsqueeze', [v, g.ints([0])]));
      return { params: [x], output: g.op('Concat', parts, { axis: 0 }) };
    },
  },
  {
    name: 'blocks of one tensor read by several Gathers and Slices (disjoint, repeated, and with a dense use)',
    ops: ['Gather', 'Slice'],
    build(g) {
      const x = param(g, 'x', [6, 3]);
      const y = param(g, 'y', [6, 3]);
      const rowOf = (v: Value, j: number) => g.op('Gather', [v, g.int(j)], { axis: 0 }); // [3]
      const block = (v: Value, a: number, b: number) => g.op('Reshape', [g.op('Slice', [v, g.ints([a]), g.ints([b]), g.ints([0])]), g.ints([-1])]);
      const parts = [
        // x: rows 0, 2 and the block 3..5 — disjoint, with a gap at row 1
        g.op('Mul', [rowOf(x.value, 0), rowOf(x.value, 0)]),
        g.op('Exp', [rowOf(x.value, 2)]),
        block(x.value, 3, 5),
        // y: row 1 twice and the block 0..2 overlapping it, plus a dense use of all of y
        g.op('Sin', [rowOf(y.value, 1)]),
        g.op('Mul', [rowOf(y.value, 1), g.float(3)]),
        block(y.value, 0, 2),
        g.op('Reshape', [g.op('Tanh', [y.value]), g.ints([-1])]),
      ];
      return { params: [x, y], output: g.op('Concat', parts, { axis: 0 }) };
    },
  },
  {
    name: 'MatMul 2-D and batched with broadcasting',
    ops: ['MatMul'],
    build(g) {
      const a = param(g, 'a', [2, 1, 3, 4]);
      const b = param(g, 'b', [5, 4, 2]);
      const c = param(g, 'c', [3, 4]);
      const d = param(g, 'd', [4, 2]);
      return { params: [a, b, c, d], output: g.op('Add', [g.op('MatMul', [a.value, b.value]), g.op('MatMul', [c.value, d.value])]) };
    },
  },
  {
    name: 'MatMul with 1-D operands',
    ops: ['MatMul'],
    build(g) {
      const v = param(g, 'v', [4]);
      const m = param(g, 'm', [2, 4, 3]);
      const w = param(g, 'w', [3]);
      const left = g.op('MatMul', [v.value, m.value]); // [2, 3]
      return { params: [v, m, w], output: g.op('MatMul', [left, w.value]) }; // [2]
    },
  },
  ...[
    [0, 0],
    [0, 1],
    [1, 0],
    [1, 1],
  ].map(
    ([transA, transB]): OpCase => ({
      name: `Gemm transA ${transA} transB ${transB} with bias, alpha, beta`,
      ops: ['Gemm'],
      build(g) {
        const a = param(g, 'a', transA ? [4, 3] : [3, 4]);
        const b = param(g, 'b', transB ? [5, 4] : [4, 5]);
        const c = param(g, 'c', [5]);
        const plain = g.op('Gemm', [a.value, b.value], { transA, transB });
        const full = g.op('Gemm', [a.value, b.value, c.value], { transA, transB, alpha: { float: 0.7 }, beta: { float: 1.3 } });
        return { params: [a, b, c], output: g.op('Add', [plain, full]) };
      },
    }),
  ),
  {
    name: 'Softmax (last and inner axis) and LogSoftmax',
    ops: ['Softmax', 'LogSoftmax'],
    build(g) {
      const x = param(g, 'x', [2, 3, 4], -2, 2);
      const a = g.op('Softmax', [x.value], { axis: -1 });
      const b = g.op('Softmax', [x.value], { axis: 1 });
      const c = g.op('LogSoftmax', [x.value], { axis: -1 });
      return { params: [x], output: g.op('Add', [g.op('Add', [a, b]), c]) };
    },
  },
  {
    name: 'Softmax over masked scores (−∞ entries)',
    ops: ['Softmax'],
    build(g) {
      const x = param(g, 'x', [3, 3], -2, 2);
      const mask = g.constant('float32', [3, 3], [0, -Infinity, -Infinity, 0, 0, -Infinity, 0, 0, 0]);
      return { params: [x], output: g.op('Softmax', [g.op('Add', [x.value, mask])], { axis: -1 }) };
    },
  },
  {
    name: 'ReduceSum, ReduceMean, ReduceMax with and without keepdims',
    ops: ['ReduceSum', 'ReduceMean', 'ReduceMax'],
    build(g) {
      const x = param(g, 'x', [2, 3, 4]);
      const s = g.op('ReduceSum', [x.value, g.ints([0, -1])], { keepdims: 0 }); // [3]
      const m = g.op('ReduceMean', [x.value, g.ints([-1])], { keepdims: 1 }); // [2, 3, 1]
      const mx = g.op('ReduceMax', [x.value, g.ints([1])], { keepdims: 0 }); // [2, 4]
      const all = g.op('ReduceMean', [g.op('Mul', [x.value, x.value])], { keepdims: 0 }); // []
      const parts = [s, m, mx, all].map((v) => g.op('Reshape', [v, g.ints([-1])]));
      return { params: [x], output: g.op('Concat', parts, { axis: 0 }) };
    },
  },
  {
    name: 'CumSum forward, reverse and exclusive',
    ops: ['CumSum'],
    build(g) {
      const x = param(g, 'x', [3, 5]);
      const a = g.op('CumSum', [x.value, g.int(1)]);
      const b = g.op('CumSum', [x.value, g.int(0)], { reverse: 1 });
      const c = g.op('CumSum', [x.value, g.int(-1)], { exclusive: 1 });
      return { params: [x], output: g.op('Add', [g.op('Add', [a, g.op('Mul', [b, b])]), c]) };
    },
  },
];

describe('autodiff: every op rule against finite differences (float64)', () => {
  test('the cases cover every differentiable op', () => {
    const covered = new Set(CASES.flatMap((c) => c.ops));
    assert.deepEqual(
      DIFFERENTIABLE_OPS.filter((op) => !covered.has(op)),
      [],
    );
  });
  for (const c of CASES) {
    test(c.name, async () => {
      const r = await gradCheck((g) => c.build(g), { seed: c.name.length });
      assert.deepEqual(r.failures, [], `${c.name}: worst ${r.worst.toExponential(2)}`);
      assert.ok(r.largest > 1e-3, `${c.name}: gradients are all ~0 (${r.largest})`);
    });
  }
});

describe('autodiff: errors', () => {
  test('an op without a gradient on the trained path is an error, not a silent zero', () => {
    const g = new Builder('bad');
    const x = g.input('x', 'float32', [3]);
    const y = g.op('Erf', [x]);
    const loss = g.op('ReduceSum', [y], { keepdims: 0 });
    assert.throws(() => gradients(g, loss, [x]), /no shape rule for op Erf/);
  });
  test('symbolic input shapes are refused', () => {
    const g = new Builder('bad');
    const x = g.input('x', 'float32', ['T', 3]);
    const loss = g.op('ReduceSum', [x], { keepdims: 0 });
    assert.throws(() => gradients(g, loss, [x]), /symbolic shape/);
  });
  test('a value the loss does not reach gets a zero gradient', async () => {
    const r = await gradCheck((g) => {
      const x = param(g, 'x', [2]);
      const unused = param(g, 'unused', [3]);
      return { params: [x, unused], output: g.op('Mul', [x.value, x.value]) };
    });
    assert.deepEqual(r.failures, []);
  });
});
