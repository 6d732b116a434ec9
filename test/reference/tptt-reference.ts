// An independent, slow, plain-TypeScript reference of a Llama forward pass with the TPTT branch
// (LiZA linear attention + Memory-as-Gate) injected into every attention layer. Float64 throughout;
// weights are read as float32 (bf16 checkpoints upcast exactly). The spec it follows, with the
// reference line numbers every block reproduces, is docs/tptt-semantics.md.
//
// Two semantics:
//   'tptt-0.12'  what the reference library `tptt` 0.12.1 computes, quirks included: per call,
//                chunked over the call (chunk = largest divisor of the call length <= max_chunk_size),
//                elementwise intra-chunk output, only the last position's update carried across chunks,
//                a 1e-6 initial state that is never carried between calls, pooling padded per call.
//   'exact'      the clean recurrence (docs/tptt-semantics.md §3): one real token at a time, explicit
//                state, so any split of a stream into calls gives the same logits.
//
// Axis letters: T tokens of a call, C hidden size, H query heads, Hkv key/value heads, G = H/Hkv,
// d head dim, n order (virtual tokens per real token), V vocabulary.
import { Checkpoint } from '../../engine/model/safetensors';
import { loadModelConfig, ropeInverseFrequencies } from '../../engine/model/config';

type Vec = Float64Array;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

export type Semantics = 'tptt-0.12' | 'exact';
/** Which pooled gate a coefficient reads: constant, keys, values, or their product. */
export type Gate = 'c' | 'k' | 'v' | 'kv';
/** Virtual-token expansion for order n > 1: derivative, rotative, or their mean. */
export type Trick = 'dt' | 'rot' | 'rdt';

export interface RecurrentConfig {
  order: number; // n
  alphaGate: Gate; // state decay, per value channel
  betaGate: Gate; // write strength, per channel
  linear: boolean; // false: GELU-like squash of the state at chunk boundaries
  trick: Trick;
}

/** configuration_tptt.py L47-111 (TpttConfig.RECURRENT_MODES). */
export const RECURRENT_MODES = {
  delta_rule: { order: 1, alphaGate: 'c', betaGate: 'k', linear: true, trick: 'dt' },
  gated_delta_rule: { order: 1, alphaGate: 'k', betaGate: 'k', linear: true, trick: 'dt' },
  delta_rule_v: { order: 1, alphaGate: 'c', betaGate: 'v', linear: true, trick: 'dt' },
  delta_rule_kv: { order: 1, alphaGate: 'c', betaGate: 'kv', linear: true, trick: 'dt' },
  delta_rule_gelu: { order: 1, alphaGate: 'c', betaGate: 'k', linear: false, trick: 'dt' },
  delta_product: { order: 2, alphaGate: 'c', betaGate: 'k', linear: true, trick: 'dt' },
  gated_delta_product: { order: 2, alphaGate: 'k', betaGate: 'k', linear: true, trick: 'dt' },
  delta_product_r: { order: 2, alphaGate: 'c', betaGate: 'k', linear: true, trick: 'rot' },
  delta_product_c: { order: 2, alphaGate: 'c', betaGate: 'k', linear: true, trick: 'rdt' },
} as const satisfies Record<string, RecurrentConfig>;
export type OperatorMode = keyof typeof RECURRENT_MODES;

export interface TpttConfig {
  recurrent: RecurrentConfig;
  magWeight: number; // mu: out = (1-mu) o_base + mu o_lin
  crossGate: boolean; // adds ((1-mu) o_base) * (mu o_lin)
  baseScaleAttn: boolean; // o_lin scaled by RMS(o_base) (eps 1e-5)
  maxChunkSize: number; // 64
  maxSelfAttnLength: number | null; // softmax window; see spec §1.9
}

/** The reference's defaults (get_tptt_model, modeling_tptt.py L1033-1051) for one operator mode. */
export function tpttConfig(mode: OperatorMode, overrides: Partial<Omit<TpttConfig, 'recurrent'>> = {}): TpttConfig {
  return {
    recurrent: { ...RECURRENT_MODES[mode] },
    magWeight: 0.5,
    crossGate: false,
    baseScaleAttn: false,
    maxChunkSize: 64,
    maxSelfAttnLength: null,
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

export interface LlamaShape {
  hiddenSize: number; // C
  numLayers: number;
  numHeads: number; // H
  numKvHeads: number; // Hkv
  headDim: number; // d
  intermediateSize: number; // I
  vocabSize: number; // V
  rmsNormEps: number;
  invFreq: Vec; // [d/2] RoPE inverse frequencies
}

/** Every weight as float64 (exact copies of the checkpoint's float32/bf16 values). */
export interface LayerWeights {
  inputNorm: Vec; // [C]
  wq: Vec; // [H*d, C]
  wk: Vec; // [Hkv*d, C]
  wv: Vec; // [Hkv*d, C]
  wo: Vec; // [C, H*d]  (shared by the softmax and the linear branch)
  postNorm: Vec; // [C]
  wGate: Vec; // [I, C]
  wUp: Vec; // [I, C]
  wDown: Vec; // [C, I]
}

export interface LlamaWeights {
  shape: LlamaShape;
  embed: Vec; // [V, C]
  layers: LayerWeights[];
  finalNorm: Vec; // [C]
  lmHead: Vec; // [V, C] (the embedding when tied)
}

/** Reads a Llama checkpoint folder (config.json + safetensors). */
export async function loadLlamaWeights(dir: string): Promise<LlamaWeights> {
  const config = loadModelConfig(dir);
  if (config.modelType !== 'llama' || config.qkvBias || config.oBias || config.mlpBias || config.qkNorm !== 'none') {
    throw new Error(`${dir}/config.json: the TPTT reference covers plain Llama only (no biases, no q/k norm)`);
  }
  const ck = await Checkpoint.open(dir);
  try {
    const read = (name: string, shape: number[]): Vec => {
      const info = ck.info(name);
      if (info.shape.join() !== shape.join()) throw new Error(`${dir}: tensor ${name} has shape [${info.shape}], expected [${shape}]`);
      return Float64Array.from(ck.readFloat32(name));
    };
    const { hiddenSize: C, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I, vocabSize: V } = config;
    const embed = read('model.embed_tokens.weight', [V, C]);
    const layers: LayerWeights[] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const p = `model.layers.${l}.`;
      layers.push({
        inputNorm: read(p + 'input_layernorm.weight', [C]),
        wq: read(p + 'self_attn.q_proj.weight', [H * d, C]),
        wk: read(p + 'self_attn.k_proj.weight', [Hkv * d, C]),
        wv: read(p + 'self_attn.v_proj.weight', [Hkv * d, C]),
        wo: read(p + 'self_attn.o_proj.weight', [C, H * d]),
        postNorm: read(p + 'post_attention_layernorm.weight', [C]),
        wGate: read(p + 'mlp.gate_proj.weight', [I, C]),
        wUp: read(p + 'mlp.up_proj.weight', [I, C]),
        wDown: read(p + 'mlp.down_proj.weight', [C, I]),
      });
    }
    const finalNorm = read('model.norm.weight', [C]);
    const lmHead = config.tieWordEmbeddings || !ck.has('lm_head.weight') ? embed : read('lm_head.weight', [V, C]);
    const shape: LlamaShape = {
      hiddenSize: C,
      numLayers: config.numLayers,
      numHeads: H,
      numKvHeads: Hkv,
      headDim: d,
      intermediateSize: I,
      vocabSize: V,
      rmsNormEps: config.rmsNormEps,
      invFreq: ropeInverseFrequencies(config.rope, d),
    };
    return { shape, embed, layers, finalNorm, lmHead };
  } finally {
    ck.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Small numeric helpers
// ---------------------------------------------------------------------------------------------

/**
 * y[t] = x[t] W^T for every row; W is [out, in] row-major (a PyTorch Linear weight).
 * Blocked 4 rows x 4 outputs so each loaded value feeds four products: plain JS has no BLAS.
 */
function linear(x: Vec[], w: Vec, outDim: number): Vec[] {
  const T = x.length;
  if (T === 0) return [];
  const inDim = x[0].length;
  if (w.length !== outDim * inDim) throw new Error(`linear: weight holds ${w.length} values, expected ${outDim}x${inDim}`);
  const xs = new Float64Array(T * inDim); // packed [T, in]
  x.forEach((row, t) => xs.set(row, t * inDim));
  const ys = new Float64Array(T * outDim); // packed [T, out]
  const dot = (t: number, o: number): number => {
    let s = 0;
    for (let i = 0; i < inDim; i++) s += xs[t * inDim + i] * w[o * inDim + i];
    return s;
  };
  const T4 = T - (T % 4), O4 = outDim - (outDim % 4);
  for (let t = 0; t < T4; t += 4) {
    const a0 = t * inDim, a1 = a0 + inDim, a2 = a1 + inDim, a3 = a2 + inDim;
    for (let o = 0; o < O4; o += 4) {
      const b0 = o * inDim, b1 = b0 + inDim, b2 = b1 + inDim, b3 = b2 + inDim;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let i = 0; i < inDim; i++) {
        const w0 = w[b0 + i], w1 = w[b1 + i], w2 = w[b2 + i], w3 = w[b3 + i];
        const x0 = xs[a0 + i], x1 = xs[a1 + i], x2 = xs[a2 + i], x3 = xs[a3 + i];
        s00 += x0 * w0; s01 += x0 * w1; s02 += x0 * w2; s03 += x0 * w3;
        s10 += x1 * w0; s11 += x1 * w1; s12 += x1 * w2; s13 += x1 * w3;
        s20 += x2 * w0; s21 += x2 * w1; s22 += x2 * w2; s23 += x2 * w3;
        s30 += x3 * w0; s31 += x3 * w1; s32 += x3 * w2; s33 += x3 * w3;
      }
      let r = t * outDim + o;
      ys[r] = s00; ys[r + 1] = s01; ys[r + 2] = s02; ys[r + 3] = s03; r += outDim;
      ys[r] = s10; ys[r + 1] = s11; ys[r + 2] = s12; ys[r + 3] = s13; r += outDim;
      ys[r] = s20; ys[r + 1] = s21; ys[r + 2] = s22; ys[r + 3] = s23; r += outDim;
      ys[r] = s30; ys[r + 1] = s31; ys[r + 2] = s32; ys[r + 3] = s33;
    }
    for (let o = O4; o < outDim; o++) for (let r = t; r < t + 4; r++) ys[r * outDim + o] = dot(r, o);
  }
  for (let t = T4; t < T; t++) for (let o = 0; o < outDim; o++) ys[t * outDim + o] = dot(t, o);
  return x.map((_, t) => ys.subarray(t * outDim, (t + 1) * outDim));
}

/** x / sqrt(mean(x^2) + eps), times weight when given (LlamaRMSNorm; weightless for LiZA). */
function rmsNorm(x: Vec, eps: number, weight?: Vec): Vec {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * inv * (weight ? weight[i] : 1);
  return y;
}

const silu = (x: number): number => x / (1 + Math.exp(-x));
const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
/** GELU, tanh approximation (F.gelu(approximate="tanh")). */
const geluTanh = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

/** F.normalize(silu(x), p=2, eps=1e-6): silu then divide by max(||.||, 1e-6). */
function siluL2Normalize(x: Vec): Vec {
  const y = new Float64Array(x.length);
  let ss = 0;
  for (let i = 0; i < x.length; i++) {
    y[i] = silu(x[i]);
    ss += y[i] * y[i];
  }
  const inv = 1 / Math.max(Math.sqrt(ss), 1e-6);
  for (let i = 0; i < x.length; i++) y[i] *= inv;
  return y;
}

function argmax(x: Vec): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

// ---------------------------------------------------------------------------------------------
// LiZA building blocks shared by both semantics
// ---------------------------------------------------------------------------------------------

/** One real token's linear-attention inputs, per query head h: each [d]. */
interface TokenFeatures {
  q: Vec[]; // silu + L2 normalised query
  k: Vec[]; // silu + L2 normalised key (GQA: kv head h / G)
  v: Vec[]; // value / sqrt(d)
  alpha: Vec[]; // decay gate, applied to value channels of the state
  beta: Vec[]; // write gate
}

/**
 * Gates and feature maps of one token (compute_gate L403-432, prepare_attention_input L458-486).
 * pooledK/pooledV: the causal 3-token mean of the raw (pre-activation) k/v rows, [Hkv*d].
 */
function tokenFeatures(shape: LlamaShape, rc: RecurrentConfig, q: Vec, k: Vec, v: Vec, pooledK: Vec, pooledV: Vec): TokenFeatures {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = shape;
  const G = H / Hkv;
  const scaling = 1 / Math.sqrt(d);
  const f: TokenFeatures = { q: [], k: [], v: [], alpha: [], beta: [] };
  for (let h = 0; h < H; h++) {
    const kvOff = Math.floor(h / G) * d; // repeat_interleave over heads
    const fg = new Float64Array(d); // sigmoid(pool(k))
    const wg = new Float64Array(d); // sigmoid(pool(v))
    for (let j = 0; j < d; j++) {
      fg[j] = sigmoid(pooledK[kvOff + j]);
      wg[j] = sigmoid(pooledV[kvOff + j]);
    }
    const pick = (g: Gate, constant: number): Vec => {
      if (g === 'k') return fg;
      if (g === 'v') return wg;
      if (g === 'kv') return fg.map((x, j) => x * wg[j]);
      return new Float64Array(d).fill(constant);
    };
    f.alpha.push(pick(rc.alphaGate, 1)); // alpha 'c' = ones
    f.beta.push(pick(rc.betaGate, 0.5)); // beta 'c' = 0.5
    f.q.push(siluL2Normalize(q.subarray(h * d, (h + 1) * d)));
    f.k.push(siluL2Normalize(k.subarray(kvOff, kvOff + d)));
    f.v.push(v.slice(kvOff, kvOff + d).map((x) => x * scaling));
  }
  return f;
}

/**
 * VirtualTokenExpander (L158-270) for one real token: n virtual tokens, in processing order.
 * history[m] is the real token m steps back (history[0] = the token itself); null = zero padding.
 * mode 'cte' repeats the token (used for constant gates).
 */
function virtualTokens(history: (Vec | null)[], n: number, mode: Trick | 'cte'): Vec[] {
  const x = history[0]!;
  const d = x.length;
  if (n === 1) return [x]; // compute_extended_householder L437-438: no expansion at order 1
  if (mode === 'cte') return Array.from({ length: n }, () => x);
  // Derivative: virtual m = c[n-1-m] * x_{t-m}, c[k] = (-1)^k binom(n-1,k) / 2^(n-1) (no sum: L214 is elementwise).
  const dt = (m: number): Vec => {
    const c = derivCoeffs(n)[n - 1 - m];
    const src = history[m];
    return src ? src.map((s) => c * s) : new Float64Array(d);
  };
  // Rotative: adjacent pairs (x[2i], x[2i+1]) rotated by theta_m = m * 2pi/n, computed in float32.
  const rot = (m: number): Vec => {
    const { cos, sin } = rotConsts(n, m);
    const y = new Float64Array(d);
    for (let i = 0; i + 1 < d; i += 2) {
      y[i] = x[i] * cos - x[i + 1] * sin;
      y[i + 1] = x[i] * sin + x[i + 1] * cos;
    }
    if (d % 2) y[d - 1] = x[d - 1];
    return y;
  };
  const out: Vec[] = [];
  for (let m = 0; m < n; m++) {
    if (mode === 'dt') out.push(dt(m));
    else if (mode === 'rot') out.push(rot(m));
    else {
      const a = dt(m), b = rot(m);
      out.push(a.map((s, j) => 0.5 * (s + b[j])));
    }
  }
  return out;
}

function derivCoeffs(n: number): number[] {
  const c: number[] = [];
  let binom = 1;
  for (let k = 0; k < n; k++) {
    c.push((k % 2 ? -1 : 1) * binom);
    binom = (binom * (n - 1 - k)) / (k + 1);
  }
  const norm = c.reduce((a, b) => a + Math.abs(b), 0);
  return c.map((x) => Math.fround(x / norm));
}

function rotConsts(n: number, m: number): { cos: number; sin: number } {
  // torch.arange(n, float32) * (2*pi/n), then cos/sin in float32 (L186-188): sin(pi) is -8.74e-8, not 0.
  const angle = Math.fround(m * Math.fround((2 * Math.PI) / n));
  return { cos: Math.fround(Math.cos(angle)), sin: Math.fround(Math.sin(angle)) };
}

/** unlinear_activation (L1529-1533) on a [d, d] state, row-wise over the value axis. */
function squashState(S: Vec, d: number): void {
  for (let a = 0; a < d; a++) {
    const row = S.subarray(a * d, (a + 1) * d);
    let ss = 0;
    for (let j = 0; j < d; j++) ss += row[j] * row[j];
    const norm = Math.sqrt(ss) + 1e-6;
    for (let j = 0; j < d; j++) row[j] = (row[j] / 2) * geluTanh((2 * row[j]) / norm);
  }
}

// ---------------------------------------------------------------------------------------------
// 'tptt-0.12': the reference's per-call computation
// ---------------------------------------------------------------------------------------------

/** LCache entry of one layer (L41-68, save_cache L376-401). */
interface Tptt012LayerCache {
  /** The last n-1 tokens' features of the previous call (qkvg buffers), oldest first; empty when n = 1. */
  history: TokenFeatures[];
  /** The saved recurrent state, [H][d*d]. Never read back: its shape misses the order axis (spec §2.2). */
  savedState: Vec[] | null;
}

/** get_valid_chunk_size (L1660-1665). */
export function validChunkSize(length: number, maxChunk: number): number {
  for (let c = Math.min(maxChunk, length); c > 0; c--) if (length % c === 0) return c;
  return 1;
}

/**
 * LinearAttention.forward (L503-613) up to the head merge, for one call of T tokens.
 * q [T][H*d], k/v [T][Hkv*d] are the raw projections (no RoPE). Returns o [T][H*d].
 */
function liza012(shape: LlamaShape, tptt: TpttConfig, q: Vec[], k: Vec[], v: Vec[], cache: Tptt012LayerCache | null): Vec[] {
  const { numHeads: H, headDim: d } = shape;
  const rc = tptt.recurrent;
  const n = rc.order;
  const T = q.length;

  // 1. Gates: causal mean over 3 tokens of this call, left-padded by replicating its first token (CausalAvgPool1d L113-155).
  const pool = (x: Vec[], t: number): Vec => {
    const a = x[Math.max(t - 2, 0)], b = x[Math.max(t - 1, 0)], c = x[t];
    return c.map((ct, j) => (a[j] + b[j] + ct) / 3);
  };
  const feats: TokenFeatures[] = [];
  for (let t = 0; t < T; t++) feats.push(tokenFeatures(shape, rc, q[t], k[t], v[t], pool(k, t), pool(v, t)));

  // 2. Cached calls prepend the previous call's last n-1 tokens (L545-551) and save the new last n-1 (L553-559, L389-401).
  const seq = cache ? [...cache.history, ...feats] : feats;
  if (cache) cache.history = n > 1 ? seq.slice(seq.length - (n - 1)) : [];
  const offset = seq.length - T; // the first real token of this call within seq

  // 3. Virtual tokens per head (compute_extended_householder L434-456): [T][n] of [d], zero history before seq[0].
  type Virtual = { q: Vec[][]; k: Vec[][]; v: Vec[][]; alpha: Vec[][]; beta: Vec[][] }; // [h][t*n + m]
  const virt: Virtual = { q: [], k: [], v: [], alpha: [], beta: [] };
  const fields = ['q', 'k', 'v', 'alpha', 'beta'] as const;
  for (let h = 0; h < H; h++) {
    for (const f of fields) {
      const mode: Trick | 'cte' =
        (f === 'alpha' && rc.alphaGate === 'c') || (f === 'beta' && rc.betaGate === 'c') ? 'cte' : rc.trick;
      const row: Vec[] = [];
      for (let t = 0; t < T; t++) {
        const history = Array.from({ length: n }, (_, m) => {
          const i = offset + t - m;
          return i >= 0 ? seq[i][f][h] : null;
        });
        row.push(...virtualTokens(history, n, mode));
      }
      virt[f].push(row);
    }
  }

  // 4. Chunked delta product per head (chunk_delta_product_forward L1329-1409, sequential_delta_product_scan L1412-1526).
  const chunk = validChunkSize(T, tptt.maxChunkSize);
  const out = q.map(() => new Float64Array(H * d));
  const states: Vec[] = [];
  for (let h = 0; h < H; h++) {
    const { o, state } = chunkedDeltaProduct012(virt.q[h], virt.k[h], virt.v[h], virt.alpha[h], virt.beta[h], n, chunk, rc.linear, d);
    for (let t = 0; t < T; t++) out[t].set(o[t], h * d);
    states.push(state);
  }
  if (cache) cache.savedState = states;
  return out;
}

/**
 * One head of the reference's chunked operator over T real tokens (T*n virtual tokens, token-major).
 * Returns the per-token output (at each token's last virtual step) and the state after the last chunk.
 */
function chunkedDeltaProduct012(
  vq: Vec[], vk: Vec[], vv: Vec[], va: Vec[], vb: Vec[], n: number, C: number, linear: boolean, d: number,
): { o: Vec[]; state: Vec } {
  const T = vq.length / n;
  const N = C * n; // virtual tokens per chunk
  const o: Vec[] = [];
  // Initial state: every entry 1e-6 (L1377-1386); h_0_base is its last order slice (L1429), all equal.
  let S0: Vec = new Float64Array(d * d).fill(1e-6);
  const S = new Float64Array(d * d);
  const kh = new Float64Array(d);
  const uv = new Float64Array(d);
  for (let c0 = 0; c0 < T; c0 += C) {
    const base = c0 * n;
    // WY form within the chunk: w = (I + tril(Kb K^T, -1))^-1 Kb, u = (...)^-1 Vb (L1365-1375, forward solver L1642-1657).
    const kb: Vec[] = [], w: Vec[] = [], u: Vec[] = [];
    for (let i = 0; i < N; i++) {
      kb.push(vk[base + i].map((x, j) => x * vb[base + i][j]));
      w.push(kb[i].slice());
      u.push(vv[base + i].map((x, j) => x * vb[base + i][j]));
    }
    for (let i = 1; i < N; i++) {
      for (let j = 0; j < i; j++) {
        let m = 0; // <kb_i, k_j>
        for (let x = 0; x < d; x++) m += kb[i][x] * vk[base + j][x];
        for (let x = 0; x < d; x++) {
          w[i][x] -= m * w[j][x];
          u[i][x] -= m * u[j][x];
        }
      }
    }
    // Per-position scan: each position restarts from the chunk's S0 and applies only its own n virtual steps.
    let last: Vec | null = null;
    for (let c = 0; c < C; c++) {
      const oc = new Float64Array(d);
      let src = S0; // state before this virtual step
      for (let m = 0; m < n; m++) {
        const i = c * n + m;
        const wi = w[i], ui = u[i], qi = vq[base + i], ai = va[base + i];
        kh.fill(0);
        for (let a = 0; a < d; a++) {
          const wa = wi[a];
          const row = a * d;
          for (let j = 0; j < d; j++) kh[j] += wa * src[row + j];
        }
        for (let j = 0; j < d; j++) uv[j] = ui[j] - kh[j];
        if (m === n - 1) {
          // o = q S (inter, state before this step) + q * u_val (intra, elementwise) (L1477-1486, L1524), last step only (L1407).
          for (let a = 0; a < d; a++) {
            const qa = qi[a];
            const row = a * d;
            for (let j = 0; j < d; j++) oc[j] += qa * src[row + j];
          }
          for (let j = 0; j < d; j++) oc[j] += qi[j] * uv[j];
        }
        // S = S * alpha (value channels) + w u_val^T (L1489-1494).
        for (let a = 0; a < d; a++) {
          const wa = wi[a];
          const row = a * d;
          for (let j = 0; j < d; j++) S[row + j] = src[row + j] * ai[j] + wa * uv[j];
        }
        src = S;
      }
      o.push(oc);
      if (c === C - 1) last = S.slice();
    }
    S0 = last!; // only the chunk's last position carries over (L1499)
    if (!linear) squashState(S0, d); // L1522-1523, after every chunk
  }
  return { o, state: S0 };
}

// ---------------------------------------------------------------------------------------------
// 'exact': the clean recurrence, one real token at a time
// ---------------------------------------------------------------------------------------------

interface ExactLayerState {
  position: number; // real tokens seen
  S: Vec[]; // [H][d*d], key x value, starts at 0
  rawK: Vec[]; // last two raw k rows [Hkv*d], most recent last (pooling history)
  rawV: Vec[];
  history: TokenFeatures[]; // last n-1 tokens' features, most recent last (virtual-token history)
}

function newExactState(shape: LlamaShape): ExactLayerState {
  const { numHeads: H, headDim: d } = shape;
  return { position: 0, S: Array.from({ length: H }, () => new Float64Array(d * d)), rawK: [], rawV: [], history: [] };
}

/** One real token through the exact recurrence of every head; returns o [H*d]. Spec §3. */
function lizaExactStep(shape: LlamaShape, tptt: TpttConfig, q: Vec, k: Vec, v: Vec, st: ExactLayerState): Vec {
  const { numHeads: H, headDim: d } = shape;
  const rc = tptt.recurrent;
  const n = rc.order;

  // Pooling over the real previous two tokens; only the stream's first token is replicated.
  const pool = (hist: Vec[], x: Vec): Vec => {
    const b = hist.length >= 1 ? hist[hist.length - 1] : x;
    const a = hist.length >= 2 ? hist[hist.length - 2] : b;
    return x.map((xt, j) => (a[j] + b[j] + xt) / 3);
  };
  const f = tokenFeatures(shape, rc, q, k, v, pool(st.rawK, k), pool(st.rawV, v));
  st.rawK = [...st.rawK, k].slice(-2);
  st.rawV = [...st.rawV, v].slice(-2);

  // Non-linear squash at absolute chunk boundaries: before the token at position p, p % C == 0, p > 0.
  if (!rc.linear && st.position > 0 && st.position % tptt.maxChunkSize === 0) for (const S of st.S) squashState(S, d);

  const o = new Float64Array(H * d);
  const kb = new Float64Array(d);
  const u = new Float64Array(d);
  for (let h = 0; h < H; h++) {
    const S = st.S[h];
    const virt = (field: keyof TokenFeatures, constant: boolean): Vec[] => {
      const history = Array.from({ length: n }, (_, m) => (m === 0 ? f[field][h] : st.history[st.history.length - m]?.[field][h] ?? null));
      return virtualTokens(history, n, constant ? 'cte' : rc.trick);
    };
    const vq = virt('q', false), vk = virt('k', false), vv = virt('v', false);
    const va = virt('alpha', rc.alphaGate === 'c'), vb = virt('beta', rc.betaGate === 'c');
    for (let m = 0; m < n; m++) {
      // S~ = S diag(alpha); u = beta*v - S~^T (beta*k); S = S~ + k u^T.
      for (let a = 0; a < d; a++) for (let j = 0; j < d; j++) S[a * d + j] *= va[m][j];
      for (let a = 0; a < d; a++) kb[a] = vb[m][a] * vk[m][a];
      for (let j = 0; j < d; j++) u[j] = vb[m][j] * vv[m][j];
      for (let a = 0; a < d; a++) {
        const ka = kb[a];
        for (let j = 0; j < d; j++) u[j] -= S[a * d + j] * ka;
      }
      for (let a = 0; a < d; a++) {
        const ka = vk[m][a];
        for (let j = 0; j < d; j++) S[a * d + j] += ka * u[j];
      }
    }
    // o = S^T q of the last virtual token, after its update.
    const ql = vq[n - 1];
    for (let a = 0; a < d; a++) {
      const qa = ql[a];
      for (let j = 0; j < d; j++) o[h * d + j] += qa * S[a * d + j];
    }
  }
  if (n > 1) st.history = [...st.history, f].slice(-(n - 1));
  st.position++;
  return o;
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

interface LayerRunState {
  keys: Vec[]; // per absolute position: RoPE'd k [Hkv*d]
  values: Vec[]; // per absolute position: v [Hkv*d]
  liza012: Tptt012LayerCache;
  exact: ExactLayerState;
}

/**
 * A stream of calls through one model: each call() feeds more tokens, with the softmax KV cache
 * (and, per semantics, the linear cache or state) carried between calls, the way `generate`
 * drives the reference with use_cache=True.
 */
export class ReferenceSession {
  private position = 0;
  private readonly layers: LayerRunState[];

  constructor(
    readonly weights: LlamaWeights,
    readonly tptt: TpttConfig | null,
    readonly semantics: Semantics,
    /**
     * tptt-0.12 only: whether the reference's LCache is active across calls (qkvg history for order > 1).
     * It is with transformers 5.x, which passes use_cache down to LiZAttention: the delta_product
     * greedy golden matches only with it on (spec §2.1). Off reproduces older transformers.
     */
    readonly linearCache = true,
  ) {
    this.layers = weights.layers.map(() => ({
      keys: [],
      values: [],
      liza012: { history: [], savedState: null },
      exact: newExactState(weights.shape),
    }));
  }

  /** Feeds one call of tokens; returns next-token logits [V] for the given rows of this call (default: all). */
  call(ids: number[], rows?: number[]): Vec[] {
    const W = this.weights;
    const { hiddenSize: C, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I, vocabSize: V, rmsNormEps: eps } = W.shape;
    const T = ids.length;
    const p0 = this.position;
    const tptt = this.tptt;
    if (tptt?.maxSelfAttnLength != null && this.semantics === 'tptt-0.12' && T > tptt.maxSelfAttnLength) {
      // truncate_attention_mask + _apply_mag left-truncate the attention output to the window; the
      // decoder layer's residual add then fails (spec §1.9).
      throw new Error(`tptt-0.12: a ${T}-token call with max_self_attn_length ${tptt.maxSelfAttnLength} fails in the reference`);
    }

    // Token embeddings: h [T][C].
    let h: Vec[] = ids.map((id) => {
      if (!(id >= 0 && id < V)) throw new Error(`token id ${id} outside the vocabulary (${V})`);
      return W.embed.slice(id * C, (id + 1) * C);
    });

    for (let l = 0; l < W.layers.length; l++) {
      const lw = W.layers[l];
      const st = this.layers[l];

      // Attention input: RMSNorm, shared projections q [T][H*d], k/v [T][Hkv*d].
      const xn = h.map((x) => rmsNorm(x, eps, lw.inputNorm));
      const q = linear(xn, lw.wq, H * d);
      const k = linear(xn, lw.wk, Hkv * d);
      const v = linear(xn, lw.wv, Hkv * d);

      // Softmax branch: RoPE, KV cache, causal GQA attention, o_proj -> oBase [T][C].
      for (let t = 0; t < T; t++) {
        st.keys.push(rope(k[t], p0 + t, Hkv, d, W.shape.invFreq));
        st.values.push(v[t]);
      }
      const window = this.semantics === 'exact' ? tptt?.maxSelfAttnLength ?? null : null;
      const attn = q.map((qt, t) => softmaxAttention(rope(qt, p0 + t, H, d, W.shape.invFreq), st.keys, st.values, p0 + t, window, H, Hkv, d));
      const oBase = linear(attn, lw.wo, C);

      if (!tptt) {
        h = h.map((x, t) => x.map((xi, i) => xi + oBase[t][i]));
      } else {
        // Linear branch -> o [T][H*d]; weightless RMSNorm over all heads (eps 1e-6), shared o_proj -> oLin [T][C].
        const o =
          this.semantics === 'exact'
            ? q.map((_, t) => lizaExactStep(W.shape, tptt, q[t], k[t], v[t], st.exact))
            : liza012(W.shape, tptt, q, k, v, this.linearCache ? st.liza012 : null);
        const oLin = linear(o.map((x) => rmsNorm(x, 1e-6)), lw.wo, C);

        // Memory as Gate (_prepare_attn_mixin L850-865, _apply_mag L867-901).
        const mu = tptt.magWeight;
        h = h.map((x, t) => {
          const base = oBase[t];
          const scale = tptt.baseScaleAttn ? Math.sqrt(base.reduce((s, b) => s + b * b, 0) / C + 1e-5) : 1;
          return x.map((xi, i) => {
            const sw = (1 - mu) * base[i];
            const lw2 = mu * scale * oLin[t][i];
            return xi + sw + lw2 + (tptt.crossGate ? sw * lw2 : 0);
          });
        });
      }

      // MLP: RMSNorm, SwiGLU.
      const xm = h.map((x) => rmsNorm(x, eps, lw.postNorm));
      const gate = linear(xm, lw.wGate, I);
      const up = linear(xm, lw.wUp, I);
      const act = gate.map((g, t) => g.map((gi, i) => silu(gi) * up[t][i]));
      const down = linear(act, lw.wDown, C);
      h = h.map((x, t) => x.map((xi, i) => xi + down[t][i]));
    }
    this.position += T;

    // Final norm and (tied) lm_head, only on the rows asked for: logits [rows][V].
    const want = rows ?? ids.map((_, t) => t);
    return linear(want.map((t) => rmsNorm(h[t], eps, W.finalNorm)), W.lmHead, V);
  }
}

/** Rotary embedding of every head of one row (rotate_half convention: pairs (i, i + d/2)). */
function rope(x: Vec, pos: number, heads: number, d: number, invFreq: Vec): Vec {
  const y = new Float64Array(x.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    const o = h * d;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      const c = Math.cos(angle), s = Math.sin(angle);
      const a = x[o + i], b = x[o + i + half];
      y[o + i] = a * c - b * s;
      y[o + i + half] = b * c + a * s;
    }
  }
  return y;
}

/** Causal GQA softmax attention of one query row at absolute position pos, over cached keys [0..pos] (or the last `window`). */
function softmaxAttention(q: Vec, keys: Vec[], values: Vec[], pos: number, window: number | null, H: number, Hkv: number, d: number): Vec {
  const out = new Float64Array(H * d);
  const G = H / Hkv;
  const from = window ? Math.max(0, pos - window + 1) : 0;
  const scores = new Float64Array(pos + 1 - from);
  const scale = 1 / Math.sqrt(d);
  for (let h = 0; h < H; h++) {
    const qo = h * d, ko = Math.floor(h / G) * d;
    let max = -Infinity;
    for (let s = from; s <= pos; s++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += q[qo + i] * keys[s][ko + i];
      scores[s - from] = dot * scale;
      if (scores[s - from] > max) max = scores[s - from];
    }
    let sum = 0;
    for (let s = 0; s < scores.length; s++) sum += (scores[s] = Math.exp(scores[s] - max));
    for (let s = from; s <= pos; s++) {
      const p = scores[s - from] / sum;
      for (let i = 0; i < d; i++) out[qo + i] += p * values[s][ko + i];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/** One uncached call over the whole input (how the goldens' logits were made); logits for `rows` (default all). */
export function referenceForward(weights: LlamaWeights, tptt: TpttConfig | null, ids: number[], semantics: Semantics, rows?: number[]): Vec[] {
  return new ReferenceSession(weights, tptt, semantics).call(ids, rows);
}

/** Greedy decoding the way `model.generate(use_cache=True)` drives the model: the prompt in one call, then one token per call. */
export function referenceGreedy(
  weights: LlamaWeights, tptt: TpttConfig | null, prompt: number[], steps: number, semantics: Semantics, linearCache = true,
): number[] {
  const session = new ReferenceSession(weights, tptt, semantics, linearCache);
  const out: number[] = [];
  let logits = session.call(prompt, [prompt.length - 1])[0];
  for (let i = 0; i < steps; i++) {
    const next = argmax(logits);
    out.push(next);
    if (i + 1 < steps) logits = session.call([next])[0];
  }
  return out;
}

export { argmax };
