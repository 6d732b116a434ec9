// Alignment: LoRA fine-tuning of a package on the user's data, so that after LiZA/MaG injection the
// model learns to use its memory (the paper's "inject, then align").
//
//   data → sequences (data.ts) → per optimizer step, `batch` sequences through the training graph
//   (graph.ts: the package's decoder with LoRA, loss, gradients) → gradients summed, clipped → AdamW
//   (optimizer.ts) → every few steps a validation pass and a checkpoint → adapter + merged package.
//
// Everything random (LoRA init, data order per epoch, dropout masks) is drawn from streams keyed by
// the seed and the step, so a resumed run continues exactly as the uninterrupted one would.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { loadTokenizer } from '../model/tokenizer';
import { seededRandom } from '../runtime/generate';
import type { ProviderChoice } from '../runtime/session';
import { readPackage, type LoadedPackage } from '../titanize/package';
import type { TpttSettings } from '../titanize/settings';
import { hasCheckpoint, loadCheckpoint, saveCheckpoint, settingsDifferences, checkpointDir } from './checkpoint';
import { bucketFor, bucketLengths, loadDataset, scoreFrom, type DataSpec, type Dataset, type DatasetSummary, type TrainingSequence } from './data';
import { initLora, loraSlots, validateLoraSpec, type LoraSlot, type LoraSpec } from './lora';
import { adamwStep, clipGradients, globalNorm, learningRate, learningRateByProgress, magSchedule, magWeightAt, newParamState, type MagSchedule, type ParamState } from './optimizer';
import { mergeBlocker, writeAdapter, writeMergedPackage } from './output';
import { TrainingSessions } from './sessions';

export interface AlignOptions {
  packageDir: string;
  data: DataSpec;
  /** Output folder: adapter/, package/, checkpoint/, report.json, train-log.jsonl. */
  out: string;
  /** Optimizer steps; or `epochs` passes over the training sequences. Default: one epoch, at most 500 steps. */
  steps?: number;
  epochs?: number;
  /**
   * Train for this many minutes of wall time instead (validations included; graph building and
   * loading before the first step not): the learning rate follows the cosine over the time budget.
   */
  minutes?: number;
  /** Peak learning rate (the paper: 5e-4). */
  lr: number;
  /** Warmup steps (default 5 % of the run, at least 1). */
  warmup?: number;
  weightDecay: number;
  /** Global gradient norm limit (0 = off; the paper: 1.0). */
  clip: number;
  /** Sequences per optimizer step (gradient accumulation). */
  batch: number;
  /** Tokens per sequence (T). */
  sequence: number;
  /**
   * Score only targets at positions ≥ this within each sequence (training and validation; default 0 =
   * all): long-context training puts the loss on the tokens a sliding window cannot see the whole past of.
   */
  lossFrom?: number;
  /**
   * fp16: half-precision activations and gradients in the training graph (GPU providers), with fp32
   * master weights and AdamW state in JavaScript and dynamic loss scaling; validation stays fp32.
   */
  precision?: 'fp32' | 'fp16';
  /** Recompute each layer's activations in the backward pass instead of keeping them (less memory, ~10 % more time). */
  recompute?: boolean;
  lora: LoraSpec;
  mag: { schedule: MagSchedule; start?: number; rampSteps?: number; cycle?: number[] };
  seed: number;
  /** Validate every N steps (default: ten times a run); 0 = only before and after. */
  evalEvery?: number;
  /** Validation sequences (default 32). */
  evalSequences?: number;
  validationFraction?: number;
  /** Checkpoint every N steps (default: with each validation). */
  checkpointEvery?: number;
  /** Continue from <out>/checkpoint. */
  resume?: boolean;
  /** Write <out>/package (the package with the LoRA merged); default true. */
  merge?: boolean;
  provider: ProviderChoice;
  threads?: number;
  signal?: AbortSignal;
  onEvent?: (e: AlignEvent) => void;
}

export type AlignEvent =
  | { type: 'stage'; message: string }
  | { type: 'data'; summary: DatasetSummary }
  | { type: 'start'; totalSteps: number | null; minutes: number | null; startStep: number; provider: string; params: number }
  | { type: 'step'; step: number; totalSteps: number; loss: number; lr: number; mu: number; gradNorm: number; tokens: number; tokensPerSecond: number; elapsed: number; eta: number }
  | { type: 'eval'; step: number; loss: number; perplexity: number; tokens: number }
  | { type: 'checkpoint'; step: number; dir: string };

export interface EvalRecord {
  step: number;
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface StepRecord {
  step: number;
  loss: number;
  /** fp16: the loss scale used, and whether the step was skipped for overflowing gradients. */
  lossScale?: number;
  skipped?: boolean;
  lr: number;
  mu: number;
  gradNorm: number;
  tokens: number;
  seconds: number;
}

export interface AlignReport {
  package: string;
  out: string;
  provider: string;
  data: DatasetSummary;
  settings: Record<string, unknown>;
  steps: { done: number; total: number; resumedFrom: number | null };
  /** Training time (seconds in training steps, across resumes) and throughput (input tokens per second). */
  seconds: number;
  /** Wall time of the training loop, validations and checkpoints included (graph loading excluded). */
  wallSeconds: number;
  tokens: number;
  tokensPerSecond: number;
  train: { firstLoss: number | null; lastLoss: number | null; meanLastTen: number | null };
  validation: { before: EvalRecord | null; after: EvalRecord | null; best: EvalRecord | null; all: EvalRecord[] };
  adapter: string;
  mergedPackage: string | null;
  notes: string[];
}

/** A run stopped by its signal; the checkpoint holds its last completed step. */
export class AlignCancelledError extends Error {
  override readonly name = 'CancelledError';
}

/** An independent random stream for (seed, purpose, indices). */
export function randomStream(seed: number, purpose: string, ...indices: number[]): () => number {
  const h = createHash('sha256').update(JSON.stringify([seed, purpose, indices])).digest();
  return seededRandom(h.readUInt32LE(0));
}

/** Fisher–Yates order of 0..n−1 for an epoch. */
function epochOrder(n: number, seed: number, epoch: number): Uint32Array {
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  const random = randomStream(seed, 'epoch', epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** The training sequence for micro-batch `micro` of optimizer step `step`. */
function sequenceAt(data: TrainingSequence[], seed: number, batch: number, step: number, micro: number, orders: Map<number, Uint32Array>): TrainingSequence {
  const k = step * batch + micro;
  const epoch = Math.floor(k / data.length);
  let order = orders.get(epoch);
  if (!order) {
    order = epochOrder(data.length, seed, epoch);
    orders.clear();
    orders.set(epoch, order);
  }
  return data[order[k % data.length]];
}

function dataKey(ds: Dataset): string {
  const h = createHash('sha256');
  for (const part of [ds.train, ds.validation]) {
    for (const s of part) {
      h.update(new Uint8Array(s.tokens.buffer, s.tokens.byteOffset, s.tokens.byteLength));
      h.update(s.scored);
    }
    h.update('|');
  }
  return h.digest('hex').slice(0, 24);
}

function checkOptions(o: AlignOptions): void {
  const positiveInt = (v: number | undefined, what: string) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new ModelError(`${what} must be a positive integer, got ${v}`);
  };
  positiveInt(o.steps, 'steps');
  positiveInt(o.batch, 'batch');
  positiveInt(o.sequence, 'sequence length');
  if (o.epochs !== undefined && !(o.epochs > 0)) throw new ModelError(`epochs must be positive, got ${o.epochs}`);
  if ([o.steps, o.epochs, o.minutes].filter((v) => v !== undefined).length > 1) throw new ModelError('give one of --steps, --epochs and --minutes');
  if (o.minutes !== undefined && !(o.minutes > 0 && Number.isFinite(o.minutes))) throw new ModelError(`minutes must be a positive number, got ${o.minutes}`);
  if (!(o.lr > 0) || !Number.isFinite(o.lr)) throw new ModelError(`learning rate must be a positive number, got ${o.lr}`);
  if (!(o.weightDecay >= 0)) throw new ModelError(`weight decay must be ≥ 0, got ${o.weightDecay}`);
  if (!(o.clip >= 0)) throw new ModelError(`gradient clipping norm must be ≥ 0, got ${o.clip}`);
  if (o.sequence < 16) throw new ModelError(`sequences must hold at least 16 tokens, got ${o.sequence}`);
  if (o.lossFrom !== undefined && (!Number.isInteger(o.lossFrom) || o.lossFrom < 0)) throw new ModelError(`--loss-from must be an integer ≥ 0, got ${o.lossFrom}`);
  if (o.lossFrom !== undefined && o.lossFrom >= o.sequence) throw new ModelError(`--loss-from ${o.lossFrom} leaves nothing to score in sequences of ${o.sequence} tokens (--seq); use a value below ${o.sequence}`);
  validateLoraSpec(o.lora);
  if (o.precision === 'fp16' && o.provider === 'cpu') throw new ModelError('--precision fp16 trains on a GPU provider (webgpu or cuda); the CPU provider has no half-precision kernels for it — use fp32');
  if (o.data.kind === 'workspace') {
    for (const dir of [o.data.dir, ...(o.data.extraDirs ?? [])]) if (!(fs.existsSync(dir) && fs.statSync(dir).isDirectory())) throw new ModelError(`workspace folder ${dir} does not exist or is not a folder`);
  }
  if (o.data.kind === 'jsonl' && !fs.existsSync(o.data.file)) throw new ModelError(`${o.data.file} does not exist`);
}

/** Runs the validation sequences; mean NLL over their scored tokens. */
async function evaluate(sessions: TrainingSessions, data: TrainingSequence[], buckets: number[], values: ReadonlyMap<string, Float32Array>, mu: number, step: number, signal?: AbortSignal): Promise<EvalRecord> {
  let sum = 0;
  let count = 0;
  for (const seq of data) {
    if (signal?.aborted) break;
    const T = bucketFor(seq.tokens.length - 1, buckets);
    const { nll } = await sessions.run('eval', T, seq, values, mu, 1, null);
    for (let i = 0; i < nll.length; i++) {
      if (seq.scored[i]) {
        sum += nll[i];
        count++;
      }
    }
  }
  const loss = count ? sum / count : NaN;
  return { step, loss, perplexity: Math.exp(loss), tokens: count };
}

export async function align(options: AlignOptions): Promise<AlignReport> {
  checkOptions(options);
  const emit = (e: AlignEvent) => options.onEvent?.(e);
  const pkg: LoadedPackage = readPackage(options.packageDir);
  // LoRA trains beside full-precision projections (and merges into them); 4-bit blocks have no gradient path.
  if (pkg.manifest.quantization) throw new ModelError(`${pkg.dir} has int4 weights; align a package without --quantize and quantize the merged result (titan titanize --adapter DIR --quantize int4)`);
  const out = path.resolve(options.out);
  if (path.resolve(pkg.dir) === out || out.startsWith(path.resolve(pkg.dir) + path.sep)) throw new ModelError(`--out ${out} is inside the package being aligned; choose a folder outside it`);
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new ModelError(`--out ${out} exists and is not a folder`);
  if (hasCheckpoint(out) && !options.resume) throw new ModelError(`${out} holds a checkpoint of an earlier run; pass --resume to continue it or choose another --out`);
  if (!hasCheckpoint(out) && options.resume) throw new ModelError(`--resume: ${out} holds no checkpoint (${checkpointDir(out)})`);
  const notes: string[] = [];
  const merge = options.merge ?? true;
  const blocker = merge ? mergeBlocker(pkg) : null;
  if (blocker) notes.push(`no merged package: ${blocker}; the adapter is written and can be merged later with titan titanize --adapter`);
  const settings = pkg.manifest.tptt as unknown as TpttSettings | undefined;
  const targetMu = settings?.mag_weight ?? 0;
  const mag = magSchedule(options.mag.schedule, targetMu, { ...(options.mag.start !== undefined ? { start: options.mag.start } : {}), ...(options.mag.rampSteps !== undefined ? { rampSteps: options.mag.rampSteps } : {}), ...(options.mag.cycle ? { cycle: options.mag.cycle } : {}) });
  if (!settings && options.mag.schedule !== 'constant') throw new ModelError(`${pkg.dir} is a base package (no Memory-as-Gate); μ schedules need a Titan package`);

  // ── data ──
  emit({ type: 'stage', message: 'reading the data' });
  const tokenizer = loadTokenizer(pkg.dir);
  const T = options.sequence;
  // Read what the planned steps consume (and at least 256K tokens, for variety), not a whole large workspace.
  const budget = options.steps && !options.minutes ? Math.max(Math.ceil(options.steps * options.batch * T * 1.05) + 2 * T, 1 << 18) : undefined;
  const lossFrom = options.lossFrom ?? 0;
  const loaded = await loadDataset(options.data, tokenizer, {
    sequence: T,
    validationFraction: options.validationFraction,
    maxValidationSequences: options.evalSequences ?? 32,
    maxTrainTokens: budget,
    signal: options.signal,
    onProgress: (message) => emit({ type: 'stage', message }),
  });
  const dataset = scoreFrom(loaded, lossFrom);
  if (dataset.train.length === 0) throw new ModelError(`--loss-from ${lossFrom}: no training sequence is longer than ${lossFrom} tokens; lower it`);
  emit({ type: 'data', summary: dataset.summary });
  const buckets = options.data.kind === 'jsonl' ? bucketLengths(T) : [T];
  const epochSteps = Math.ceil(dataset.train.length / options.batch);
  // A time budget runs until the time is spent (the step count is known only at the end).
  const timeBudget = options.minutes !== undefined ? options.minutes * 60 : null;
  const totalSteps = timeBudget !== null ? Infinity : (options.steps ?? (options.epochs !== undefined ? Math.max(1, Math.ceil((options.epochs * dataset.train.length) / options.batch)) : Math.min(epochSteps, 500)));
  if (options.steps === undefined && options.epochs === undefined && timeBudget === null && epochSteps > 500) notes.push(`one epoch is ${epochSteps} steps; ran 500 (pass --steps, --epochs or --minutes for more)`);
  const warmup = options.warmup ?? (timeBudget !== null ? 10 : Math.max(1, Math.round(totalSteps * 0.05)));
  // Validations and checkpoints: ten per run (by steps, or by time for a time budget).
  const evalEvery = options.evalEvery ?? (timeBudget !== null ? null : Math.max(1, Math.round(totalSteps / 10)));
  const checkpointEvery = options.checkpointEvery ?? evalEvery;

  // The settings that fix the run's trajectory (a resume must match them).
  const runSettings: Record<string, unknown> = {
    package: pkg.manifest.source.weightsSha256,
    packageKind: pkg.manifest.kind,
    tptt: pkg.manifest.tptt ?? null,
    data: dataKey(dataset),
    sequence: T,
    // Absent when 0, so checkpoints written before the option existed still resume.
    ...(lossFrom > 0 ? { lossFrom } : {}),
    precision: options.precision ?? 'fp32',
    batch: options.batch,
    steps: Number.isFinite(totalSteps) ? totalSteps : null,
    minutes: options.minutes ?? null,
    lr: options.lr,
    warmup,
    weightDecay: options.weightDecay,
    clip: options.clip,
    lora: options.lora,
    mag,
    seed: options.seed,
  };

  // ── parameters ──
  const slots: LoraSlot[] = loraSlots(pkg.config, options.lora);
  const params: ParamState[] = [];
  for (const s of slots) {
    const { a, b } = initLora(s, options.lora.r, randomStream(options.seed, 'init', s.layer, slots.indexOf(s)));
    params.push(newParamState(s.a, a), newParamState(s.b, b));
  }
  const values = new Map(params.map((p) => [p.name, p.value]));
  let startStep = 0;
  let history: StepRecord[] = [];
  let evals: EvalRecord[] = [];
  let priorSeconds = 0;
  let priorWall = 0;
  let priorTokens = 0;
  if (options.resume) {
    const state = loadCheckpoint(out, params);
    const diffs = settingsDifferences(state.settings, runSettings);
    if (diffs.length) throw new ModelError(`--resume: this run's settings differ from the checkpoint's (${diffs.join('; ')}); resume with the same command line`);
    startStep = state.step;
    history = state.history as StepRecord[];
    evals = state.evals as EvalRecord[];
    priorSeconds = state.seconds;
    priorWall = state.wallSeconds ?? state.seconds;
    priorTokens = state.tokens;
  }
  fs.mkdirSync(out, { recursive: true });
  const logFile = path.join(out, 'train-log.jsonl');
  if (!options.resume) fs.writeFileSync(logFile, '');

  const half = options.precision === 'fp16';
  const sessions = new TrainingSessions(pkg, options.lora, {
    trainCompute: half ? 'float16' : 'float32',
    recompute: options.recompute === true,
    provider: options.provider,
    threads: options.threads,
    workDir: path.join(out, 'graphs'),
    onProgress: (message) => emit({ type: 'stage', message }),
  });
  try {
    const trainBuckets = [...new Set(dataset.train.map((s) => bucketFor(s.tokens.length - 1, buckets)))].sort((a, b) => a - b);
    const evalBuckets = [...new Set(dataset.validation.map((s) => bucketFor(s.tokens.length - 1, buckets)))].sort((a, b) => a - b);
    await sessions.prepare(trainBuckets, evalBuckets);
    const provider = sessions.provider?.provider ?? options.provider;
    if (half && provider === 'cpu') throw new ModelError(`--precision fp16 needs a GPU provider and none is available (${sessions.provider?.reason}); use fp32`);
    emit({ type: 'start', totalSteps: Number.isFinite(totalSteps) ? totalSteps : null, minutes: options.minutes ?? null, startStep, provider, params: params.reduce((s, p) => s + p.value.length, 0) });

    const validate = async (step: number) => {
      if (dataset.validation.length === 0) return;
      emit({ type: 'stage', message: `validating on ${dataset.validation.length} held-out sequences` });
      const r = await evaluate(sessions, dataset.validation, buckets, values, targetMu, step, options.signal);
      if (options.signal?.aborted) return;
      evals.push(r);
      emit({ type: 'eval', ...r });
    };
    if (!evals.some((e) => e.step === startStep)) await validate(startStep);

    const grads = params.map((p) => new Float32Array(p.value.length));
    // fp16: dynamic loss scaling (as torch.amp.GradScaler: halve on overflow, double after a run of good steps).
    let lossScale = half ? (history.at(-1)?.lossScale ?? 4096) : 1;
    let goodSteps = 0;
    let skippedSteps = history.filter((h) => h.skipped).length;
    const orders = new Map<number, Uint32Array>();
    let seconds = priorSeconds;
    let tokens = priorTokens;
    let step = startStep;
    const loopStart = performance.now();
    const wall = () => priorWall + (performance.now() - loopStart) / 1000;
    const saveNow = () => {
      const dir = saveCheckpoint(out, { step, settings: runSettings, history, evals, seconds, wallSeconds: wall(), tokens }, params);
      emit({ type: 'checkpoint', step, dir });
    };
    /** Where the run stands in [0, 1]: by steps, or by wall time for a time budget. */
    const progress = () => (timeBudget !== null ? Math.min(1, wall() / timeBudget) : step / totalSteps);
    let nextTimedEval = timeBudget !== null ? (Math.floor((wall() / timeBudget) * 10) + 1) / 10 : Infinity;
    for (; timeBudget !== null ? wall() < timeBudget : step < totalSteps; ) {
      if (options.signal?.aborted) break;
      const t0 = performance.now();
      const batch = Array.from({ length: options.batch }, (_, m) => sequenceAt(dataset.train, options.seed, options.batch, step, m, orders));
      const scored = batch.reduce((s, q) => s + q.scored.reduce((a, b) => a + b, 0), 0);
      const mu = magWeightAt(mag, step);
      const lr = timeBudget !== null ? learningRateByProgress(step, wall() / timeBudget, options.lr, warmup) : learningRate(step, totalSteps, options.lr, warmup);
      for (const g of grads) g.fill(0);
      const stepScale = lossScale;
      let loss = 0;
      let stepTokens = 0;
      let aborted = false;
      for (const [m, seq] of batch.entries()) {
        if (options.signal?.aborted) {
          aborted = true;
          break;
        }
        const Tb = bucketFor(seq.tokens.length - 1, buckets);
        const r = await sessions.run('train', Tb, seq, values, mu, stepScale / Math.max(1, scored), options.lora.dropout > 0 ? randomStream(options.seed, 'dropout', step, m) : null);
        if (!Number.isFinite(r.loss) && !half) throw new ModelError(`step ${step + 1}: the loss is ${r.loss} (diverged); lower --lr or check the data`);
        loss += r.loss / stepScale;
        r.grads.forEach((g, k) => {
          const acc = grads[k];
          for (let i = 0; i < g.length; i++) acc[i] += g[i];
        });
        stepTokens += seq.tokens.length - 1;
      }
      if (aborted) break;
      let skipped = false;
      let gradNorm: number;
      if (half) {
        for (const g of grads) for (let i = 0; i < g.length; i++) g[i] /= stepScale;
        gradNorm = globalNorm(grads);
        if (!Number.isFinite(gradNorm) || !Number.isFinite(loss)) {
          skipped = true;
          lossScale /= 2;
          goodSteps = 0;
          if (lossScale < 1) throw new ModelError(`step ${step + 1}: the half-precision gradients overflow even unscaled; train with --precision fp32`);
        } else if (++goodSteps % 200 === 0 && lossScale < 65536) lossScale *= 2;
      }
      if (!skipped) {
        gradNorm = clipGradients(grads, options.clip);
        if (!Number.isFinite(gradNorm)) throw new ModelError(`step ${step + 1}: the gradient is not finite; lower --lr or check the data`);
        adamwStep(params, grads, step + 1 - skippedSteps, lr, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: options.weightDecay });
      } else skippedSteps++;
      const dt = (performance.now() - t0) / 1000;
      seconds += dt;
      tokens += stepTokens;
      step++;
      const record: StepRecord = { step, loss, lr, mu, gradNorm: gradNorm!, tokens: stepTokens, seconds: dt, ...(half ? { lossScale: stepScale, skipped } : {}) };
      history.push(record);
      fs.appendFileSync(logFile, JSON.stringify(record) + '\n');
      const recent = history.slice(-10);
      const perStep = recent.reduce((s, h) => s + h.seconds, 0) / recent.length;
      const eta = timeBudget !== null ? Math.max(0, timeBudget - wall()) : perStep * (totalSteps - step);
      const shownTotal = timeBudget !== null ? Math.max(step, Math.round(step / Math.max(progress(), 1e-9))) : totalSteps;
      emit({ type: 'step', step, totalSteps: shownTotal, loss, lr, mu, gradNorm: gradNorm!, tokens: stepTokens, tokensPerSecond: stepTokens / dt, elapsed: seconds, eta });
      const last = timeBudget !== null ? wall() >= timeBudget : step === totalSteps;
      let checkpoint = options.signal?.aborted === true;
      if (evalEvery !== null ? evalEvery > 0 && step % evalEvery === 0 && !last : progress() >= nextTimedEval && !last) {
        await validate(step);
        nextTimedEval = (Math.floor(progress() * 10) + 1) / 10;
        checkpoint ||= checkpointEvery === null;
      }
      if (checkpointEvery !== null && step % checkpointEvery === 0 && !last) checkpoint = true;
      if (checkpoint) saveNow();
    }
    if (options.signal?.aborted) {
      saveNow();
      throw new AlignCancelledError(`cancelled after step ${step}${Number.isFinite(totalSteps) ? ` of ${totalSteps}` : ''}; the checkpoint in ${checkpointDir(out)} keeps it — continue with the same command and --resume`);
    }
    await validate(step);
    saveNow();

    // ── outputs ──
    emit({ type: 'stage', message: 'writing the adapter' });
    const adapter = writeAdapter(out, pkg, options.lora, slots, values);
    let mergedPackage: string | null = null;
    if (merge && !blocker) {
      emit({ type: 'stage', message: 'writing the merged package' });
      const merged = writeMergedPackage(out, pkg, adapter.dir);
      mergedPackage = merged.dir;
      if (merged.sourceChanged) notes.push(`the source checkpoint ${pkg.manifest.source.path} changed since ${pkg.dir} was converted; the merged package uses it as it is now`);
    }
    const trainLosses = history.map((h) => h.loss);
    const lastTen = trainLosses.slice(-10);
    const validation = {
      before: evals[0] ?? null,
      after: evals.length > 1 ? evals[evals.length - 1] : null,
      best: evals.reduce<EvalRecord | null>((b, e) => (b === null || e.loss < b.loss ? e : b), null),
      all: evals,
    };
    const report: AlignReport = {
      package: pkg.dir,
      out,
      provider,
      data: dataset.summary,
      settings: { ...runSettings, lossFrom, evalEvery, checkpointEvery, magSchedule: mag, provider: sessions.provider?.reason ?? provider },
      steps: { done: step, total: Number.isFinite(totalSteps) ? totalSteps : step, resumedFrom: options.resume ? startStep : null },
      seconds,
      wallSeconds: wall(),
      tokens,
      tokensPerSecond: tokens / Math.max(seconds, 1e-9),
      train: { firstLoss: trainLosses[0] ?? null, lastLoss: trainLosses.at(-1) ?? null, meanLastTen: lastTen.length ? lastTen.reduce((a, b) => a + b, 0) / lastTen.length : null },
      validation,
      adapter: adapter.dir,
      mergedPackage,
      notes: [...notes, ...dataset.summary.notes],
    };
    fs.writeFileSync(path.join(out, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    return report;
  } finally {
    await sessions.release();
  }
}
