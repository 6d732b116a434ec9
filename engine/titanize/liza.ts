// LiZA linear attention + Memory-as-Gate, injected into every attention layer of the decoder graph.
//
// Per layer, from the layer's own raw projections q [T, H·d], k, v [T, Hk·d] (bias included, before
// norms and RoPE; k and v repeated over the GQA groups):
//   gates   g_k = σ(mean of k over the token and the two before it), g_v likewise; α, β chosen by the
//           recurrent config (α scales the state's value columns; β the write)
//   feature q̂ = L2norm(silu(q)), k̂ = L2norm(silu(k)) per head (eps 1e-6), v̂ = v/√d
//   order n each token becomes n virtual tokens (derivative / rotation trick, the reference's order)
//   core    "exact": S̃ = S·diag(α), u = β⊙v̂ − S̃ᵀ(β⊙k̂), S ← S̃ + k̂uᵀ, o = Sᵀq̂ — computed per run in
//           the chunk-parallel (UT) form; "tptt-0.12": the reference's chunked scan, quirks included
//   output  RMS-normalized concatenation of heads (eps 1e-6) → the layer's o_proj
//   MaG     out = (1−μ)·softmax + μ·linear (+ their product with cross_gate)
// docs/tptt-semantics.md gives the full specification and where the two semantics differ.
//
// Each run sees at most `max_chunk_size` real tokens (the runtime splits longer segments), padded
// inside the graph to a fixed power of two so the triangular solve is a fixed, loop-free recursion
// of batched matmuls (no Scan/Loop, which fall back to the CPU under WebGPU).
import type { GraphBuilder, Value } from '../graph/builder';
import { add, concat, dimOf, div, l2Normalize, matmul, mul, reshape, sigmoid, silu, slice, sub, transpose, unsqueeze } from '../graph/ops';
import type { AttentionContext, AttentionExtension } from '../graph/transformer';
import type { ModelConfig } from '../model/config';
import type { GateChoice, TpttSettings } from './settings';

/** Virtual-token sequence length a run is padded to: the next power of two ≥ order × chunk. */
export function paddedVirtualLength(settings: TpttSettings): number {
  const n = settings.recurrent_config.order * settings.max_chunk_size;
  return 2 ** Math.ceil(Math.log2(Math.max(2, n)));
}

/** Whether a run of this package can hold several chunks: exact semantics without per-column decay. */
export function multiChunk(settings: TpttSettings): boolean {
  return settings.semantics === 'exact' && settings.recurrent_config.alpha_gate === 'c';
}

/**
 * Real tokens one graph run accepts (the runtime cuts longer calls; runs never cross a chunk boundary
 * they cannot hold): `runTokens` rounded down to whole chunks for multi-chunk graphs, else one chunk.
 */
export function runCapacity(settings: TpttSettings, runTokens = DEFAULT_RUN_TOKENS): number {
  const C = settings.max_chunk_size;
  return multiChunk(settings) ? C * Math.max(1, Math.floor(runTokens / C)) : C;
}

/**
 * Default run length of multi-chunk graphs: long enough to amortize per-run costs. Longer runs
 * (`titanize --run-tokens`) were slower on the H200 — the softmax branch's [T, W+T] scores grow with
 * the run — and shorter ones launch more kernels per token (bench/gpu/README.md).
 */
export const DEFAULT_RUN_TOKENS = 512;
/** The longest run a package may ask for (memory for activations grows with it). */
export const MAX_RUN_TOKENS = 8192;

/** The reference's initial state value (tptt-0.12 semantics); exact semantics start from zero. */
const TPTT_INITIAL_STATE = 1e-6;

export class LizaExtension implements AttentionExtension {
  private callStart!: Value;
  private streamPosition!: Value;
  private readonly H: number;
  private readonly Hk: number;
  private readonly d: number;
  private readonly n: number;
  private readonly Np: number;

  /** Chunk slots per run (multi-chunk exact graphs) or 1. */
  private readonly slots: number;

  constructor(
    private readonly config: ModelConfig,
    private readonly settings: TpttSettings,
    /** `segment`: runs of 1..runCapacity tokens; `step`: exactly one token (the decode graph). */
    private readonly mode: 'segment' | 'step' = 'segment',
    /**
     * magWeight — training graphs: μ from a graph value (a float scalar) instead of the settings'
     * constant, for μ schedules. runTokens — the package's run length (runCapacity).
     */
    private readonly options: { magWeight?: Value; runTokens?: number } = {},
  ) {
    this.H = config.numHeads;
    this.Hk = config.numKvHeads;
    this.d = config.headDim;
    this.n = settings.recurrent_config.order;
    this.Np = paddedVirtualLength(settings);
    this.slots = runCapacity(settings, options.runTokens) / settings.max_chunk_size;
  }

  declare(g: GraphBuilder): void {
    // call_start: first run of a forward call (the reference resets its pooling and state per call).
    this.callStart = g.input('call_start', 'bool', [1]);
    // stream_position: tokens consumed before this run (for the state activation at multiples of C).
    this.streamPosition = g.input('stream_position', 'int64', [1]);
  }

  mix(g: GraphBuilder, ctx: AttentionContext): Value {
    if (this.mode === 'step' && this.settings.semantics === 'exact' && this.n === 1) return this.mixOneToken(g, ctx);
    const { H, Hk, d, n } = this;
    const i = ctx.layer;
    const tptt = this.settings.semantics === 'tptt-0.12';
    const rc = this.settings.recurrent_config;
    const { S: sIn, poolK: poolKIn, poolV: poolVIn, hist: histIn } = this.stateInputs(g, i);
    const T = ctx.newTokens; // [1]
    // The linear branch and its state always compute in float32, whatever the activation dtype.
    ctx = this.inFloat32(g, ctx);

    // ── gates from causally pooled raw k and v ──
    const [poolK, poolKOut] = this.causalMean(g, ctx.k, poolKIn, T, tptt);
    const [poolV, poolVOut] = this.causalMean(g, ctx.v, poolVIn, T, tptt);
    g.output(poolKOut, `state_out.${i}.pool_k`, 'float32', [2, Hk * d]);
    g.output(poolVOut, `state_out.${i}.pool_v`, 'float32', [2, Hk * d]);
    const gk = this.repeatKv(g, sigmoid(g, poolK)); // [H, T, d]
    const gv = this.repeatKv(g, sigmoid(g, poolV));
    const gate = (choice: GateChoice, constant: number): Value | number =>
      choice === 'k' ? gk : choice === 'v' ? gv : choice === 'kv' ? mul(g, gk, gv) : constant;
    const alpha = gate(rc.alpha_gate, 1);
    const beta = gate(rc.beta_gate, 0.5);

    // ── features ──
    const q = this.unitRows(g, silu(g, transpose(g, reshape(g, ctx.q, [-1, H, d]), [1, 0, 2])), ctx.fusedOps); // [H, T, d]
    const k = this.unitRows(g, silu(g, this.repeatKv(g, ctx.k)), ctx.fusedOps); // [H, T, d]
    const v = mul(g, this.repeatKv(g, ctx.v), g.float(1 / Math.sqrt(d))); // [H, T, d]

    // ── virtual tokens (order n) with history from previous tokens ──
    let qv = q;
    let kv = k;
    let vv = v;
    let av: Value | number = alpha;
    let bv: Value | number = beta;
    if (n > 1) {
      const ones = mul(g, q, g.float(0));
      const full = (x: Value | number): Value => (typeof x === 'number' ? add(g, ones, g.float(x)) : x);
      const current = [q, k, v, full(alpha), full(beta)];
      const stacked = concat(g, current.map((x) => unsqueeze(g, x, [0])), 0); // [5, H, T, d]
      // At the stream start the history is zeros, as the reference pads the start of a sequence.
      const zeros = g.constant('float32', [5, H, n - 1, d], new Float32Array(5 * H * (n - 1) * d));
      const histAll = concat(g, [zeros, histIn!], 2);
      const hist = slice(g, histAll, [-(n - 1)], [2 ** 62], [2]); // [5, H, n−1, d]
      const ext = concat(g, [hist, stacked], 2); // [5, H, n−1+T, d]
      g.output(slice(g, ext, [-(n - 1)], [2 ** 62], [2]), `state_out.${i}.hist`, 'float32', [5, H, n - 1, d]);
      const expandedAll = this.virtualTokens(g, ext, T); // [5, H, T·n, d]
      const pick = (j: number) => g.op('Gather', [expandedAll, g.int(j)], { axis: 0 });
      qv = pick(0);
      kv = pick(1);
      vv = pick(2);
      // Constant gates are repeated as they are ("cte" in the reference).
      av = typeof alpha === 'number' ? alpha : pick(3);
      bv = typeof beta === 'number' ? beta : pick(4);
    }

    const sEff = this.initialState(g, sIn, tptt);
    let out: Value;
    let sNext: Value;
    if (tptt) [out, sNext] = this.tpttChunk(g, qv, kv, vv, av, bv, sEff, T);
    else if (this.mode === 'step') [out, sNext] = this.exactStep(g, qv, kv, vv, av, bv, sEff);
    else if (typeof av === 'number') [out, sNext] = this.exactRunChunks(g, qv, kv, vv, bv, sEff, T);
    else [out, sNext] = this.exactRun(g, qv, kv, vv, av, bv, sEff, T);
    g.output(unsqueeze(g, sNext, [0]), `state_out.${i}.S`, 'float32', [1, H, d, d]);

    return this.gateWithSoftmax(g, ctx, reshape(g, transpose(g, out, [1, 0, 2]), [-1, H * d]));
  }

  /**
   * x / max(‖x‖, 1e-6) along the last axis (the feature maps' L2 normalization). With fused ops, one
   * RMS norm kernel instead of five: x / √(mean(x²) + ε) · 1/√d = x / √(‖x‖² + ε·d), and ε·d = 1e-12
   * makes that x/‖x‖ wherever ‖x‖ is not within a few 1e-6 of zero.
   */
  private unitRows(g: GraphBuilder, x: Value, fused: boolean): Value {
    if (!fused) return l2Normalize(g, x, 1e-6);
    const { d } = this;
    return g.op('SimplifiedLayerNormalization', [x, g.constant('float32', [d], new Float32Array(d).fill(1 / Math.sqrt(d)))], { axis: -1, epsilon: { float: 1e-12 / d } });
  }

  /** The context with q, k and v in float32: in half-precision graphs one Cast of the fused projection, split again. */
  private inFloat32(g: GraphBuilder, ctx: AttentionContext): AttentionContext {
    if (ctx.dtype === 'float32') return ctx;
    const { H, Hk, d } = this;
    const [q, k, v] = g.op('Split', [g.op('Cast', [ctx.qkv], { to: 1 }), g.ints([H * d, Hk * d, Hk * d])], { axis: 1 }, 3);
    return { ...ctx, q, k, v };
  }

  /**
   * The decode step (one token, exact semantics, order 1) in few, small ops. Decode is bound by the
   * per-op cost of launching kernels, not by arithmetic (bench/gpu/README.md), so this is the general
   * path's math rearranged for T = 1: the query heads stay grouped under their key/value head
   * ([Hk, G, …]), so k̂, v̂ and the gates broadcast over the group instead of being repeated; q and k
   * share one feature map; pooling is one mean over the last three rows. Same state layout as the
   * segment graph, which the step alternates with.
   */
  private mixOneToken(g: GraphBuilder, ctx: AttentionContext): Value {
    const { H, Hk, d } = this;
    const G = H / Hk;
    const i = ctx.layer;
    const rc = this.settings.recurrent_config;
    const { S: sIn, poolK: poolKIn, poolV: poolVIn } = this.stateInputs(g, i);
    ctx = this.inFloat32(g, ctx);

    // Gates: the mean of this token's raw row and the two before it; at the stream start (no rows
    // carried) the token stands in for the missing ones, as in causalMean.
    const pooled = (x: Value, histIn: Value, name: string): Value => {
      const rows = concat(g, [x, x, histIn, x], 0); // [3 + Pk, Hk·d]
      g.output(slice(g, rows, [-2], [2 ** 62], [0]), `state_out.${i}.${name}`, 'float32', [2, Hk * d]);
      return g.op('ReduceMean', [slice(g, rows, [-3], [2 ** 62], [0]), g.ints([0])], { keepdims: 1 }); // [1, Hk·d]
    };
    const perKvHead = (x: Value) => reshape(g, x, [Hk, 1, 1, d]);
    const poolK = pooled(ctx.k, poolKIn, 'pool_k');
    const poolV = pooled(ctx.v, poolVIn, 'pool_v');
    // Only the gates the recurrent config uses are built (the pooled rows are carried either way).
    const gates = new Map<'k' | 'v', Value>();
    const gateOf = (x: 'k' | 'v'): Value => gates.get(x) ?? gates.set(x, perKvHead(sigmoid(g, x === 'k' ? poolK : poolV))).get(x)!;
    const gate = (choice: GateChoice): Value | null => (choice === 'k' || choice === 'v' ? gateOf(choice) : choice === 'kv' ? mul(g, gateOf('k'), gateOf('v')) : null);
    const alpha = gate(rc.alpha_gate);
    const beta = gate(rc.beta_gate) ?? g.float(0.5);

    // Features q̂ = L2norm(silu(q)), k̂ likewise, in one pass over [Hk, G+1, 1, d]; v̂ = v/√d.
    const qk = concat(g, [reshape(g, ctx.q, [Hk, G, 1, d]), perKvHead(ctx.k)], 1);
    const features = this.unitRows(g, silu(g, qk), ctx.fusedOps);
    const [q, k] = g.op('Split', [features, g.ints([G, 1])], { axis: 1 }, 2); // [Hk, G, 1, d], [Hk, 1, 1, d]
    const v = mul(g, perKvHead(ctx.v), g.float(1 / Math.sqrt(d)));

    // S̃ = S·diag(α); u = β⊙v̂ − S̃ᵀ(β⊙k̂); S ← S̃ + k̂uᵀ; o = Sᵀq̂. S is [Hk, G, d, d].
    const s0 = this.initialState(g, sIn, false, [Hk, G, d, d]);
    const decayed = alpha ? mul(g, s0, alpha) : s0;
    const u = sub(g, mul(g, v, beta), matmul(g, mul(g, k, beta), decayed)); // [Hk, G, 1, d]
    const sNext = add(g, decayed, matmul(g, reshape(g, k, [Hk, 1, d, 1]), u));
    // The token reads the state it wrote; the squash (non-linear modes) applies to what is carried on.
    const carried = rc.linear ? sNext : this.activateAt(g, sNext, this.endsChunk(g, g.ints([1])));
    g.output(reshape(g, carried, [1, H, d, d]), `state_out.${i}.S`, 'float32', [1, H, d, d]);
    const out = matmul(g, q, sNext); // [Hk, G, 1, d]: head h = kv·G + g, as repeat_interleave orders them
    return this.gateWithSoftmax(g, ctx, reshape(g, out, [1, H * d]));
  }

  /**
   * The linear branch's heads [T, H·d] → RMS-normalized → o_proj, mixed with the softmax branch by
   * Memory-as-Gate. `ctx` holds float32 q, k, v here and the softmax branch's heads in the activation
   * dtype; the result is in the activation dtype.
   */
  private gateWithSoftmax(g: GraphBuilder, ctx: AttentionContext, heads: Value): Value {
    const toAct = (x: Value) => (ctx.dtype === 'float32' ? x : g.op('Cast', [x], { to: 10 }));
    const f32 = (x: Value) => (ctx.dtype === 'float32' ? x : g.op('Cast', [x], { to: 1 }));
    const HD = this.H * this.d;
    const mu = this.settings.mag_weight;
    const muValue = this.options.magWeight;
    if (ctx.fusedOps && !muValue && !this.settings.base_scale_attn && !this.settings.cross_gate) {
      // Inference with the plain gate: (1−μ)·o(softmax heads) + μ·o(norm(linear heads)) is
      // o((1−μ)·softmax heads + μ·norm(linear heads)) (o_proj is linear, its bias weighted 1−μ + μ),
      // so the heads are mixed and projected once, μ riding in the norm's weight. It mixes in the
      // activation dtype, as the residual add after it does; fewer kernels and one matmul a layer fewer.
      const normedMu = g.op('SimplifiedLayerNormalization', [heads, g.constant('float32', [HD], new Float32Array(HD).fill(mu))], { axis: -1, epsilon: { float: 1e-6 } });
      const keep = g.floatIn(ctx.dtype, 1 - mu);
      return ctx.oProj(add(g, mul(g, ctx.softmaxHeads, keep), toAct(normedMu)));
    }
    const normed = ctx.fusedOps
      ? g.op('SimplifiedLayerNormalization', [heads, g.constant('float32', [HD], new Float32Array(HD).fill(1))], { axis: -1, epsilon: { float: 1e-6 } })
      : div(g, heads, g.op('Sqrt', [add(g, g.op('ReduceMean', [mul(g, heads, heads), g.ints([-1])], { keepdims: 1 }), g.float(1e-6))]));
    const softmaxOut = f32(ctx.oProj(ctx.softmaxHeads));
    let linearOut = f32(ctx.oProj(toAct(normed))); // [T, C]
    if (this.settings.base_scale_attn) {
      const rms = g.op('Sqrt', [add(g, g.op('ReduceMean', [mul(g, softmaxOut, softmaxOut), g.ints([-1])], { keepdims: 1 }), g.float(1e-5))]);
      linearOut = mul(g, rms, linearOut);
    }

    // ── Memory-as-Gate ──
    const softW = mul(g, softmaxOut, muValue ? sub(g, g.float(1), muValue) : g.float(1 - mu));
    const linW = mul(g, linearOut, muValue ?? g.float(mu));
    let mixed = add(g, softW, linW);
    if (this.settings.cross_gate) mixed = add(g, mixed, mul(g, softW, linW));
    return toAct(mixed);
  }

  /** The state after a chunk boundary: the normalized tanh-GELU where `at` holds (non-linear modes only). */
  private activateAt(g: GraphBuilder, S: Value, at: Value | null): Value {
    if (this.settings.recurrent_config.linear) return S;
    return at === null ? unlinearActivation(g, S) : g.op('Where', [at, unlinearActivation(g, S), S]);
  }

  /** [1] bool: the stream position after `advance` more tokens is a multiple of the chunk size. */
  private endsChunk(g: GraphBuilder, advance: Value): Value {
    return g.op('Equal', [g.op('Mod', [add(g, this.streamPosition, advance), g.int(this.settings.max_chunk_size)]), g.ints([0])]);
  }

  /** [T, Hk·d] → [H, T, d], each kv head repeated for its G query heads (repeat_interleave). */
  private repeatKv(g: GraphBuilder, x: Value): Value {
    const { H, Hk, d } = this;
    const G = H / Hk;
    const x4 = unsqueeze(g, reshape(g, x, [-1, Hk, d]), [2]); // [T, Hk, 1, d]
    const rep = G === 1 ? x4 : g.op('Expand', [x4, concat(g, [dimOf(g, x4, 0), g.ints([Hk, G, d])], 0)]);
    return transpose(g, reshape(g, rep, [-1, H, d]), [1, 0, 2]);
  }

  /**
   * Causal mean over the token and the two before it. The previous two raw rows come from the state;
   * at the stream start (and, in tptt-0.12 semantics, at each call start) the first row is replicated.
   * Returns the pooled [T, F] and the two rows to carry.
   */
  private causalMean(g: GraphBuilder, x: Value, histIn: Value, T: Value, tptt: boolean): [Value, Value] {
    const histLen = dimOf(g, histIn, 0);
    const start = tptt ? g.op('Where', [this.callStart, histLen, g.ints([0])]) : g.ints([0]);
    const hist = slice(g, histIn, start, histLen, [0]);
    const first = slice(g, x, [0], [1], [0]);
    const all = concat(g, [first, first, hist, x], 0);
    const total = dimOf(g, all, 0);
    const padded = slice(g, all, sub(g, total, add(g, T, g.ints([2]))), total, [0]); // [T+2, F]
    const a = slice(g, padded, g.ints([0]), T, [0]);
    const b = slice(g, padded, g.ints([1]), add(g, T, g.ints([1])), [0]);
    const c = slice(g, padded, g.ints([2]), add(g, T, g.ints([2])), [0]);
    const mean = mul(g, add(g, add(g, a, b), c), g.float(1 / 3));
    return [mean, slice(g, padded, [-2], [2 ** 62], [0])];
  }

  /**
   * Layer i's state inputs, declared in one place for the segment and step graphs (which alternate
   * on one state): S [Ps, H, d, d], the pooled rows of raw k and v [Pk, Hk·d], and for order > 1 the
   * history of the last virtual-token inputs [5, H, Ph, d]. Each starts zero-sized (nothing carried).
   */
  private stateInputs(g: GraphBuilder, i: number): { S: Value; poolK: Value; poolV: Value; hist: Value | null } {
    const { H, Hk, d, n } = this;
    return {
      S: g.input(`state_in.${i}.S`, 'float32', ['Ps', H, d, d]),
      poolK: g.input(`state_in.${i}.pool_k`, 'float32', ['Pk', Hk * d]),
      poolV: g.input(`state_in.${i}.pool_v`, 'float32', ['Pk', Hk * d]),
      hist: n > 1 ? g.input(`state_in.${i}.hist`, 'float32', [5, H, 'Ph', d]) : null,
    };
  }

  /**
   * The carried state [H, d, d] (exact semantics: any `shape` of it), or the initial one at the
   * stream start (and per call in tptt-0.12): the last of (initial, state_in), so an empty state_in
   * reads the initial state.
   */
  private initialState(g: GraphBuilder, sIn: Value, tptt: boolean, shape: number[] = [this.H, this.d, this.d]): Value {
    const { H, d } = this;
    const init = g.constant('float32', [1, H, d, d], new Float32Array(H * d * d).fill(tptt ? TPTT_INITIAL_STATE : 0));
    const cand = concat(g, [init, sIn], 0); // [1+Ps, H, d, d]
    if (!tptt) return reshape(g, slice(g, cand, [-1], [2 ** 62], [0]), shape);
    const last = sub(g, dimOf(g, cand, 0), g.ints([1]));
    const idx = g.op('Where', [this.callStart, g.ints([0]), last]);
    return g.op('Gather', [cand, g.op('Squeeze', [idx, g.ints([0])])], { axis: 0 }); // [H, d, d]
  }

  /**
   * Expands [5, H, n−1+T, d] (history + current rows of q̂, k̂, v̂, α, β) into virtual tokens
   * [5, H, T·n, d], virtual token j of real token t at t·n + j.
   */
  private virtualTokens(g: GraphBuilder, ext: Value, T: Value): Value {
    const { n, d } = this;
    const trick = this.settings.recurrent_config.trick;
    const extLen = dimOf(g, ext, 2);
    const current = slice(g, ext, sub(g, extLen, T), extLen, [2]); // [5, H, T, d]
    const derivative = (): Value => {
      // Binomial coefficients (−1)^m·C(n−1, m), normalized by their absolute sum; after the
      // reference's flip, virtual j of token t is coeff[n−1−j] · x_{t−j}.
      const coeffs = Array.from({ length: n }, (_, m) => (m % 2 ? -1 : 1) * binomial(n - 1, m));
      const norm = coeffs.reduce((s, c) => s + Math.abs(c), 0);
      const parts = Array.from({ length: n }, (_, j) => {
        const start = sub(g, sub(g, extLen, T), g.ints([j]));
        const shifted = slice(g, ext, start, sub(g, extLen, g.ints([j])), [2]); // x_{t−j}
        return unsqueeze(g, mul(g, shifted, g.float(coeffs[n - 1 - j] / norm)), [3]);
      });
      return concat(g, parts, 3); // [5, H, T, n, d]
    };
    const rotation = (): Value => {
      // Feature pairs (x[2i], x[2i+1]) rotated by 2πm/n for virtual token m.
      const pairs = reshape(g, current, [5, this.H, -1, d / 2, 2]);
      const x0 = g.op('Gather', [pairs, g.int(0)], { axis: 4 });
      const x1 = g.op('Gather', [pairs, g.int(1)], { axis: 4 });
      const parts = Array.from({ length: n }, (_, m) => {
        const angle = (2 * Math.PI * m) / n;
        const cos = g.float(Math.fround(Math.cos(angle)));
        const sin = g.float(Math.fround(Math.sin(angle)));
        const r0 = sub(g, mul(g, x0, cos), mul(g, x1, sin));
        const r1 = add(g, mul(g, x0, sin), mul(g, x1, cos));
        const rot = reshape(g, concat(g, [unsqueeze(g, r0, [4]), unsqueeze(g, r1, [4])], 4), [5, this.H, -1, d]);
        return unsqueeze(g, rot, [3]);
      });
      return concat(g, parts, 3);
    };
    const expanded = trick === 'dt' ? derivative() : trick === 'rot' ? rotation() : mul(g, add(g, derivative(), rotation()), g.float(0.5));
    return reshape(g, expanded, [5, this.H, -1, d]);
  }

  /**
   * Exact recurrence with α ≡ 1 over a run of up to `slots` chunks (chunk-parallel within a chunk,
   * sequential across chunks). Chunk slots are aligned to absolute multiples of C: the run is padded
   * in front by the stream offset within its chunk, so every slot's boundary is a true chunk
   * boundary. Per chunk (batched over all slots): Ũ = (I+L)⁻¹(β⊙V), W̃ = (I+L)⁻¹B; then in order
   *   U_j = Ũ_j − W̃_j·S,  O_j = Q_j·S + (Q_j K_jᵀ ⊙ causal)·U_j,  S ← S + K_jᵀU_j.
   * Padded tokens have k = β = 0 and change nothing.
   */
  private exactRunChunks(g: GraphBuilder, q: Value, k: Value, v: Value, beta: Value | number, s0: Value, T: Value): [Value, Value] {
    const { H, d, n, Np, slots } = this;
    const C = this.settings.max_chunk_size;
    const betaV = typeof beta === 'number' ? g.float(beta) : beta;
    const offset = g.op('Mod', [this.streamPosition, g.int(C)]); // [1] tokens of this chunk already consumed
    // [H, N, d] virtual → [H, slots, Np, d], slot j holding chunk j's n·C virtual tokens then zeros.
    const toSlots = (x: Value, perToken: number, width: number): Value => {
      const len = dimOf(g, x, 1);
      const front = mul(g, offset, g.ints([perToken]));
      const back = sub(g, g.ints([slots * C * perToken]), add(g, front, len));
      const zero = g.ints([0]);
      const padded = g.op('Pad', [x, concat(g, [zero, front, zero, zero, back, zero], 0)]);
      const chunks = reshape(g, padded, [H, slots, C * perToken, d]);
      if (C * perToken === width) return chunks;
      return g.op('Pad', [chunks, g.ints([0, 0, 0, 0, 0, 0, width - C * perToken, 0])]);
    };
    const K = toSlots(k, n, Np);
    const B = toSlots(mul(g, k, betaV), n, Np);
    const W = toSlots(mul(g, v, betaV), n, Np);
    const Q = toSlots(this.lastVirtual(g, q, T), 1, C); // [H, slots, C, d]
    const inv = blockInverse(g, (s) => m21(g, B, K, [H, slots], Np, s), [H, slots], Np); // [H, slots, Np, Np]
    const Ut = matmul(g, inv, W);
    const Wt = matmul(g, inv, B);
    const causal = g.constant('bool', [C, Np], outputMaskValues(C, Np, n));
    const QK = g.op('Where', [causal, matmul(g, Q, transpose(g, K, [0, 1, 3, 2])), g.float(0)]); // [H, slots, C, Np]
    const KT = transpose(g, K, [0, 1, 3, 2]);
    // Every slot's blocks by Splits (not a Gather per slot and tensor: kernel launches dominate on GPU
    // providers); the slot axis stays as a size-1 axis, S is carried as [H, 1, d, d].
    const [UtJ, WtJ, QJ, QKJ, KTJ] = [Ut, Wt, Q, QK, KT].map((x) => splitOnes(g, x, 1, slots));
    let S = unsqueeze(g, s0, [1]);
    const outs: Value[] = [];
    for (let j = 0; j < slots; j++) {
      const U = sub(g, UtJ[j], matmul(g, WtJ[j], S)); // [H, 1, Np, d]
      outs.push(add(g, matmul(g, QJ[j], S), matmul(g, QKJ[j], U))); // [H, 1, C, d]
      S = add(g, S, matmul(g, KTJ[j], U));
      // Slot j ends at a chunk boundary when the run reaches it: (j+1)·C − offset ≤ T.
      if (!this.settings.recurrent_config.linear) {
        const reached = g.op('LessOrEqual', [sub(g, g.ints([(j + 1) * C]), offset), T]);
        S = this.activateAt(g, S, reached);
      }
    }
    const all = reshape(g, concat(g, outs, 2), [H, slots * C, d]);
    const out = slice(g, all, offset, add(g, offset, T), [1]); // [H, T, d]
    S = g.op('Squeeze', [S, g.ints([1])]);
    return [out, S];
  }

  /** One token (the decode graph): its n virtual tokens applied in order, then o = Sᵀq. */
  private exactStep(g: GraphBuilder, q: Value, k: Value, v: Value, alpha: Value | number, beta: Value | number, s0: Value): [Value, Value] {
    const { n } = this;
    const at = (x: Value, s: number) => slice(g, x, [s], [s + 1], [1]); // [H, 1, d]
    let S = s0;
    for (let s = 0; s < n; s++) {
      const kS = at(k, s);
      const bS = typeof beta === 'number' ? mul(g, kS, g.float(beta)) : mul(g, kS, at(beta, s));
      const wS = typeof beta === 'number' ? mul(g, at(v, s), g.float(beta)) : mul(g, at(v, s), at(beta, s));
      const decayed = typeof alpha === 'number' ? S : mul(g, S, at(alpha, s)); // S·diag(α): value columns
      const u = sub(g, wS, matmul(g, bS, decayed)); // [H, 1, d]
      S = add(g, decayed, matmul(g, transpose(g, kS, [0, 2, 1]), u));
    }
    const out = matmul(g, at(q, n - 1), S); // [H, 1, d]
    return [out, this.activateAt(g, S, this.endsChunk(g, g.ints([1])))];
  }

  /** Pads the virtual axis (1) of [H, N, d] with zeros up to Np. */
  private padVirtual(g: GraphBuilder, x: Value): Value {
    const N = dimOf(g, x, 1);
    const amount = sub(g, g.ints([this.Np]), N);
    const zero = g.ints([0]);
    const pads = concat(g, [zero, zero, zero, zero, amount, zero], 0);
    return g.op('Pad', [x, pads]);
  }

  /**
   * Exact recurrence over this run's virtual tokens in the chunk-parallel form. With α ≡ 1:
   *   U = (I + L)⁻¹(β⊙V − B·S₀), L[t,τ] = b_t·k_τ (τ < t), b = β⊙k
   *   S_end = S₀ + KᵀU,  o_i = S₀ᵀq_i + Σ_{τ ≤ last(i)} (q_i·k_τ) u_τ
   * With α per value column j, every term gains the decay between its two times, D_t/D_τ (D the
   * cumulative product of α within the run), and the solve is done per column.
   */
  private exactRun(g: GraphBuilder, q: Value, k: Value, v: Value, alpha: Value | number, beta: Value | number, s0: Value, T: Value): [Value, Value] {
    const { H, d, Np } = this;
    const b = mul(g, k, typeof beta === 'number' ? g.float(beta) : beta); // [H, N, d]
    const w = mul(g, v, typeof beta === 'number' ? g.float(beta) : beta);
    const K = this.padVirtual(g, k);
    const B = this.padVirtual(g, b);
    const W = this.padVirtual(g, w);
    // Output rows: real token i reads the state after its last virtual token, with that token's q.
    const qLast = this.lastVirtual(g, q, T); // [H, T, d]
    const outMask = this.outputMask(g, T); // [T, Np] bool: τ ≤ n·i + n − 1
    const bsT = matmul(g, B, s0); // [H, Np, d]: b_t · s₀ per column
    if (typeof alpha === 'number') throw new Error('exactRun handles per-column decay; α ≡ 1 uses exactRunChunks');
    // Per-column decay. α may be negative or zero (the virtual-token tricks scale gates by ±½ and
    // zero history), so Π α between two times is kept as magnitude (cumulative log|α|), sign
    // (cumulative count of negatives) and a cumulative count of zeros; padded tokens have α = 1.
    const alphaP = g.op('Pad', [alpha, concat(g, [g.ints([0, 0, 0, 0]), sub(g, g.ints([Np]), dimOf(g, alpha, 1)), g.ints([0])], 0), g.float(1)]);
    const isZero = g.op('Equal', [alphaP, g.float(0)]);
    const cum = (x: Value) => g.op('CumSum', [x, g.int(1)]); // along the virtual axis of [H, Np, d]
    const lc = cum(g.op('Log', [g.op('Where', [isZero, g.float(1), g.op('Abs', [alphaP])])]));
    const nc = cum(cast01(g, g.op('Less', [alphaP, g.float(0)])));
    const zc = cum(cast01(g, isZero));
    /** Π α over (τ, t] from the cumulative triples at t and at τ (shapes broadcast). */
    const between = (t: Value[], tau: Value[], mask?: Value): Value => {
      let dl = sub(g, t[0], tau[0]);
      if (mask) dl = g.op('Where', [mask, dl, g.float(-Infinity)]);
      const sign = g.op('Cos', [mul(g, sub(g, t[1], tau[1]), g.float(Math.PI))]);
      const alive = cast01(g, g.op('Equal', [t[2], tau[2]]));
      return mul(g, mul(g, g.op('Exp', [dl]), sign), alive);
    };
    /** Π α over [0, t]. */
    const fromStart = (t: Value[]): Value => mul(g, mul(g, g.op('Exp', [t[0]]), g.op('Cos', [mul(g, t[1], g.float(Math.PI))])), cast01(g, g.op('Equal', [t[2], g.float(0)])));
    const cumT = [lc, nc, zc].map((x) => transpose(g, x, [0, 2, 1])); // [H, d, Np] each
    const inv = blockInverse(
      g,
      (s) => {
        const base = unsqueeze(g, m21(g, B, K, [H], Np, s), [1]); // [H, 1, nb, s, s]
        const halves = cumT.map((x) => reshape(g, x, [H, d, Np / (2 * s), 2, s]));
        const rows = halves.map((x) => unsqueeze(g, g.op('Gather', [x, g.int(1)], { axis: 3 }), [4])); // [H, d, nb, s, 1]
        const cols = halves.map((x) => unsqueeze(g, g.op('Gather', [x, g.int(0)], { axis: 3 }), [3])); // [H, d, nb, 1, s]
        return mul(g, base, between(rows, cols));
      },
      [H, d],
      Np,
    ); // [H, d, Np, Np]
    const rhs = sub(g, W, mul(g, bsT, fromStart([lc, nc, zc]))); // [H, Np, d]
    const U = transpose(g, squeezeLast(g, matmul(g, inv, unsqueeze(g, transpose(g, rhs, [0, 2, 1]), [3]))), [0, 2, 1]); // [H, Np, d]
    const lastOf = (x: Value) => slice(g, x, [Np - 1], [Np], [1]); // [H, 1, d]
    const last = [lc, nc, zc].map(lastOf);
    const sEnd = this.activateAt(g, add(g, mul(g, s0, fromStart(last)), matmul(g, transpose(g, K, [0, 2, 1]), mul(g, U, between(last, [lc, nc, zc])))), this.endsChunk(g, T));
    // o_ij = D_{t_i j}(q_i·s₀ʲ) + Σ_{τ ≤ t_i} (Π_{τ<r≤t_i} α_rj) (q_i·k_τ) u_τj
    const atOut = [lc, nc, zc].map((x) => this.lastVirtual(g, slice(g, x, g.ints([0]), dimOf(g, k, 1), [1]), T)); // [H, T, d]
    const first = mul(g, matmul(g, qLast, s0), fromStart(atOut));
    const decay = between(
      atOut.map((x) => unsqueeze(g, transpose(g, x, [0, 2, 1]), [3])), // [H, d, T, 1]
      cumT.map((x) => unsqueeze(g, x, [2])), // [H, d, 1, Np]
      outMask,
    ); // [H, d, T, Np]
    const qk = unsqueeze(g, matmul(g, qLast, transpose(g, K, [0, 2, 1])), [1]); // [H, 1, T, Np]
    const weights = mul(g, qk, decay); // [H, d, T, Np]
    const second = transpose(g, squeezeLast(g, matmul(g, weights, unsqueeze(g, transpose(g, U, [0, 2, 1]), [3]))), [0, 2, 1]); // [H, T, d]
    return [add(g, first, second), sEnd];
  }

  /** Rows n·i + n − 1 of a [H, n·T, d] tensor: each real token's last virtual token. */
  private lastVirtual(g: GraphBuilder, x: Value, T: Value): Value {
    if (this.n === 1) return x;
    const { H, d, n } = this;
    void T;
    return g.op('Gather', [reshape(g, x, [H, -1, n, d]), g.int(n - 1)], { axis: 2 });
  }

  /** [T, Np] bool: virtual token τ is at or before real token i's last virtual token. */
  private outputMask(g: GraphBuilder, T: Value): Value {
    const rows = unsqueeze(g, g.op('Range', [g.int(0), g.op('Squeeze', [T, g.ints([0])]), g.int(1)]), [1]); // [T, 1]
    const last = add(g, mul(g, rows, g.int(this.n)), g.int(this.n - 1));
    const cols = g.constant('int64', [1, this.Np], Array.from({ length: this.Np }, (_, j) => j));
    return g.op('LessOrEqual', [cols, last]);
  }

  /**
   * The reference's chunk (tptt 0.12.1 chunk_delta_product_forward + sequential_delta_product_scan),
   * for one chunk of T real tokens: W = (I+A)⁻¹(β⊙K), U = (I+A)⁻¹(β⊙V) over the chunk's virtual
   * tokens; then every token starts from the chunk's initial state h₀ and applies only its own n
   * virtual steps: u' = u_s − w_sᵀh, o = q_s⊙u' + q_sᵀh (kept for the last step), h ← h⊙α_s + w_s u'ᵀ.
   * The chunk passes on the last token's h. Per-token states are never built: xᵀh is expanded as
   * (xᵀh₀)⊙P + Σ_r (x·w_r)(u'_r ⊙ Q_r) with P, Q products of α.
   */
  private tpttChunk(g: GraphBuilder, q: Value, k: Value, v: Value, alpha: Value | number, beta: Value | number, h0: Value, T: Value): [Value, Value] {
    const { H, d, n, Np } = this;
    const b = mul(g, k, typeof beta === 'number' ? g.float(beta) : beta);
    const vb = mul(g, v, typeof beta === 'number' ? g.float(beta) : beta);
    const K = this.padVirtual(g, k);
    const B = this.padVirtual(g, b);
    const inv = blockInverse(g, (s) => m21(g, B, K, [H], Np, s), [H], Np);
    const N = dimOf(g, k, 1);
    const Wt = slice(g, matmul(g, inv, B), g.ints([0]), N, [1]); // [H, N, d]
    const Ut = slice(g, matmul(g, inv, this.padVirtual(g, vb)), g.ints([0]), N, [1]);
    const step = (x: Value, s: number): Value => (n === 1 ? x : g.op('Gather', [reshape(g, x, [H, -1, n, d]), g.int(s)], { axis: 2 })); // [H, T, d]
    const qs = Array.from({ length: n }, (_, s) => step(q, s));
    const ws = Array.from({ length: n }, (_, s) => step(Wt, s));
    const us = Array.from({ length: n }, (_, s) => step(Ut, s));
    const as = Array.from({ length: n }, (_, s) => (typeof alpha === 'number' ? null : step(alpha, s)));
    const prodAlpha = (from: number, to: number): Value | null => {
      // Π_{from ≤ r < to} α_r (null when it is all ones)
      let p: Value | null = null;
      for (let r = from; r < to; r++) if (as[r]) p = p ? mul(g, p, as[r]!) : as[r]!;
      return p;
    };
    const timesMaybe = (x: Value, p: Value | null) => (p ? mul(g, x, p) : x);
    const dotRows = (x: Value, y: Value) => g.op('ReduceSum', [mul(g, x, y), g.ints([-1])], { keepdims: 1 }); // [H, T, 1]
    // xᵀh^(s) for a per-token vector x, from h₀ and the earlier steps' (w_r, u'_r).
    const uvals: Value[] = [];
    const readState = (x: Value, s: number): Value => {
      let acc = timesMaybe(matmul(g, x, h0), prodAlpha(0, s));
      for (let r = 0; r < s; r++) acc = add(g, acc, mul(g, dotRows(x, ws[r]), timesMaybe(uvals[r], prodAlpha(r + 1, s))));
      return acc;
    };
    let out: Value | null = null;
    for (let s = 0; s < n; s++) {
      const uval = sub(g, us[s], readState(ws[s], s));
      if (s === n - 1) out = add(g, mul(g, qs[s], uval), readState(qs[s], s));
      uvals.push(uval);
    }
    // The state passed on: the last token's h after its n steps.
    const lastRow = (x: Value) => slice(g, x, [-1], [2 ** 62], [1]); // [H, 1, d]
    let hEnd = timesMaybe(h0, as[0] ? lastRow(prodAlpha(0, n)!) : null);
    for (let r = 0; r < n; r++) {
      const p = prodAlpha(r + 1, n);
      const u = timesMaybe(lastRow(uvals[r]), p ? lastRow(p) : null);
      hEnd = add(g, hEnd, matmul(g, transpose(g, lastRow(ws[r]), [0, 2, 1]), u));
    }
    void T;
    return [out!, this.activateAt(g, hEnd, null)];
  }
}

/**
 * Outputs per Split node: a WebGPU shader binds at most 8 storage buffers (input + outputs) on every
 * adapter the standard admits (the H200 allows 16; onnxruntime fails a node that needs more).
 */
const SPLIT_FANOUT = 7;

/** `count` size-1 pieces of axis `axis` of x, by a tree of Splits of at most SPLIT_FANOUT outputs. */
function splitOnes(g: GraphBuilder, x: Value, axis: number, count: number): Value[] {
  if (count === 1) return [x];
  if (count <= SPLIT_FANOUT) return g.op('Split', [x], { axis, num_outputs: count }, count);
  const groups = Math.min(SPLIT_FANOUT, Math.ceil(count / SPLIT_FANOUT));
  const sizes = Array.from({ length: groups }, (_, i) => Math.floor(count / groups) + (i < count % groups ? 1 : 0));
  const parts = g.op('Split', [x, g.ints(sizes)], { axis }, groups);
  return parts.flatMap((part, i) => splitOnes(g, part, axis, sizes[i]));
}

function binomial(n: number, k: number): number {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - i + 1)) / i;
  return r;
}

/** [rows, Np] bool: real token i of a chunk reads virtual tokens τ ≤ n·i + n − 1. */
function outputMaskValues(rows: number, Np: number, n: number): number[] {
  const m = new Array<number>(rows * Np).fill(0);
  for (let i = 0; i < rows; i++) for (let t = 0; t <= Math.min(Np - 1, n * i + n - 1); t++) m[i * Np + t] = 1;
  return m;
}

/** bool → float32 0/1 */
function cast01(g: GraphBuilder, x: Value): Value {
  return g.op('Cast', [x], { to: 1 });
}

function squeezeLast(g: GraphBuilder, x: Value): Value {
  return g.op('Squeeze', [x, g.ints([-1])]);
}

/**
 * Lower-left blocks of the 2s-sized diagonal blocks of M = I + strictly_lower(B·Kᵀ): rows from each
 * block's second half, columns from its first half (all strictly below the diagonal).
 * B, K: [...batch, Np, d] → [...batch, Np/(2s), s, s].
 */
function m21(g: GraphBuilder, B: Value, K: Value, batch: number[], Np: number, s: number): Value {
  const axis = batch.length + 1;
  const rb = reshape(g, B, [...batch, Np / (2 * s), 2, s, -1]);
  const rk = reshape(g, K, [...batch, Np / (2 * s), 2, s, -1]);
  const b2 = g.op('Gather', [rb, g.int(1)], { axis });
  const k1 = g.op('Gather', [rk, g.int(0)], { axis });
  const perm = [...Array(batch.length + 1).keys(), batch.length + 2, batch.length + 1];
  return matmul(g, b2, transpose(g, k1, perm));
}

/**
 * Inverse of a unit lower-triangular Np×Np matrix (Np a power of two) by block recursion:
 *   [[A, 0], [C, D]]⁻¹ = [[A⁻¹, 0], [−D⁻¹·C·A⁻¹, D⁻¹]]
 * from 1×1 blocks up, log2(Np) levels of batched matmuls. Only true inverse entries are ever formed
 * (no Neumann powers), so it is as stable as forward substitution. `lowerLeft(s)` gives the C blocks
 * of the 2s-sized diagonal blocks: [...batch, Np/(2s), s, s].
 */
export function blockInverse(g: GraphBuilder, lowerLeft: (s: number) => Value, batch: number[], Np: number): Value {
  const batchSize = batch.reduce((a, b) => a * b, 1);
  let inv = g.constant('float32', [...batch, Np, 1, 1], new Float32Array(batchSize * Np).fill(1));
  const ax = batch.length; // axis of the block index
  for (let s = 1; s < Np; s *= 2) {
    const pairs = reshape(g, inv, [...batch, Np / (2 * s), 2, s, s]);
    const A = g.op('Gather', [pairs, g.int(0)], { axis: ax + 1 });
    const D = g.op('Gather', [pairs, g.int(1)], { axis: ax + 1 });
    const C = lowerLeft(s);
    const R = g.op('Neg', [matmul(g, matmul(g, D, C), A)]);
    const top = concat(g, [A, mul(g, A, g.float(0))], ax + 2);
    const bottom = concat(g, [R, D], ax + 2);
    inv = concat(g, [top, bottom], ax + 1); // [...batch, Np/(2s), 2s, 2s]
  }
  return reshape(g, inv, [...batch, Np, Np]);
}

/** The reference's unlinear_activation: (x/2)·gelu_tanh(2x/(‖x‖+1e-6)), norms over the last axis. */
function unlinearActivation(g: GraphBuilder, x: Value): Value {
  const norm = add(g, g.op('Sqrt', [g.op('ReduceSum', [mul(g, x, x), g.ints([-1])], { keepdims: 1 })]), g.float(1e-6));
  const z = div(g, mul(g, x, g.float(2)), norm);
  // gelu_tanh(z) = 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³)))
  const inner = mul(g, add(g, z, mul(g, g.op('Pow', [z, g.float(3)]), g.float(0.044715))), g.float(Math.sqrt(2 / Math.PI)));
  const gelu = mul(g, mul(g, z, g.float(0.5)), add(g, g.op('Tanh', [inner]), g.float(1)));
  return mul(g, mul(g, x, g.float(0.5)), gelu);
}
