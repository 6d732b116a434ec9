// The decoder forward pass as an ONNX graph: one run processes T new tokens, continuing from the
// state the previous run returned (softmax KV window, and in Titan packages the linear-attention state).
//
// Graph interface (batch is always 1 and is left out of every shape):
//   inputs   input_ids [T] int64 · logits_rows [K] int64 (rows of the segment whose logits to return)
//            per layer i: past_key.i, past_value.i — the softmax window, in one of two layouts
//            (DecoderGraphOptions.windowLayout):
//              sliding  [Hk, P, d] each, keys *before* RoPE so positions can be re-based to the window
//                       (RoPE scores depend only on offsets); P' = min(P+T, W)
//              ring     past_key [Hk, d, W] (transposed), past_value [Hk, W, d]: keys *after* RoPE at
//                       their absolute positions, token p in slot p mod W; with stream_position [1]
//                       int64 and rope_cos, rope_sin [T, d/2] float32 (the run's RoPE tables, computed
//                       by the host in float64: absolute positions outgrow float32 angles)
//            + whatever the attention extension (LiZA) declares
//   outputs  logits [K, V] float32 · present_key.i, present_value.i (the input's layout)
//            + the extension's state outputs
import type { ModelConfig } from '../model/config';
import { ropeInverseFrequencies } from '../model/config';
import type { ExternalTensor, GraphBuilder, Value } from './builder';
import { add, cast, concat, dimOf, linear, matMulNBits, matmul, mul, range, reshape, rmsNorm, rope, silu, slice, sub, transpose, unsqueeze } from './ops';

/** Name → location of every tensor in the package's weights file (see titanize/package-writer). */
export type WeightTable = Record<string, ExternalTensor>;

/**
 * A projection weight `name` stored as 4-bit blocks (titanize/int4.ts) is three table entries in
 * place of `name`: its codes, scales and (asymmetric) zero points.
 */
export const int4Names = (name: string) => ({ codes: `${name}.int4_codes`, scales: `${name}.int4_scales`, zeroPoints: `${name}.int4_zero_points` });

/** How the graph runs the package's 4-bit projection weights (MatMulNBits attributes). */
export interface Int4GraphSettings {
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 = compute with x as given, 4 = x quantized to int8 per block (CPU). */
  accuracyLevel: number;
}

/** What one layer's attention hands to an extension that mixes in another branch. */
export interface AttentionContext {
  layer: number;
  /** Raw projection outputs, bias included, before norms and RoPE: [T, H·d], [T, Hk·d], [T, Hk·d]. */
  q: Value;
  k: Value;
  v: Value;
  /** The fused projection q, k and v were split from: [T, (H+2Hk)·d] (one Cast serves all three). */
  qkv: Value;
  /**
   * The softmax branch's heads before o_proj: [T, H·d]. o_proj is linear, so a gate that mixes the
   * branches linearly can mix the heads and project once (one matmul a layer fewer).
   */
  softmaxHeads: Value;
  /** Applies this layer's o_proj (with bias) to [N, H·d]. */
  oProj: (x: Value) => Value;
  /** Number of tokens in this run, as an int64 vector [1]. */
  newTokens: Value;
  /** Activation dtype of q, k, v, softmaxHeads and of the value mix() must return. */
  dtype: 'float32' | 'float16';
  /** The graph may use onnxruntime's fused kernels (DecoderGraphOptions.fusedOps). */
  fusedOps: boolean;
}

export interface AttentionExtension {
  /** Declares extra graph inputs/outputs once, before the layers are built. */
  declare(g: GraphBuilder): void;
  /** Returns the layer's attention output [T, C] (after o_proj) given the softmax branch's heads and the raw projections. */
  mix(g: GraphBuilder, ctx: AttentionContext): Value;
}

export interface DecoderGraphOptions {
  /** Softmax attention sees at most this many most recent tokens (itself included); null = unbounded. */
  window: number | null;
  /** LiZA + Memory-as-Gate for Titan packages; absent for the base model. */
  extension?: AttentionExtension;
  /**
   * Adapts a projection's output (LoRA in training graphs): `x` is the projection's input [T, in],
   * `y` its output [T, out] with bias; returns the output to use. Absent: plain projections.
   */
  projection?: (g: GraphBuilder, layer: number, name: ProjectionName, x: Value, y: Value) => Value;
  /**
   * Activation precision. float16 (for GPU providers) keeps the residual stream, projections and
   * the KV window in half precision with norms, softmax and the recurrent state in float32.
   */
  compute?: 'float32' | 'float16';
  /** Required when the weight table holds 4-bit projection weights (int4Names). */
  int4?: Int4GraphSettings;
  /**
   * Inference graphs: onnxruntime's fused kernels (SimplifiedLayerNormalization, com.microsoft
   * RotaryEmbedding; CPU, WebGPU and CUDA have them) in place of the handful of primitive ops each
   * replaces. Every op is a kernel launch, and launches, not arithmetic, bound decoding. Off in
   * training graphs: autodiff differentiates primitive ops only.
   */
  fusedOps?: boolean;
  /**
   * How a bounded window is carried between runs (ignored without one). sliding: Concat, then Slice
   * the last W, and every run rotates all kept keys again — training graphs use it (autodiff knows
   * those ops). ring: a run writes only its own tokens' slots (ScatterElements) and rotates only its
   * own keys, so a decode step copies the window's keys once instead of four times (inference
   * graphs). The ring is W slots from the first run on (empty ones masked), so a stream's first run
   * attends over W + T keys where the sliding layout has only T.
   */
  windowLayout?: WindowLayout;
  /** The graph only runs single tokens (a package's step graph): the ring is updated before attending. */
  oneToken?: boolean;
  /**
   * Projections as MatMul over the transposed weight (a Transpose of the initializer, which
   * onnxruntime folds once at load) instead of Gemm with transB. The WebGPU provider runs Gemm with a
   * generic kernel: on the H200 a one-token projection of the 1B model took 281 µs on average, 20×
   * its weight-reading time, and Gemm was 70 % of a decode step's GPU time (bench/gpu/README.md).
   */
  matmulProjections?: boolean;
}

export type WindowLayout = 'sliding' | 'ring';

/** The package's projection weights: fused q/k/v, o, fused gate/up, down. */
export type ProjectionName = 'qkv' | 'o' | 'gate_up' | 'down';

/** Builds the whole decoder graph into `g`. */
export function buildDecoderGraph(g: GraphBuilder, config: ModelConfig, weights: WeightTable, options: DecoderGraphOptions): void {
  const { numHeads: H, numKvHeads: Hk, headDim: d, numLayers: L, hiddenSize: C } = config;
  const G = H / Hk;
  const window = options.window ?? config.slidingWindow;

  const act = options.compute ?? 'float32';
  const stored = (name: string): Value => {
    const t = weights[name];
    if (!t) throw new Error(`weight table has no ${name}`);
    return g.weight(name, t);
  };
  // Projection weights and biases in the activation dtype (fp16 packages store half precision); one
  // Cast per weight, however often the graph reads it (o_proj serves both attention branches).
  const inActDtype = new Map<string, Value>();
  const w = (name: string): Value => {
    let v = inActDtype.get(name);
    if (!v) inActDtype.set(name, (v = weights[name]?.dtype === act ? stored(name) : cast(g, stored(name), act)));
    return v;
  };
  const opt = (name: string): Value | null => (weights[name] ? w(name) : null);
  const transposedWeights = new Map<string, Value>();
  const transposed = (name: string): Value => transposedWeights.get(name) ?? transposedWeights.set(name, transpose(g, w(name), [1, 0])).get(name)!;
  const has = (name: string): boolean => Boolean(weights[name] ?? weights[int4Names(name).codes]);
  // y = x · Wᵀ (+ b) for a projection W [out, in] stored in full precision or as 4-bit blocks.
  const dense = (x: Value, name: string, K: number, bias: Value | null): Value => {
    const q = int4Names(name);
    if (!weights[q.codes]) {
      if (!options.matmulProjections) return linear(g, x, w(name), bias);
      const y = matmul(g, x, transposed(name));
      return bias ? add(g, y, bias) : y;
    }
    if (!options.int4) throw new Error(`weight ${name} is stored as int4 but the graph was given no int4 settings`);
    // Codes [N, blocks, blockSize·bits/8]: the bytes per block say whether they are 4- or 8-bit.
    const [N, , blob] = weights[q.codes].dims;
    const bits = (blob * 8) / options.int4.blockSize === 8 ? 8 : 4;
    const y = matMulNBits(g, x, stored(q.codes), w(q.scales), weights[q.zeroPoints] ? stored(q.zeroPoints) : null, { K, N, bits, ...options.int4 });
    return bias ? add(g, y, bias) : y;
  };
  const fused = options.fusedOps === true;
  // Norms always compute in float32 (their weights are stored float32). onnxruntime's fused kernel
  // accumulates in float32 whatever its input, so half-precision graphs give it half-precision x and
  // weight directly instead of casting around it (CPU and WebGPU; checked on sums that overflow fp16).
  const norm = (x: Value, name: string): Value => {
    if (fused && act === 'float16') return g.op('SimplifiedLayerNormalization', [x, w(name)], { axis: -1, epsilon: { float: config.rmsNormEps } });
    const weight = weights[name].dtype === 'float32' ? stored(name) : cast(g, stored(name), 'float32');
    const x32 = act === 'float32' ? x : cast(g, x, 'float32');
    const y = fused ? g.op('SimplifiedLayerNormalization', [x32, weight], { axis: -1, epsilon: { float: config.rmsNormEps } }) : rmsNorm(g, x32, weight, config.rmsNormEps);
    return act === 'float32' ? y : cast(g, y, act);
  };

  const ring = window !== null && options.windowLayout === 'ring';
  const inputIds = g.input('input_ids', 'int64', ['T']);
  const logitsRows = g.input('logits_rows', 'int64', ['K']);
  const past = Array.from({ length: L }, (_, i) => ({
    key: g.input(`past_key.${i}`, act, ring ? [Hk, d, window] : [Hk, 'P', d]),
    value: g.input(`past_value.${i}`, act, ring ? [Hk, window, d] : [Hk, 'P', d]),
  }));
  const ringInputs = ring
    ? { position: g.input('stream_position', 'int64', [1]), cos: g.input('rope_cos', 'float32', ['T', d / 2]), sin: g.input('rope_sin', 'float32', ['T', d / 2]) }
    : null;
  options.extension?.declare(g);
  const inAct = (x: Value) => (act === 'float32' ? x : cast(g, x, act));
  /** The graph runs single tokens only (a package's step graph). */
  const one = options.oneToken === true;
  const newTokens = dimOf(g, inputIds, 0); // [1] = T

  /**
   * Scaled-dot-product attention of query groups [Hk, G, T, d] over keys [Hk, 1, d, S] and values
   * [Hk, S, d]: heads [T, H·d]. `scaledQuery`: the queries already carry the 1/√d factor.
   */
  const attend = (qg: Value, kT: Value, values: Value, mask: Value, scaledQuery = false): Value => {
    const raw = matmul(g, qg, kT);
    const raw32 = act === 'float32' ? raw : cast(g, raw, 'float32');
    const scores = add(g, scaledQuery ? raw32 : mul(g, raw32, g.float(1 / Math.sqrt(d))), mask); // [Hk, G, T, S]
    const probs = inAct(g.op('Softmax', [scores], { axis: -1 }));
    const ctx = matmul(g, probs, unsqueeze(g, values, [1])); // [Hk, G, T, d]
    // With one token the transpose moves only a size-1 axis: the same bytes, so a reshape says it.
    return reshape(g, one ? ctx : transpose(g, ctx, [2, 0, 1, 3]), [-1, H * d]); // [T, H·d]
  };
  /** Fused RoPE with the given tables: [1, heads, N, d] (or [1, N, heads·d] with `heads`) at table rows start, start+1, … */
  const fusedRope = (x: Value, start: Value, cos: Value, sin: Value, heads?: number): Value =>
    g.op('RotaryEmbedding', [x, start, cos, sin], { interleaved: 0, ...(heads ? { num_heads: heads } : {}) }, 1, undefined, 'com.microsoft');
  /** Layer i's softmax branch: q [T, H, d], k and v [T, Hk, d] before RoPE → heads [T, H·d]; declares the layer's window outputs. */
  const softmaxBranch = ringInputs ? ringWindow(ringInputs, window!) : slidingWindow();

  function slidingWindow() {
    // Positions: the cached keys sit at 0..P−1, the new tokens at P..P+T−1 (window-relative).
    const pastLen = dimOf(g, past[0].key, 1); // [1] = P
    const total = add(g, pastLen, newTokens); // [1] = S
    const keyPositions = cast(g, range(g, g.ints([0]), total), 'float32'); // [S]
    const invFreq = g.constant('float32', [1, d / 2], Float32Array.from(ropeInverseFrequencies(config.rope, d)));
    const angles = mul(g, unsqueeze(g, keyPositions, [1]), invFreq); // [S, d/2]
    const cosTable = inAct(g.op('Cos', [angles])); // [S, d/2]: position j's row
    const sinTable = inAct(g.op('Sin', [angles]));
    // The primitive RoPE's tables: [S, 1, d/2] for the keys, the new tokens' rows [T, 1, d/2] for the queries.
    const cosK = fused ? null : unsqueeze(g, cosTable, [1]);
    const sinK = fused ? null : unsqueeze(g, sinTable, [1]);

    // Mask [T, S]: query at P+t sees key j when j ≤ P+t and P+t − j < window.
    const queryPos = unsqueeze(g, range(g, pastLen, newTokens), [1]); // [T, 1]
    const keyPos = unsqueeze(g, range(g, g.ints([0]), total), [0]); // [1, S]
    let allowed = g.op('LessOrEqual', [keyPos, queryPos]);
    if (window !== null) allowed = g.op('And', [allowed, g.op('Less', [g.op('Sub', [queryPos, keyPos]), g.int(window)])]);
    const mask = g.op('Where', [allowed, g.float(0), g.float(-Infinity)]); // [T, S]
    // The window slides: the next run keeps the last `window` keys/values.
    const keepFrom = window === null ? null : g.op('Max', [g.op('Sub', [total, g.int(window)]), g.ints([0])]);

    return (i: number, q: Value, k: Value, v: Value): Value => {
      // The window cache keeps keys before RoPE; RoPE is applied to all S keys at their current positions.
      const keysAll = concat(g, [past[i].key, transpose(g, k, [1, 0, 2])], 1); // [Hk, S, d]
      const valuesAll = concat(g, [past[i].value, transpose(g, v, [1, 0, 2])], 1); // [Hk, S, d]
      // GQA without copies: queries grouped as [Hk, G, T, d] against keys [Hk, 1, d, S].
      let qg: Value;
      let kT: Value;
      if (fused) {
        qg = transpose(g, reshape(g, fusedRope(reshape(g, q, [1, -1, H * d]), pastLen, cosTable, sinTable, H), [-1, Hk, G, d]), [1, 2, 0, 3]);
        // (A 3-D swap of the last two axes: onnxruntime's CPU Transpose is far slower for the 4-D [1, 0, 3, 2].)
        kT = unsqueeze(g, transpose(g, reshape(g, fusedRope(unsqueeze(g, keysAll, [0]), g.ints([0]), cosTable, sinTable), [Hk, -1, d]), [0, 2, 1]), [1]);
      } else {
        const kRot = rope(g, transpose(g, keysAll, [1, 0, 2]), cosK!, sinK!, d); // [S, Hk, d]
        const qRot = rope(g, q, slice(g, cosK!, pastLen, total, [0]), slice(g, sinK!, pastLen, total, [0]), d); // [T, H, d]
        qg = transpose(g, reshape(g, qRot, [-1, Hk, G, d]), [1, 2, 0, 3]);
        kT = unsqueeze(g, transpose(g, kRot, [1, 2, 0]), [1]);
      }
      const heads = attend(qg, kT, valuesAll, mask);
      g.output(keepFrom ? slice(g, keysAll, keepFrom, total, [1]) : keysAll, `present_key.${i}`, act, [Hk, 'P_out', d]);
      g.output(keepFrom ? slice(g, valuesAll, keepFrom, total, [1]) : valuesAll, `present_value.${i}`, act, [Hk, 'P_out', d]);
      return heads;
    };
  }

  function ringWindow(inputs: { position: Value; cos: Value; sin: Value }, W: number) {
    const P = inputs.position; // [1]: tokens before this run; the run's tokens sit at P..P+T−1
    const cosTable = inAct(inputs.cos); // [T, d/2]: row t is position P+t
    const sinTable = inAct(inputs.sin);
    // Queries rotate with tables that carry attention's 1/√d (rotation is linear): one Mul per table
    // and graph instead of one on every layer's scores.
    const scale = g.floatIn(act, 1 / Math.sqrt(d));
    const queryTables = fused ? { cos: mul(g, cosTable, scale), sin: mul(g, sinTable, scale) } : null;
    const scaled = queryTables !== null;
    const slots = g.constant('int64', [W], Array.from({ length: W }, (_, s) => s)); // [W]
    const wrap = (x: Value) => g.op('Mod', [x, g.int(W)]); // into 0..W−1 (ONNX Mod takes the divisor's sign)
    // The position each slot holds once positions up to `last` are written: last − ((last − s) mod W),
    // a real token when ≥ 0.
    const heldUpTo = (last: Value): Value => sub(g, last, wrap(sub(g, last, slots))); // [W]
    // The slots the run writes: its last m = min(T, W) tokens', (P+t) mod W for t = T−m … T−1 (distinct,
    // so the scatter below is well defined), as index tensors shaped like the keys and values written.
    const written = g.op('Min', [newTokens, g.ints([W])]); // [1] = m
    const firstWritten = sub(g, newTokens, written); // [1] = T − m
    const writtenSlots = wrap(add(g, P, range(g, firstWritten, written))); // [m]
    const keySlots = g.op('Expand', [reshape(g, writtenSlots, [1, 1, -1]), g.ints([Hk, d, 1])]); // [Hk, d, m]
    const valueSlots = g.op('Expand', [reshape(g, writtenSlots, [1, -1, 1]), g.ints([Hk, 1, d])]); // [Hk, m, d]
    let mask: Value; // [T, S]
    if (one) {
      // One token at P, written into its slot first; it then attends to the whole ring.
      const held = heldUpTo(P);
      mask = unsqueeze(g, g.op('Where', [g.op('GreaterOrEqual', [held, g.ints([0])]), g.float(0), g.float(-Infinity)]), [0]); // [1, W]
    } else {
      // Keys: the ring as it was (positions up to P−1), then the T new ones. Query t (position P+t)
      // sees a ring slot less than W back and new key j ≤ t less than W back.
      const held = heldUpTo(sub(g, P, g.ints([1])));
      const runOffsets = range(g, g.ints([0]), newTokens); // [T]: 0 … T−1
      const t = unsqueeze(g, runOffsets, [1]); // [T, 1]
      const queryPos = add(g, P, t); // [T, 1]
      const ringSeen = g.op('And', [g.op('GreaterOrEqual', [held, g.ints([0])]), g.op('Less', [sub(g, queryPos, unsqueeze(g, held, [0])), g.int(W)])]); // [T, W]
      const j = unsqueeze(g, runOffsets, [0]); // [1, T]
      const newSeen = g.op('And', [g.op('LessOrEqual', [j, t]), g.op('Less', [sub(g, t, j), g.int(W)])]); // [T, T]
      mask = g.op('Where', [concat(g, [ringSeen, newSeen], 1), g.float(0), g.float(-Infinity)]); // [T, W+T]
    }
    const zero = g.ints([0]);
    const cosK = fused ? null : unsqueeze(g, cosTable, [1]); // [T, 1, d/2]
    const sinK = fused ? null : unsqueeze(g, sinTable, [1]);
    const rotate = (x: Value, heads: number, tables = { cos: cosTable, sin: sinTable }): Value =>
      fused ? reshape(g, fusedRope(reshape(g, x, [1, -1, heads * d]), zero, tables.cos, tables.sin, heads), [-1, heads, d]) : rope(g, x, cosK!, sinK!, d);

    return (i: number, q: Value, k: Value, v: Value): Value => {
      const qRot = reshape(g, queryTables ? rotate(q, H, queryTables) : rotate(q, H), [-1, Hk, G, d]);
      // One token: these transposes move only the size-1 token axis, so reshapes do (no copy kernels).
      const qg = one ? reshape(g, qRot, [Hk, G, 1, d]) : transpose(g, qRot, [1, 2, 0, 3]); // [Hk, G, T, d]
      const kNew = one ? reshape(g, rotate(k, Hk), [Hk, d, 1]) : transpose(g, rotate(k, Hk), [1, 2, 0]); // [Hk, d, T]
      const vNew = one ? reshape(g, v, [Hk, 1, d]) : transpose(g, v, [1, 0, 2]); // [Hk, T, d]
      // The run's last m tokens into their slots: one copy of the ring and m writes (ScatterElements:
      // 1.2 ms per code-llama-19m decode step on the CPU, where a Where over the ring with a broadcast
      // slot mask took 2.7 ms).
      const incomingK = one ? kNew : slice(g, kNew, firstWritten, newTokens, [2]); // [Hk, d, m]
      const incomingV = one ? vNew : slice(g, vNew, firstWritten, newTokens, [1]); // [Hk, m, d]
      const ringK = g.op('ScatterElements', [past[i].key, keySlots, incomingK], { axis: 2 }); // [Hk, d, W]
      const ringV = g.op('ScatterElements', [past[i].value, valueSlots, incomingV], { axis: 1 }); // [Hk, W, d]
      g.output(ringK, `present_key.${i}`, act, [Hk, d, W]);
      g.output(ringV, `present_value.${i}`, act, [Hk, W, d]);
      if (one) return attend(qg, unsqueeze(g, ringK, [1]), ringV, mask, scaled);
      return attend(qg, unsqueeze(g, concat(g, [past[i].key, kNew], 2), [1]), concat(g, [past[i].value, vNew], 1), mask, scaled);
    };
  }

  // With MatMul projections a tied vocabulary projection reads the embedding transposed; the lookup
  // then reads the same [C, V] copy (columns, then one small transpose), or every session would keep
  // the table twice in device memory (2 × 0.5 GB for a Llama-3.2-1B).
  const tiedTransposed = options.matmulProjections === true && !has('lm_head') && !weights[int4Names('embed').codes];
  let x = tiedTransposed
    ? transpose(g, g.op('Gather', [transposed('embed'), inputIds], { axis: 1 }), [1, 0])
    : g.op('Gather', [w('embed'), inputIds], { axis: 0 }); // [T, C] in the activation dtype

  for (let i = 0; i < L; i++) {
    g.within(`layers.${i}`, () => {
      const p = `layers.${i}.`;
      const project = (name: ProjectionName, input: Value, y: Value): Value => (options.projection ? options.projection(g, i, name, input, y) : y);
      // ── attention ──
      const attnIn = config.normPlacement === 'pre' ? norm(x, p + 'attn_norm') : x;
      const qkv = project('qkv', attnIn, dense(attnIn, p + 'qkv', C, opt(p + 'qkv_bias'))); // [T, (H+2Hk)·d]
      const [qRaw, kRaw, vRaw] = g.op('Split', [qkv, g.ints([H * d, Hk * d, Hk * d])], { axis: 1 }, 3);
      let q = qRaw;
      let k = kRaw;
      if (config.qkNorm === 'full') {
        q = norm(q, p + 'q_norm');
        k = norm(k, p + 'k_norm');
      }
      q = reshape(g, q, [-1, H, d]); // [T, H, d]
      k = reshape(g, k, [-1, Hk, d]); // [T, Hk, d]
      if (config.qkNorm === 'per-head') {
        q = norm(q, p + 'q_norm');
        k = norm(k, p + 'k_norm');
      }
      const v = reshape(g, vRaw, [-1, Hk, d]);

      const heads = softmaxBranch(i, q, k, v);
      const oB = opt(p + 'o_bias');
      const oProj = (h: Value) => project('o', h, dense(h, p + 'o', H * d, oB));
      let attnOut = options.extension
        ? options.extension.mix(g, { layer: i, q: qRaw, k: kRaw, v: vRaw, qkv, softmaxHeads: heads, oProj, newTokens, dtype: act, fusedOps: fused })
        : oProj(heads); // [T, C]

      if (config.normPlacement === 'post') attnOut = norm(attnOut, p + 'post_attn_norm');
      x = add(g, x, attnOut);

      // ── MLP (SwiGLU) ──
      const mlpIn = config.normPlacement === 'pre' ? norm(x, p + 'mlp_norm') : x;
      const gateUp = project('gate_up', mlpIn, dense(mlpIn, p + 'gate_up', C, opt(p + 'gate_up_bias'))); // [T, 2·I]
      const [gate, up] = g.op('Split', [gateUp, g.ints([config.intermediateSize, config.intermediateSize])], { axis: 1 }, 2);
      const hidden = mul(g, silu(g, gate), up); // [T, I]
      // (A reshape that hides the token count from onnxruntime's shape inference: with MatMul
      // projections its MatMulAddFusion would otherwise merge this projection and the residual add
      // below into a Gemm, whose WebGPU kernel is slow.)
      const downIn = options.matmulProjections ? reshape(g, hidden, [-1, config.intermediateSize]) : hidden;
      let mlpOut = project('down', hidden, dense(downIn, p + 'down', config.intermediateSize, opt(p + 'down_bias'))); // [T, C]
      if (config.normPlacement === 'post') mlpOut = norm(mlpOut, p + 'post_mlp_norm');
      x = add(g, x, mlpOut);
    });
  }

  // Only the requested rows go through the (large) vocabulary projection.
  const rows = g.op('Gather', [norm(x, 'final_norm'), logitsRows], { axis: 0 }); // [K, C]
  const logits = dense(rows, has('lm_head') ? 'lm_head' : 'embed', C, null); // [K, V]
  g.output(act === 'float32' ? logits : cast(g, logits, 'float32'), 'logits', 'float32', ['K', config.vocabSize]);
}
