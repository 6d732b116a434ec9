// The WebGPU path: half-precision graphs run on onnxruntime-node's WebGPU provider with every
// floating-point op on the GPU (only int64 shape arithmetic may sit on the CPU, as ORT places it
// there itself), and agree with the float32 CPU graphs within half-precision tolerance.
// CI installs Mesa's software Vulkan driver (lavapipe) so this runs without a GPU.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { titanize } from '../../engine/titanize/titanize';
import { ModelRunner } from '../../engine/runtime/session';
import { hasVulkan } from '../helpers/vulkan';
import { TEST_MAG_WEIGHT } from '../helpers/workspace';


/** Ops that only ever see int64/bool shape values in our graphs, which ORT keeps on the CPU. */
const SHAPE_OPS = new Set(['Shape', 'Sub', 'Add', 'Mul', 'Concat', 'Squeeze', 'Unsqueeze', 'Range', 'Gather', 'Slice', 'Cast', 'Max', 'Min', 'Equal', 'Where', 'Mod', 'Less', 'LessOrEqual', 'GreaterOrEqual', 'ConstantOfShape', 'Reshape', 'Expand', 'Div']);

/** Node placements from ORT's verbose session log: op type → provider, per node name. */
function placements(model: string): { cpu: { op: string; name: string }[]; gpu: number } {
  const script = `const ort=require('onnxruntime-node');ort.InferenceSession.create(${JSON.stringify(model)},{executionProviders:['webgpu'],logSeverityLevel:0,logVerbosityLevel:0}).then(()=>process.exit(0),(e)=>{console.error(e.message);process.exit(3)});`;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: path.resolve(__dirname, '..', '..'), encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  assert.equal(r.status, 0, `WebGPU session failed: ${r.stderr.slice(-2000)}`);
  const lines = (r.stdout + r.stderr).split('\n');
  const cpu: { op: string; name: string }[] = [];
  let gpu = 0;
  let section: 'cpu' | 'gpu' | null = null;
  for (const line of lines) {
    const header = /Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (header) {
      section = header[1] === 'CPUExecutionProvider' ? 'cpu' : 'gpu';
      if (section === 'gpu') gpu += Number(header[2]);
      continue;
    }
    const node = /VerifyEachNodeIsAssignedToAnEp\]\s+(\w+) \(([^)]*)\)/.exec(line);
    if (node && section === 'cpu') cpu.push({ op: node[1], name: node[2] });
    else if (!/VerifyEachNodeIsAssignedToAnEp/.test(line)) section = null;
  }
  return { cpu, gpu };
}

test('WebGPU: fp16 Titan graphs keep every float op on the GPU and match the fp32 CPU graphs', { skip: hasVulkan ? false : 'no Vulkan loader here (CI installs mesa-vulkan-drivers)', timeout: 900_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-webgpu-'));
  try {
    const ckpt = await writeRandomCheckpoint(path.join(dir, 'hf'), { arch: 'llama', seed: 7 });
    for (const operator of ['delta_rule', 'delta_product', 'gated_delta_rule']) {
      const out = path.join(dir, operator);
      titanize(ckpt.dir, out, { operator_mode: operator, mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 16, max_chunk_size: 8 }, { dtype: 'fp16' });
      for (const graph of ['decoder-fp16.onnx', 'step-fp16.onnx']) {
        const placed = placements(path.join(out, graph));
        const offending = placed.cpu.filter((n) => !SHAPE_OPS.has(n.op));
        t.diagnostic(`${operator}/${graph}: ${placed.gpu} nodes on WebGPU, ${placed.cpu.length} shape nodes on CPU`);
        assert.ok(placed.gpu > 0, 'no node was placed on WebGPU');
        assert.deepEqual(offending, [], `float ops fell back to the CPU: ${JSON.stringify(offending.slice(0, 10))}`);
        for (const n of placed.cpu) assert.ok(!/Scan|Loop/.test(n.op));
      }
      const { maxDiff, scale } = await fp16Drift(out);
      t.diagnostic(`${operator}: max |fp16 WebGPU − fp32 CPU| = ${maxDiff.toExponential(2)} (logit scale ${scale.toFixed(2)})`);
      // Half precision carries ~3 significant digits through the residual stream.
      assert.ok(maxDiff <= 2e-2 * Math.max(1, scale), `fp16 logits drift too far: ${maxDiff}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The largest |fp16 graphs on WebGPU − fp32 graphs on the CPU| over three prefill rows and one step, and the logits' scale. */
async function fp16Drift(pkg: string): Promise<{ maxDiff: number; scale: number }> {
  const ids = Array.from({ length: 21 }, (_, i) => (i * 37) % 250 + 3);
  const cpu = await ModelRunner.open(pkg, { provider: 'cpu' });
  const gpu = await ModelRunner.open(pkg, { provider: 'webgpu' });
  try {
    assert.equal(gpu.provider.provider, 'webgpu');
    const rows = [0, 10, 20];
    const a = [...(await cpu.forward(ids, rows)), ...(await cpu.forward([9], [0]))]; // then the step graphs
    const b = [...(await gpu.forward(ids, rows)), ...(await gpu.forward([9], [0]))];
    let maxDiff = 0;
    let scale = 0;
    a.forEach((row, i) => row.forEach((v, j) => {
      maxDiff = Math.max(maxDiff, Math.abs(v - b[i][j]));
      scale = Math.max(scale, Math.abs(v));
    }));
    return { maxDiff, scale };
  } finally {
    await cpu.release();
    await gpu.release();
  }
}

test('WebGPU: fp16 graphs of other layouts (q/k/v biases and untied head; tied embeddings and q/k norms) match the fp32 CPU graphs', { skip: hasVulkan ? false : 'no Vulkan loader here (CI installs mesa-vulkan-drivers)', timeout: 600_000 }, async (t) => {
  // Half-precision graphs project with MatMul over transposed weights, add biases after it, and read
  // a tied embedding through its transposed copy: paths the llama checkpoint above does not take.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-webgpu-layouts-'));
  try {
    for (const [name, options] of [['qwen2', { arch: 'qwen2' }], ['qwen3', { arch: 'qwen3', configStyle: 'new', tied: true }]] as const) {
      const ckpt = await writeRandomCheckpoint(path.join(dir, `${name}-hf`), { ...options, seed: 5 });
      const out = path.join(dir, name);
      titanize(ckpt.dir, out, { operator_mode: 'delta_rule', mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 16, max_chunk_size: 8 }, { dtype: 'fp16' });
      const { maxDiff, scale } = await fp16Drift(out);
      t.diagnostic(`${name}: max |fp16 WebGPU − fp32 CPU| = ${maxDiff.toExponential(2)} (logit scale ${scale.toFixed(2)})`);
      assert.ok(maxDiff <= 2e-2 * Math.max(1, scale), `${name}: fp16 logits drift too far: ${maxDiff}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('WebGPU: state kept in device memory between runs gives the same logits and saved state as state copied through the host', { skip: hasVulkan ? false : 'no Vulkan loader here (CI installs mesa-vulkan-drivers)', timeout: 600_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-webgpu-device-'));
  try {
    const ckpt = await writeRandomCheckpoint(path.join(dir, 'hf'), { arch: 'llama', seed: 11 });
    const out = path.join(dir, 'titan');
    titanize(ckpt.dir, out, { operator_mode: 'delta_rule', mag_weight: TEST_MAG_WEIGHT, max_self_attn_length: 16, max_chunk_size: 8 }, { dtype: 'fp16' });
    const host = await ModelRunner.open(out, { provider: 'webgpu', stateOnDevice: false });
    const device = await ModelRunner.open(out, { provider: 'webgpu' });
    try {
      assert.equal(host.stateOnDevice, false);
      assert.equal(device.stateOnDevice, true);
      // Segments of several runs (window 16, chunk 8), single-token steps, a save, more tokens, a restore.
      const ids = Array.from({ length: 45 }, (_, i) => (i * 53) % 250 + 3);
      const segments = [[0, 13], [13, 30], [30, 31], [31, 32], [32, 45]];
      let maxDiff = 0;
      let saved: Buffer | null = null;
      let firstRunUpload = 0;
      for (const [i, [a, b]] of segments.entries()) {
        const rows = [b - a - 1];
        const [x] = await host.forward(ids.slice(a, b), rows);
        const [y] = await device.forward(ids.slice(a, b), rows);
        if (i === 0) firstRunUpload = device.stateBytesCopied;
        x.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - y[j]))));
        if (i === 2) {
          const hostBlob = await host.saveState();
          saved = await device.saveState();
          assert.ok(hostBlob.equals(saved), 'the saved state differs when the state lives on the device');
        }
      }
      // Identical graphs on identical inputs: only the place where the state waits differs.
      assert.equal(maxDiff, 0, `logits differ by ${maxDiff}`);
      t.diagnostic(`state bytes copied between host and device: ${host.stateBytesCopied} with host state, ${device.stateBytesCopied} with device state`);
      assert.ok(host.stateBytesCopied > 0);
      // Only the first run's inputs (the empty ring window of zeros) start on the host; every later run
      // finds the state on the device.
      assert.ok(firstRunUpload < host.stateBytesCopied / segments.length, `the first run copied ${firstRunUpload} bytes, more than one state`);
      assert.equal(device.stateBytesCopied, firstRunUpload, 'state crossed to the host between runs');
      device.loadState(saved!);
      host.loadState(saved!);
      const [x] = await host.forward(ids.slice(31), [13]);
      const [y] = await device.forward(ids.slice(31), [13]);
      assert.deepEqual(y, x, 'continuing from a restored state differs');
      t.diagnostic(`device-resident state: ${segments.length} segments and a restore, logits identical`);
    } finally {
      await host.release();
      await device.release();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
