// The onnxruntime sessions of a training run: one training graph (loss + LoRA gradients) and one
// evaluation graph (loss only) per sequence length in use, built on first use and cached on disk in
// the run's folder beside a link to the package's weights (graphs name their weights file relative to
// themselves, and onnxruntime refuses paths that leave the graph's folder).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { ModelError } from '../model/errors';
import { createSession, type ProviderChoice, type ProviderReport } from '../runtime/session';
import type { LoadedPackage } from '../titanize/package';
import type { TrainingSequence } from './data';
import { buildTrainingGraph, type TrainingGraph } from './graph';
import { shapeA, shapeB, type LoraSpec } from './lora';

/** Bump when the graphs' construction changes, so cached graphs are rebuilt. */
const GRAPH_FORMAT = 1;

export interface SessionOptions {
  /** Activation precision of the training graphs (evaluation graphs are always float32). */
  trainCompute?: 'float32' | 'float16';
  /** Recompute each layer's activations in the backward pass (training graphs). */
  recompute?: boolean;
  provider: ProviderChoice;
  threads?: number;
  /** Folder for the cached graphs and the weights link. */
  workDir: string;
  onProgress?: (message: string) => void;
}

interface Loaded {
  session: ort.InferenceSession;
  graph: Pick<TrainingGraph, 'slots' | 'magInput' | 'dropoutMasks' | 'runs'>;
}

export interface StepResult {
  /** Σ w_t·nll_t as the graph computed it (the weights carry the batch normalization). */
  loss: number;
  /** −log p(target) per input position. */
  nll: Float32Array;
  /** Gradients in slot order: A₀, B₀, A₁, B₁ … (absent for evaluation). */
  grads: Float32Array[];
}

/** Links (or, failing that, copies) the package's weights into the work folder. */
function linkWeights(pkg: LoadedPackage, workDir: string): void {
  const target = path.join(workDir, pkg.manifest.weights.file);
  const source = path.join(pkg.dir, pkg.manifest.weights.file);
  const stat = fs.statSync(source);
  if (fs.existsSync(target)) {
    const t = fs.statSync(target);
    if (t.size === stat.size && (t.ino === stat.ino || t.mtimeMs >= stat.mtimeMs)) return;
    fs.rmSync(target, { force: true });
  }
  try {
    fs.linkSync(source, target);
  } catch {
    try {
      fs.symlinkSync(source, target);
    } catch {
      fs.copyFileSync(source, target);
    }
  }
}

export class TrainingSessions {
  private readonly cache = new Map<string, Promise<Loaded>>();
  provider: ProviderReport | null = null;

  constructor(
    private readonly pkg: LoadedPackage,
    private readonly lora: LoraSpec,
    private readonly options: SessionOptions,
  ) {
    fs.mkdirSync(options.workDir, { recursive: true });
    linkWeights(pkg, options.workDir);
  }

  /** Identifies a graph: the package, the LoRA layout and the graph's own parameters. */
  private graphKey(kind: 'train' | 'eval', T: number): string {
    const m = this.pkg.manifest;
    const lora = { r: this.lora.r, alpha: this.lora.alpha, rslora: this.lora.rslora, targets: this.lora.targets, dropout: kind === 'train' && this.lora.dropout > 0 ? this.lora.dropout : 0 };
    const key = JSON.stringify([GRAPH_FORMAT, m.source.weightsSha256, m.kind, m.dtype, m.window, m.tptt ?? null, m.weights.tensors, lora, kind, T, this.computeOf(kind), kind === 'train' && this.options.recompute === true]);
    return createHash('sha256').update(key).digest('hex').slice(0, 16);
  }

  private computeOf(kind: 'train' | 'eval'): 'float32' | 'float16' {
    return kind === 'train' ? (this.options.trainCompute ?? 'float32') : 'float32';
  }

  private load(kind: 'train' | 'eval', T: number): Promise<Loaded> {
    const id = `${kind}-${T}`;
    let p = this.cache.get(id);
    if (!p) {
      p = this.open(kind, T);
      this.cache.set(id, p);
    }
    return p;
  }

  private async open(kind: 'train' | 'eval', T: number): Promise<Loaded> {
    const file = path.join(this.options.workDir, `${kind}-T${T}-${this.graphKey(kind, T)}.onnx`);
    const metaFile = `${file}.json`;
    let graph: Loaded['graph'];
    if (fs.existsSync(file) && fs.existsSync(metaFile)) {
      graph = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as Loaded['graph'];
    } else {
      this.options.onProgress?.(`building the ${kind === 'train' ? 'training' : 'evaluation'} graph for ${T}-token sequences`);
      const built = buildTrainingGraph(this.pkg, { sequence: T, kind, lora: this.lora, compute: this.computeOf(kind), recompute: kind === 'train' && this.options.recompute === true, weightsFile: this.pkg.manifest.weights.file });
      fs.writeFileSync(`${file}.tmp`, built.bytes);
      fs.renameSync(`${file}.tmp`, file);
      graph = { slots: built.slots, magInput: built.magInput, dropoutMasks: built.dropoutMasks, runs: built.runs };
      fs.writeFileSync(metaFile, JSON.stringify(graph));
    }
    this.options.onProgress?.(`loading the ${kind === 'train' ? 'training' : 'evaluation'} graph for ${T}-token sequences`);
    const requested: ProviderChoice = this.provider ? this.provider.provider : this.options.provider;
    const { session, report } = await createSession(() => file, requested, { threads: this.options.threads });
    if (!this.provider) this.provider = report;
    return { session, graph };
  }

  /** Builds and loads the graphs for these lengths ahead of time (so the first step's timing is honest). */
  async prepare(trainLengths: number[], evalLengths: number[]): Promise<void> {
    for (const T of trainLengths) await this.load('train', T);
    for (const T of evalLengths) await this.load('eval', T);
  }

  /**
   * Runs one sequence padded to T inputs. `weight` multiplies each scored target's NLL (1 / tokens in the
   * batch, so the summed gradients are the batch mean). `mask` draws the dropout masks (train only).
   */
  async run(
    kind: 'train' | 'eval',
    T: number,
    seq: TrainingSequence,
    params: ReadonlyMap<string, Float32Array>,
    mu: number,
    weight: number,
    random: (() => number) | null,
  ): Promise<StepResult> {
    const { session, graph } = await this.load(kind, T);
    const n = seq.tokens.length - 1;
    if (n > T) throw new Error(`sequence of ${n} inputs does not fit a ${T}-token graph`);
    const ids = new BigInt64Array(T);
    const targets = new BigInt64Array(T);
    const weights = new Float32Array(T);
    for (let i = 0; i < n; i++) {
      ids[i] = BigInt(seq.tokens[i]);
      targets[i] = BigInt(seq.tokens[i + 1]);
      weights[i] = seq.scored[i] ? weight : 0;
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [T]),
      targets: new ort.Tensor('int64', targets, [T]),
      loss_weights: new ort.Tensor('float32', weights, [T]),
    };
    if (graph.magInput) feeds.mag_weight = new ort.Tensor('float32', Float32Array.from([mu]), []);
    for (const s of graph.slots) {
      feeds[s.a] = new ort.Tensor('float32', paramOf(params, s.a), shapeA(s, this.lora.r));
      feeds[s.b] = new ort.Tensor('float32', paramOf(params, s.b), shapeB(s, this.lora.r));
      if (graph.dropoutMasks && s.mask) {
        if (!random) throw new Error('training with dropout needs a random source');
        feeds[s.mask] = new ort.Tensor('bool', dropoutMask(T * s.inFeatures, this.lora.dropout, random), [T, s.inFeatures]);
      }
    }
    const fetches = kind === 'train' ? ['loss', 'nll', ...graph.slots.flatMap((s) => [`grad.${s.a}`, `grad.${s.b}`])] : ['loss', 'nll'];
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await session.run(feeds, fetches);
    } catch (e) {
      throw new ModelError(`the ${kind} graph failed on ${this.provider?.provider ?? 'its provider'}: ${String((e as Error).message ?? e).split('\n')[0]}`);
    }
    const loss = Number((out.loss.data as Float32Array)[0]);
    const nll = (out.nll.data as Float32Array).slice(0, n);
    const grads = kind === 'train' ? fetches.slice(2).map((f) => out[f].data as Float32Array) : [];
    return { loss, nll, grads };
  }

  async release(): Promise<void> {
    for (const p of this.cache.values()) {
      try {
        await (await p).session.release();
      } catch {
        // a session that failed to open has nothing to release
      }
    }
    this.cache.clear();
  }
}

function paramOf(params: ReadonlyMap<string, Float32Array>, name: string): Float32Array {
  const v = params.get(name);
  if (!v) throw new Error(`no values for LoRA matrix ${name}`);
  return v;
}

/** keep with probability 1 − p (as bytes for a bool tensor). */
function dropoutMask(count: number, p: number, random: () => number): Uint8Array {
  const mask = new Uint8Array(count);
  for (let i = 0; i < count; i++) mask[i] = random() >= p ? 1 : 0;
  return mask;
}
