// The decoder forward pass as an ONNX graph: one run processes T new tokens, continuing from the
// state the previous run returned (softmax KV window, and in Titan packages the linear-attention state).
//
// Graph interface (batch is always 1 and is left out of every shape):
//   inputs   input_ids [T] int64 · logits_rows [K] int64 (rows of the segment whose logits to return)
//            per layer i: past_key.i, past_value.i [Hk, P, d] float32 — keys are kept *before* RoPE,
//            so positions can be re-based to the window (RoPE scores depend only on offsets)
//            + whatever the attention extension (LiZA) declares
//   outputs  logits [K, V] float32 · present_key.i, present_value.i [Hk, P', d] (P' = min(P+T, W))
//            + the extension's state outputs
import type { ModelConfig } from '../model/config';
import { ropeInverseFrequencies } from '../model/config';
import type { ExternalTensor, GraphBuilder, Value } from './builder';
import { add, cast, concat, dimOf, linear, matMulNBits, matmul, mul, range, reshape, rmsNorm, rope, silu, slice, transpose, unsqueeze } from './ops';

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
  /** The softmax branch output after o_proj: [T, C]. */
  softmaxOut: Value;
  /** Applies this layer's o_proj (with bias) to [N, H·d]. */
  oProj: (x: Value) => Value;
  /** Number of tokens in this run, as an int64 vector [1]. */
  newTokens: Value;
  /** Activation dtype of q, k, v, softmaxOut and of the value mix() must return. */
  dtype: 'float32' | 'float16';
  /** The graph may use onnxruntime's fused kernels (DecoderGraphOptions.fusedOps). */
  fusedOps: boolean;
}

export interface AttentionExtension {
  /** Declares extra graph inputs/outputs once, before the layers are built. */
  declare(g: GraphBuilder): void;
  /** Returns the layer's attention output [T, C] given the softmax branch and the raw projections. */
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
}

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
  const has = (name: string): boolean => Boolean(weights[name] ?? weights[int4Names(name).codes]);
  // y = x · Wᵀ (+ b) for a projection W [out, in] stored in full precision or as 4-bit blocks.
  const dense = (x: Value, name: string, K: number, bias: Value | null): Value => {
    const q = int4Names(name);
    if (!weights[q.codes]) return linear(g, x, w(name), bias);
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

  const inputIds = g.input('input_ids', 'int64', ['T']);
  const logitsRows = g.input('logits_rows', 'int64', ['K']);
  const past = Array.from({ length: L }, (_, i) => ({
    key: g.input(`past_key.${i}`, act, [Hk, 'P', d]),
    value: g.input(`past_value.${i}`, act, [Hk, 'P', d]),
  }));
  options.extension?.declare(g);

  // Positions: the cached keys sit at 0..P−1, the new tokens at P..P+T−1 (window-relative).
  const newTokens = dimOf(g, inputIds, 0); // [1] = T
  const pastLen = dimOf(g, past[0].key, 1); // [1] = P
  const total = add(g, pastLen, newTokens); // [1] = S
  const keyPositions = cast(g, range(g, g.ints([0]), total), 'float32'); // [S]
  const invFreq = g.constant('float32', [1, d / 2], Float32Array.from(ropeInverseFrequencies(config.rope, d)));
  const angles = mul(g, unsqueeze(g, keyPositions, [1]), invFreq); // [S, d/2]
  const inAct = (x: Value) => (act === 'float32' ? x : cast(g, x, act));
  const cosTable = inAct(g.op('Cos', [angles])); // [S, d/2]: position j's row
  const sinTable = inAct(g.op('Sin', [angles]));
  // The primitive RoPE's tables: [S, 1, d/2] for the keys, the new tokens' rows [T, 1, d/2] for the queries.
  const unfused = fused
    ? null
    : (() => {
        const cosK = unsqueeze(g, cosTable, [1]);
        const sinK = unsqueeze(g, sinTable, [1]);
        return { cosK, sinK, cosQ: slice(g, cosK, pastLen, total, [0]), sinQ: slice(g, sinK, pastLen, total, [0]) };
      })();
  /** Fused RoPE of [1, heads, N, d] (or [1, N, heads·d] with `heads`) at positions start, start+1, … */
  const fusedRope = (x: Value, start: Value, heads?: number): Value =>
    g.op('RotaryEmbedding', [x, start, cosTable, sinTable], { interleaved: 0, ...(heads ? { num_heads: heads } : {}) }, 1, undefined, 'com.microsoft');

  // Mask [T, S]: query at P+t sees key j when j ≤ P+t and P+t − j < window.
  const queryPos = unsqueeze(g, range(g, pastLen, newTokens), [1]); // [T, 1]
  const keyPos = unsqueeze(g, range(g, g.ints([0]), total), [0]); // [1, S]
  let allowed = g.op('LessOrEqual', [keyPos, queryPos]);
  if (window !== null) allowed = g.op('And', [allowed, g.op('Less', [g.op('Sub', [queryPos, keyPos]), g.int(window)])]);
  const mask = g.op('Where', [allowed, g.float(0), g.float(-Infinity)]); // [T, S]

  let x = g.op('Gather', [w('embed'), inputIds], { axis: 0 }); // [T, C] in the activation dtype

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

      // The window cache keeps keys before RoPE; RoPE is applied to all S keys at their current positions.
      const keysAll = concat(g, [past[i].key, transpose(g, k, [1, 0, 2])], 1); // [Hk, S, d]
      const valuesAll = concat(g, [past[i].value, transpose(g, v, [1, 0, 2])], 1); // [Hk, S, d]
      // GQA without copies: queries grouped as [Hk, G, T, d] against keys [Hk, 1, d, S].
      let qg: Value;
      let kT: Value;
      if (!unfused) {
        qg = transpose(g, reshape(g, fusedRope(reshape(g, q, [1, -1, H * d]), pastLen, H), [-1, Hk, G, d]), [1, 2, 0, 3]);
        // (A 3-D swap of the last two axes: onnxruntime's CPU Transpose is far slower for the 4-D [1, 0, 3, 2].)
        kT = unsqueeze(g, transpose(g, reshape(g, fusedRope(unsqueeze(g, keysAll, [0]), g.ints([0])), [Hk, -1, d]), [0, 2, 1]), [1]);
      } else {
        const kRot = rope(g, transpose(g, keysAll, [1, 0, 2]), unfused.cosK, unfused.sinK, d); // [S, Hk, d]
        const qRot = rope(g, q, unfused.cosQ, unfused.sinQ, d); // [T, H, d]
        qg = transpose(g, reshape(g, qRot, [-1, Hk, G, d]), [1, 2, 0, 3]);
        kT = unsqueeze(g, transpose(g, kRot, [1, 2, 0]), [1]);
      }
      const raw = matmul(g, qg, kT);
      const scores = add(g, mul(g, act === 'float32' ? raw : cast(g, raw, 'float32'), g.float(1 / Math.sqrt(d))), mask); // [Hk, G, T, S]
      const probs = inAct(g.op('Softmax', [scores], { axis: -1 }));
      const ctx = matmul(g, probs, unsqueeze(g, valuesAll, [1])); // [Hk, G, T, d]
      const heads = reshape(g, transpose(g, ctx, [2, 0, 1, 3]), [-1, H * d]); // [T, H·d]
      const oB = opt(p + 'o_bias');
      const oProj = (h: Value) => project('o', h, dense(h, p + 'o', H * d, oB));
      let attnOut = oProj(heads); // [T, C]
      if (options.extension) {
        attnOut = options.extension.mix(g, { layer: i, q: qRaw, k: kRaw, v: vRaw, softmaxOut: attnOut, oProj, newTokens, dtype: act, fusedOps: fused });
      }

      // The window slides: keep the last `window` keys/values for the next run.
      let presentK = keysAll;
      let presentV = valuesAll;
      if (window !== null) {
        const start = g.op('Max', [g.op('Sub', [total, g.int(window)]), g.ints([0])]);
        presentK = slice(g, keysAll, start, total, [1]);
        presentV = slice(g, valuesAll, start, total, [1]);
      }
      g.output(presentK, `present_key.${i}`, act, [Hk, 'P_out', d]);
      g.output(presentV, `present_value.${i}`, act, [Hk, 'P_out', d]);

      if (config.normPlacement === 'post') attnOut = norm(attnOut, p + 'post_attn_norm');
      x = add(g, x, attnOut);

      // ── MLP (SwiGLU) ──
      const mlpIn = config.normPlacement === 'pre' ? norm(x, p + 'mlp_norm') : x;
      const gateUp = project('gate_up', mlpIn, dense(mlpIn, p + 'gate_up', C, opt(p + 'gate_up_bias'))); // [T, 2·I]
      const [gate, up] = g.op('Split', [gateUp, g.ints([config.intermediateSize, config.intermediateSize])], { axis: 1 }, 2);
      const hidden = mul(g, silu(g, gate), up); // [T, I]
      let mlpOut = project('down', hidden, dense(hidden, p + 'down', config.intermediateSize, opt(p + 'down_bias'))); // [T, C]
      if (config.normPlacement === 'post') mlpOut = norm(mlpOut, p + 'post_mlp_norm');
      x = add(g, x, mlpOut);
    });
  }

  // Only the requested rows go through the (large) vocabulary projection.
  const rows = g.op('Gather', [norm(x, 'final_norm'), logitsRows], { axis: 0 }); // [K, C]
  const logits = dense(rows, has('lm_head') ? 'lm_head' : 'embed', C, null); // [K, V]
  g.output(act === 'float32' ? logits : cast(g, logits, 'float32'), 'logits', 'float32', ['K', config.vocabSize]);
}
