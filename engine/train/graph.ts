// Training and evaluation graphs for a package: the package's own decoder graph — the very nodes
// inference runs — specialised to one fixed-length sequence from an empty state, with LoRA on the
// projections, a masked next-token loss, and (for training) the gradients of the LoRA matrices.
//
// The sequence is cut into graph runs exactly as the runtime cuts a call of that length (Titan
// graphs hold at most runCapacity tokens per run); the runs are chained inside one graph, each run's
// state outputs (window keys/values, linear-attention state, pooling rows) bound to the next run's
// state inputs, so gradients flow through the recurrence across runs as well as within them.
//
// Interface (T = sequence length, every shape static):
//   inputs   input_ids [T] int64 · targets [T] int64 · loss_weights [T] float32 (0 = not scored;
//            the trainer puts 1/tokens-in-the-batch there) · mag_weight [] float32 (Titan packages: μ)
//            · lora.{i}.{module}.A [r, in], .B [out, r] · train graphs with dropout: .dropout_mask [T, in] bool
//   outputs  loss [] = Σ_t w_t·nll_t · nll [T] (−log p(target_t)) · train graphs: grad.{A/B input name}
import { GraphBuilder, type Value } from '../graph/builder';
import { gradients } from '../graph/autodiff';
import { buildDecoderGraph } from '../graph/transformer';
import { ModelError } from '../model/errors';
import { LizaExtension } from '../titanize/liza';
import type { LoadedPackage } from '../titanize/package';
import type { TpttSettings } from '../titanize/settings';
import { loraProjection, type LoraSlot, type LoraSpec } from './lora';
import { planRuns } from '../runtime/session';

export interface TrainingGraphOptions {
  /** Tokens per sequence (T). */
  sequence: number;
  lora: LoraSpec;
  /** train: loss, per-token NLL and LoRA gradients; eval: loss and NLL only (no dropout). */
  kind: 'train' | 'eval';
  /**
   * Activation precision (the decoder's `compute`): float16 keeps the residual stream, projections and
   * their gradients in half precision (norms, softmax, the LiZA state and the loss in float32); the
   * LoRA matrices stay float32 inputs, cast in the graph. GPU providers only.
   */
  compute?: 'float32' | 'float16';
  /**
   * Train graphs: recompute each decoder layer's activations in the backward pass (gradient
   * checkpointing per layer and run) instead of keeping them all — less memory, about one more forward.
   */
  recompute?: boolean;
  /** Name of the weights file relative to where the graph is saved (default the package's). */
  weightsFile?: string;
}

export interface TrainingGraph {
  bytes: Uint8Array;
  slots: LoraSlot[];
  /** Whether the graph takes mag_weight (Titan packages). */
  magInput: boolean;
  /** Whether the graph takes dropout masks. */
  dropoutMasks: boolean;
  /** Tokens per chained run. */
  runs: number[];
  nodeCount: number;
}

// How a call is cut into graph runs: the runtime's own plan, so training chains runs exactly as inference does.
export { planRuns };

/** The state output that feeds a state input in the next run. */
function stateOutputFor(input: string): string {
  return input.startsWith('past_') ? input.replace('past_', 'present_') : input.replace(/^state_in\./, 'state_out.');
}

export interface TrainingForward {
  loss: Value;
  nll: Value;
  slots: LoraSlot[];
  magInput: boolean;
  dropoutMasks: boolean;
  runs: number[];
}

/** The forward part (inputs, chained decoder runs with LoRA, loss head) built into `g`. */
export function buildTrainingForward(g: GraphBuilder, pkg: LoadedPackage, options: Omit<TrainingGraphOptions, 'weightsFile'>): TrainingForward {
  const { config, manifest } = pkg;
  const T = options.sequence;
  if (config.vocabSize > 2 ** 24) throw new ModelError(`vocabularies above 2²⁴ tokens are not supported for training (${config.vocabSize})`);
  if (!Number.isInteger(T) || T < 2) throw new ModelError(`training sequences need at least 2 tokens, got ${T}`);
  const settings = manifest.kind === 'titan' ? (manifest.tptt as unknown as TpttSettings | undefined) : undefined;
  if (manifest.kind === 'titan' && !settings) throw new ModelError(`${pkg.dir}: Titan package without TPTT settings in its manifest; convert it again`);
  const dropout = options.kind === 'train' && options.lora.dropout > 0;

  const inputIds = g.input('input_ids', 'int64', [T]);
  const targets = g.input('targets', 'int64', [T]);
  const lossWeights = g.input('loss_weights', 'float32', [T]);
  const mag = settings ? g.input('mag_weight', 'float32', []) : null;
  const compute = options.compute ?? 'float32';
  const lora = loraProjection(config, options.lora, T, { dropout, compute });
  lora.declare(g);

  const runs = planRuns(manifest, 0, T);
  let carried = new Map<string, Value>();
  const logits: Value[] = [];
  let start = 0;
  runs.forEach((len, index) => {
    const runStart = start;
    const outputs = new Map<string, Value>();
    g.bindInputs((name, dtype, shape) => {
      if (name === 'input_ids') return g.op('Slice', [inputIds, g.ints([runStart]), g.ints([runStart + len]), g.ints([0])]);
      if (name === 'logits_rows') return g.ints(Array.from({ length: len }, (_, i) => i));
      if (name === 'call_start') return g.constant('bool', [1], [index === 0 ? 1 : 0]);
      if (name === 'stream_position') return g.ints([runStart]);
      if (name.startsWith('past_') || name.startsWith('state_in.')) {
        const prev = carried.get(stateOutputFor(name));
        if (prev) return prev;
        if (dtype !== 'float32' && dtype !== 'float16') throw new Error(`training graph: state input ${name} is ${dtype}`);
        const dims = shape.map((d) => (typeof d === 'number' ? d : 0));
        return g.constant(dtype, dims, []);
      }
      if (name.startsWith('lora.')) return undefined;
      throw new Error(`training graph: the decoder graph asks for an input ${name} this builder does not know`);
    });
    g.captureOutputs((name, value) => outputs.set(name, value));
    g.within(`run${index}`, () =>
      buildDecoderGraph(g, config, manifest.weights.tensors, {
        window: manifest.window,
        compute,
        extension: settings ? new LizaExtension(config, settings, 'segment', { magWeight: mag!, runTokens: manifest.runCapacity }) : undefined,
        projection: (gb, layer, name, x, y) => lora.hook(gb, layer, name, x, y, { start: runStart, count: len }),
      }),
    );
    g.bindInputs(null);
    g.captureOutputs(null);
    const runLogits = outputs.get('logits');
    if (!runLogits) throw new Error('training graph: the decoder graph produced no logits');
    logits.push(runLogits);
    outputs.delete('logits');
    carried = outputs;
    start += len;
  });

  // ── loss: −log softmax(logits)[target], weighted ──
  // Written with Max/Exp/Log/ReduceSum and a float one-hot rather than LogSoftmax and an int64 compare,
  // which the WebGPU provider would run on the CPU (copying [T, V] logits both ways every step).
  const V = config.vocabSize;
  const all = logits.length === 1 ? logits[0] : g.op('Concat', logits, { axis: 0 }); // [T, V]
  const max = g.op('ReduceMax', [all, g.ints([-1])], { keepdims: 1 }); // [T, 1]
  const shifted = g.op('Sub', [all, max]);
  const lse = g.op('Add', [max, g.op('Log', [g.op('ReduceSum', [g.op('Exp', [shifted]), g.ints([-1])], { keepdims: 1 })])]); // [T, 1]
  const vocab = g.constant('float32', [1, V], Float32Array.from({ length: V }, (_, i) => i));
  const target = g.op('Unsqueeze', [g.op('Cast', [targets], { to: 1 }), g.ints([1])]); // [T, 1], exact below 2²⁴
  const picked = g.op('ReduceSum', [g.op('Where', [g.op('Equal', [target, vocab]), all, g.float(0)]), g.ints([-1])], { keepdims: 1 }); // [T, 1]
  const nll = g.op('Reshape', [g.op('Sub', [lse, picked]), g.ints([T])]); // [T]
  const loss = g.op('ReduceSum', [g.op('Mul', [nll, lossWeights])], { keepdims: 0 }); // []
  return { loss, nll, slots: lora.slots, magInput: mag !== null, dropoutMasks: dropout, runs };
}

export function buildTrainingGraph(pkg: LoadedPackage, options: TrainingGraphOptions): TrainingGraph {
  const g = new GraphBuilder(`titan-${options.kind}`, options.weightsFile ?? pkg.manifest.weights.file);
  const { loss, nll, slots, magInput, dropoutMasks, runs } = buildTrainingForward(g, pkg, options);
  const T = options.sequence;
  g.output(loss, 'loss', 'float32', []);
  g.output(nll, 'nll', 'float32', [T]);
  if (options.kind === 'train') {
    const params = slots.flatMap((s) => [s.a, s.b]);
    // Layer nodes are named run{r}/layers.{i}/… (the builder's scopes): one segment per layer and run.
    const layerOf = (node: { name?: string | null }) => /^(run\d+\/layers\.\d+)\//.exec(node.name ?? '')?.[1] ?? null;
    const grads = gradients(
      g,
      loss,
      params.map((name) => ({ name })),
      options.recompute ? { recompute: layerOf } : {},
    );
    slots.forEach((s, k) => {
      g.output(grads[2 * k], `grad.${s.a}`, 'float32', [options.lora.r, s.inFeatures]);
      g.output(grads[2 * k + 1], `grad.${s.b}`, 'float32', [s.outFeatures, options.lora.r]);
    });
  }
  return { bytes: g.toBytes({ 'titan.kind': `${pkg.manifest.kind}-${options.kind}` }), slots, magInput, dropoutMasks, runs, nodeCount: g.nodeCount };
}
