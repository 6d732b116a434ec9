// The optimizer and the schedules of a LoRA run, in float32 master copies held in JavaScript:
// AdamW (decoupled weight decay, bias-corrected moments, PyTorch's update order), global-norm gradient
// clipping, linear warmup then cosine decay of the learning rate, and the Memory-as-Gate weight μ per
// step (constant, gradual ramp, cyclic), as tptt's LiZACallback sets it.
import { ModelError } from '../model/errors';

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const DEFAULT_ADAMW: Omit<AdamWOptions, 'lr'> = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

/** One trained tensor with its moments. */
export interface ParamState {
  name: string;
  value: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export function newParamState(name: string, value: Float32Array): ParamState {
  return { name, value, m: new Float32Array(value.length), v: new Float32Array(value.length) };
}

/** √(Σ g²) over every gradient, accumulated in float64. */
export function globalNorm(grads: readonly Float32Array[]): number {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** Scales the gradients so their global norm is at most `maxNorm` (torch clip_grad_norm_); returns the norm before. */
export function clipGradients(grads: Float32Array[], maxNorm: number): number {
  const norm = globalNorm(grads);
  if (maxNorm > 0 && norm > maxNorm) {
    const scale = maxNorm / (norm + 1e-6);
    for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= scale;
  }
  return norm;
}

/**
 * One AdamW step (torch.optim.AdamW): p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − lr·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + eps). `t` counts steps from 1.
 */
export function adamwStep(params: ParamState[], grads: readonly Float32Array[], t: number, lr: number, o: Omit<AdamWOptions, 'lr'>): void {
  const c1 = 1 - o.beta1 ** t;
  const c2 = 1 - o.beta2 ** t;
  const decay = 1 - lr * o.weightDecay;
  params.forEach((p, k) => {
    const g = grads[k];
    const { value, m, v } = p;
    for (let i = 0; i < value.length; i++) {
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      value[i] = value[i] * decay - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + o.eps);
    }
  });
}

/** Learning rate at optimizer step `step` (0-based): linear warmup to `peak`, then cosine to `floor`. */
export function learningRate(step: number, total: number, peak: number, warmup: number, floor = 0): number {
  if (warmup > 0 && step < warmup) return (peak * (step + 1)) / warmup;
  const span = Math.max(1, total - warmup);
  const progress = Math.min(1, (step - warmup) / span);
  return floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** The same schedule when the run's length is a time budget: warmup by steps, cosine by `progress` in [0, 1]. */
export function learningRateByProgress(step: number, progress: number, peak: number, warmup: number, floor = 0): number {
  const cosine = floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, Math.max(0, progress))));
  return warmup > 0 && step < warmup ? (cosine * (step + 1)) / warmup : cosine;
}

export type MagSchedule = 'constant' | 'gradual' | 'cyclic';
export const MAG_SCHEDULES: readonly MagSchedule[] = ['constant', 'gradual', 'cyclic'];

export interface MagScheduleSpec {
  kind: MagSchedule;
  /** The package's μ: the constant value and the end of the gradual ramp. */
  target: number;
  /** Gradual: start value and ramp length (the paper: 0.01 → μ over 100 steps). */
  start: number;
  rampSteps: number;
  /** Cyclic: values taken in turn, one per step (the paper: 0, 0.5, 1). */
  cycle: number[];
}

export function magSchedule(kind: MagSchedule, target: number, overrides: Partial<Omit<MagScheduleSpec, 'kind' | 'target'>> = {}): MagScheduleSpec {
  const spec: MagScheduleSpec = { kind, target, start: 0.01, rampSteps: 100, cycle: [0, 0.5, 1], ...overrides };
  if (!MAG_SCHEDULES.includes(kind)) throw new ModelError(`μ schedule must be one of ${MAG_SCHEDULES.join(', ')}, got ${JSON.stringify(kind)}`);
  if (!(spec.rampSteps >= 1)) throw new ModelError(`μ ramp must last at least one step, got ${spec.rampSteps}`);
  for (const v of [target, spec.start, ...spec.cycle]) if (!(v >= 0 && v <= 1)) throw new ModelError(`μ values must be in [0, 1], got ${v}`);
  if (spec.cycle.length === 0) throw new ModelError('the cyclic μ schedule needs at least one value');
  return spec;
}

/** μ for optimizer step `step` (0-based). Gradual: start + (target − start)·step/ramp up to the ramp's end. */
export function magWeightAt(spec: MagScheduleSpec, step: number): number {
  switch (spec.kind) {
    case 'constant':
      return spec.target;
    case 'gradual':
      return step >= spec.rampSteps ? spec.target : spec.start + ((spec.target - spec.start) * step) / spec.rampSteps;
    case 'cyclic':
      return spec.cycle[step % spec.cycle.length];
  }
}
