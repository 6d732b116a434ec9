// The builder: graph outputs are named on the node that computes them, without the Identity copy
// `output()` records (a copy kernel on every run), and the model still runs as built; an input
// declared by two parts of a graph is one input.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { GraphBuilder } from '../../engine/graph/builder';

test('graph outputs take over the computing node instead of an Identity copy, unless the value is an input or another output', async () => {
  const g = new GraphBuilder('outputs');
  const x = g.input('x', 'float32', [3]);
  const state = g.op('Add', [x, g.float(1)]);
  g.output(state, 'state_out', 'float32', [3]); // read again below: the renamed value must follow
  const twice = g.op('Mul', [state, g.float(2)]);
  g.output(twice, 'twice', 'float32', [3]);
  g.output(twice, 'twice_again', 'float32', [3]); // the same value as a second output: keeps its copy
  g.output(x, 'x_out', 'float32', [3]); // a graph input as output: keeps its copy
  const bytes = g.toBytes();
  const nodes = onnx.ModelProto.decode(bytes).graph!.node!;
  const identities = nodes.filter((n) => n.opType === 'Identity').map((n) => `${n.input![0]}→${n.output![0]}`);
  assert.deepEqual(identities, ['twice→twice_again', 'x→x_out']);
  assert.equal(nodes.find((n) => n.opType === 'Add')!.output![0], 'state_out');
  assert.deepEqual(nodes.find((n) => n.opType === 'Mul')!.input, ['state_out', nodes.find((n) => n.opType === 'Mul')!.input![1]]);

  const session = await ort.InferenceSession.create(bytes);
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3]), [3]) });
  assert.deepEqual(Array.from(out.state_out.data as Float32Array), [2, 3, 4]);
  assert.deepEqual(Array.from(out.twice.data as Float32Array), [4, 6, 8]);
  assert.deepEqual(Array.from(out.twice_again.data as Float32Array), [4, 6, 8]);
  assert.deepEqual(Array.from(out.x_out.data as Float32Array), [1, 2, 3]);
  await session.release();
});

test('an input declared twice is one graph input; a second declaration with another type or shape is refused', () => {
  // The decoder's ring window and the LiZA extension both read stream_position.
  const g = new GraphBuilder('inputs');
  const a = g.input('stream_position', 'int64', [1]);
  const b = g.input('stream_position', 'int64', [1]);
  assert.equal(a.name, b.name);
  g.output(g.op('Add', [a, b]), 'twice', 'int64', [1]);
  const inputs = onnx.ModelProto.decode(g.toBytes()).graph!.input!.map((i) => i.name);
  assert.deepEqual(inputs, ['stream_position']);
  assert.throws(() => g.input('stream_position', 'float32', [1]), /declared twice: int64 \[1\] and float32 \[1\]/);
  assert.throws(() => g.input('stream_position', 'int64', [2]), /declared twice/);
});

test('nodes no graph output depends on are left out of the model', async () => {
  // A builder may compute a value a variant does not use (a gate the recurrent config leaves out);
  // onnxruntime would run it anyway, a kernel on every run.
  const g = new GraphBuilder('dead');
  const x = g.input('x', 'float32', [3]);
  const used = g.op('Add', [x, g.float(1)]);
  const unused = g.op('Sigmoid', [g.op('Mul', [x, g.float(3)])]);
  assert.ok(unused.name);
  g.output(g.op('Neg', [used]), 'y', 'float32', [3]);
  const bytes = g.toBytes();
  assert.deepEqual(onnx.ModelProto.decode(bytes).graph!.node!.map((n) => n.opType), ['Add', 'Neg']);
  const session = await ort.InferenceSession.create(bytes);
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3]), [3]) });
  assert.deepEqual(Array.from(out.y.data as Float32Array), [-2, -3, -4]);
  await session.release();
});
