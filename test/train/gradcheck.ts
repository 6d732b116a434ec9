// Gradient checks against central finite differences, in float64 through onnxruntime.
//
// A case builds a forward graph whose trained values are float32 graph inputs; the check weights its
// output with fixed random numbers (so every output element matters differently), appends the
// backward pass with `gradients`, rewrites the whole graph to float64, and compares each analytic
// derivative with the five-point central difference (8L(x+h) − 8L(x−h) − L(x+2h) + L(x−2h)) / 12h —
// for every element of small inputs, for sampled elements and random directions of large ones.
//
// Tolerance: |fd − analytic| ≤ RTOL · (|analytic| + rms(gradient)) + ATOL. With h = 1e-4 in float64 the
// stencil's error (O(h⁴) truncation, ~1e-12 rounding) is ~1e-9 relative for these smooth functions (the
// two-point quotient was truncation-limited at ~1e-7 on whole models); a wrong rule is off by O(1).
// RTOL 1e-6 leaves room for ill-conditioned blocks (triangular solves) without hiding bugs.
import * as ort from 'onnxruntime-node';
import { GraphBuilder, type Value } from '../../engine/graph/builder';
import { gradients, staticInfo } from '../../engine/graph/autodiff';
import { toFloat64 } from '../../engine/graph/autodiff/precision';
import { rng } from '../helpers/workspace';

export const RTOL = 1e-6;
export const ATOL = 1e-10;

export interface Param {
  value: Value;
  shape: number[];
  /** Initial values (default: uniform in [low, high)). */
  init?: Float64Array;
  low?: number;
  high?: number;
}

export interface CheckResult {
  /** Largest |fd − analytic| / (|analytic| + rms(gradient)) over everything compared. */
  worst: number;
  /** Number of derivatives compared (elements and directions). */
  compared: number;
  /** Largest |analytic| seen, to show the gradients are not trivially zero. */
  largest: number;
  failures: string[];
}

export interface CheckOptions {
  seed?: number;
  /** Folder holding the graph's external weights (models), if any. */
  modelDir?: string;
  h?: number;
  /** Elements probed per parameter when it has more than this many (default 12). */
  probes?: number;
  /** Random directions checked per parameter (default 2). */
  directions?: number;
  /** Extra float64 feeds (non-trained inputs). */
  feeds?: Record<string, ort.Tensor>;
}

/**
 * Builds `build(g)` → { params, output }, checks d(Σ w⊙output)/d(param) for every param.
 * `build` may also return the loss directly (a float scalar) with `isLoss`.
 */
export async function gradCheck(
  build: (g: GraphBuilder) => { params: Param[]; output: Value; isLoss?: boolean },
  options: CheckOptions = {},
): Promise<CheckResult> {
  const random = rng(options.seed ?? 1);
  const g = new GraphBuilder('gradcheck');
  const { params, output, isLoss } = build(g);
  let loss = output;
  if (!isLoss) {
    const shape = staticInfo(g.view()).get(output.name)!.shape;
    const count = shape.reduce((a, b) => a * b, 1);
    const weights = g.constant('float32', shape, Float32Array.from({ length: count }, () => random() * 2 - 1));
    loss = g.op('ReduceSum', [g.op('Mul', [output, weights])], { keepdims: 0 });
  }
  const grads = gradients(g, loss, params.map((p) => p.value));
  g.output(loss, 'loss', 'float32', []);
  grads.forEach((gr, i) => g.output(gr, `grad_${i}`, 'float32', params[i].shape));
  const session = await ort.InferenceSession.create(toFloat64(g.toBytes(), options.modelDir ?? null), { graphOptimizationLevel: 'basic', intraOpNumThreads: 1, logSeverityLevel: 3 });
  try {
    const x = params.map((p) => p.init ?? Float64Array.from({ length: p.shape.reduce((a, b) => a * b, 1) }, () => (p.low ?? -1) + random() * ((p.high ?? 1) - (p.low ?? -1))));
    const run = async (values: Float64Array[], withGrads: boolean) => {
      const feeds: Record<string, ort.Tensor> = { ...(options.feeds ?? {}) };
      params.forEach((p, i) => (feeds[p.value.name] = new ort.Tensor('float64', values[i], p.shape)));
      const fetches = withGrads ? ['loss', ...params.map((_, i) => `grad_${i}`)] : ['loss'];
      const out = await session.run(feeds, fetches);
      return { loss: Number((out.loss.data as Float64Array)[0]), grads: withGrads ? params.map((_, i) => out[`grad_${i}`].data as Float64Array) : [] };
    };
    const base = await run(x, true);
    const h = options.h ?? 1e-4;
    const result: CheckResult = { worst: 0, compared: 0, largest: 0, failures: [] };
    const compare = (label: string, fd: number, analytic: number, scale: number) => {
      const err = Math.abs(fd - analytic);
      const rel = err / (Math.abs(analytic) + scale + 1e-300);
      result.worst = Math.max(result.worst, rel);
      result.largest = Math.max(result.largest, Math.abs(analytic));
      result.compared++;
      if (!(err <= RTOL * (Math.abs(analytic) + scale) + ATOL)) result.failures.push(`${label}: finite difference ${fd.toExponential(6)} vs analytic ${analytic.toExponential(6)}`);
    };
    for (let i = 0; i < params.length; i++) {
      const grad = base.grads[i];
      const n = grad.length;
      const rms = Math.sqrt(grad.reduce((s, v) => s + v * v, 0) / Math.max(1, n));
      const probes = options.probes ?? 12;
      const elements = n <= probes ? Array.from({ length: n }, (_, k) => k) : Array.from({ length: probes }, () => Math.floor(random() * n));
      /** d/dt L(x + t·dir) at 0 by the five-point stencil (error O(h⁴)). */
      const derivative = async (dir: (k: number) => number, step: number): Promise<number> => {
        const at = async (t: number) => (await run(x.map((v, j) => (j === i ? v.map((e, k) => e + t * dir(k)) : v)), false)).loss;
        return (8 * (await at(step)) - 8 * (await at(-step)) - (await at(2 * step)) + (await at(-2 * step))) / (12 * step);
      };
      for (const k of elements) {
        const fd = await derivative((j) => (j === k ? 1 : 0), h * Math.max(1, Math.abs(x[i][k])));
        compare(`${params[i].value.name}[${k}]`, fd, grad[k], rms);
      }
      for (let d = 0; d < (options.directions ?? 2); d++) {
        const raw = Float64Array.from({ length: n }, () => random() * 2 - 1);
        const norm = Math.sqrt(raw.reduce((s, v) => s + v * v, 0));
        const dir = raw.map((v) => v / norm); // a unit step, so h means the same for every size
        const fd = await derivative((k) => dir[k], h);
        const analytic = grad.reduce((s, v, k) => s + v * dir[k], 0);
        compare(`${params[i].value.name}·direction${d}`, fd, analytic, rms);
      }
    }
    return result;
  } finally {
    await session.release();
  }
}
