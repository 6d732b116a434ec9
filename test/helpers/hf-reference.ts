// An independent, slow, float64 forward pass of the supported Hugging Face decoder families, written
// from transformers' modeling files (not from the engine's graph), to check converted packages:
//
//   llama / mistral   pre-norm, RoPE (default, linear, llama3 scaling), GQA, SwiGLU; Mistral's sliding window
//   qwen2             + bias on q/k/v projections
//   qwen3             + RMSNorm over each head of q and k (before RoPE), head_dim independent of C/H
//   olmo2             RMSNorm over the whole q and k projections; norms on sublayer *outputs*
//                     (post_attention_layernorm, post_feedforward_layernorm), no input_layernorm
//
// config.json is read here directly (both the 4.x and the 5.x style); only the weight bytes come
// through the engine's safetensors reader (its own tests cover it). `ablate` switches one feature off
// so a test can show the comparison would notice that feature missing.
//
// Axis letters: T tokens, C hidden, H query heads, Hkv key/value heads, G = H/Hkv, d head dim, V vocabulary.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Checkpoint } from '../../engine/model/safetensors';

type Vec = Float64Array;

export type Ablation = 'rope-scaling' | 'qkv-bias' | 'qk-norm' | 'post-norm' | 'gqa-grouping' | 'sliding-window';

export interface HfConfig {
  modelType: string;
  C: number;
  L: number;
  H: number;
  Hkv: number;
  d: number;
  I: number;
  V: number;
  eps: number;
  tied: boolean;
  /** Inverse RoPE frequencies [d/2], scaling applied. */
  invFreq: Vec;
  /** The same without rope scaling (for the ablation). */
  invFreqUnscaled: Vec;
  ropeType: string;
  slidingWindow: number | null;
}

export interface HfModel {
  config: HfConfig;
  w: (name: string) => Vec;
  has: (name: string) => boolean;
}

/** transformers' rope init functions (modeling_rope_utils.py): default, linear, llama3. */
function inverseFrequencies(raw: Record<string, unknown>, d: number): { scaled: Vec; unscaled: Vec; type: string } {
  const params = (raw.rope_parameters ?? raw.rope_scaling ?? null) as Record<string, number | string> | null;
  const theta = Number(params?.rope_theta ?? raw.rope_theta ?? 10000);
  const type = String(params?.rope_type ?? params?.type ?? 'default');
  const unscaled = new Float64Array(d / 2).map((_, i) => 1 / Math.pow(theta, (2 * i) / d));
  const scaled = Float64Array.from(unscaled);
  if (type === 'linear') {
    // Positions divided by the factor ⇔ frequencies divided by it.
    for (let i = 0; i < scaled.length; i++) scaled[i] /= Number(params!.factor);
  } else if (type === 'llama3') {
    const factor = Number(params!.factor);
    const low = Number(params!.low_freq_factor);
    const high = Number(params!.high_freq_factor);
    const oldContext = Number(params!.original_max_position_embeddings);
    const lowFreqWavelen = oldContext / low;
    const highFreqWavelen = oldContext / high;
    for (let i = 0; i < scaled.length; i++) {
      const wavelen = (2 * Math.PI) / unscaled[i];
      let f = wavelen > lowFreqWavelen ? unscaled[i] / factor : unscaled[i];
      const smooth = (oldContext / wavelen - low) / (high - low);
      const medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
      if (medium) f = ((1 - smooth) * f) / factor + smooth * f;
      scaled[i] = f;
    }
  } else if (type !== 'default') {
    throw new Error(`hf-reference: rope type ${type} not implemented`);
  }
  return { scaled, unscaled, type };
}

export function readHfConfig(dir: string): HfConfig {
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const n = (k: string, fallback?: number): number => {
    const v = raw[k];
    if (typeof v === 'number') return v;
    if (fallback !== undefined) return fallback;
    throw new Error(`hf-reference: config.json lacks ${k}`);
  };
  const C = n('hidden_size');
  const H = n('num_attention_heads');
  const d = typeof raw.head_dim === 'number' ? raw.head_dim : C / H;
  const rope = inverseFrequencies(raw, d);
  const modelType = String(raw.model_type);
  // Mistral honours sliding_window; Qwen2/3 only with use_sliding_window (never set by these tests).
  const slidingWindow = modelType === 'mistral' && typeof raw.sliding_window === 'number' ? raw.sliding_window : null;
  return {
    modelType,
    C,
    L: n('num_hidden_layers'),
    H,
    Hkv: n('num_key_value_heads', H),
    d,
    I: n('intermediate_size'),
    V: n('vocab_size'),
    eps: n('rms_norm_eps', 1e-6),
    tied: raw.tie_word_embeddings === true,
    invFreq: rope.scaled,
    invFreqUnscaled: rope.unscaled,
    ropeType: rope.type,
    slidingWindow,
  };
}

/** IEEE half rounding (nearest, ties to even) of a float, as a float. */
export function roundToHalf(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10); // 10 fraction bits; subnormals below 2^-14
  const q = a / ulp;
  const fl = Math.floor(q);
  const rest = q - fl;
  const r = rest > 0.5 || (rest === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  const y = r * ulp;
  return Math.sign(x) * (y > 65504 ? Infinity : y);
}

export interface LoadOptions {
  /** Round the matrices (not norms or biases) to half precision, as an fp16 package stores them. */
  halfMatrices?: boolean;
}

export async function loadHfModel(dir: string, options: LoadOptions = {}): Promise<HfModel> {
  const config = readHfConfig(dir);
  const ck = await Checkpoint.open(dir);
  const cache = new Map<string, Vec>();
  try {
    for (const name of ck.names()) {
      const v = Float64Array.from(ck.readFloat32(name));
      const isMatrix = ck.info(name).shape.length === 2;
      if (options.halfMatrices && isMatrix) for (let i = 0; i < v.length; i++) v[i] = roundToHalf(v[i]);
      cache.set(name, v);
    }
  } finally {
    ck.close();
  }
  return {
    config,
    has: (name) => cache.has(name),
    w: (name) => {
      const v = cache.get(name);
      if (!v) throw new Error(`hf-reference: checkpoint has no ${name}`);
      return v;
    },
  };
}

// --- numeric helpers ----------------------------------------------------------------------------

/** y = W x + b for W [out, in] (a torch Linear weight). */
function linear(x: Vec, w: Vec, out: number, b?: Vec): Vec {
  const inDim = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o] : 0;
    const row = o * inDim;
    for (let i = 0; i < inDim; i++) s += w[row + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** RMSNorm over consecutive groups of `size` values (size = x.length: the whole vector). */
function rmsNorm(x: Vec, weight: Vec, eps: number, size = x.length): Vec {
  const y = new Float64Array(x.length);
  for (let g = 0; g < x.length; g += size) {
    let ss = 0;
    for (let i = 0; i < size; i++) ss += x[g + i] * x[g + i];
    const r = 1 / Math.sqrt(ss / size + eps);
    for (let i = 0; i < size; i++) y[g + i] = x[g + i] * r * weight[(g + i) % weight.length];
  }
  return y;
}

const silu = (x: number): number => x / (1 + Math.exp(-x));

/** rotate_half RoPE on every head of a row at position `pos`. */
function rope(x: Vec, heads: number, d: number, pos: number, invFreq: Vec): Vec {
  const y = new Float64Array(x.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const c = Math.cos(pos * invFreq[i]);
      const s = Math.sin(pos * invFreq[i]);
      const a = x[h * d + i];
      const b = x[h * d + i + half];
      y[h * d + i] = a * c - b * s;
      y[h * d + i + half] = b * c + a * s;
    }
  }
  return y;
}

// --- the forward pass ---------------------------------------------------------------------------

export interface ForwardOptions {
  ablate?: Ablation;
  /** Rows whose logits to return (default all). */
  rows?: number[];
}

/** Next-token logits [V] for each requested position of `ids` (one uncached pass, causal). */
export function hfForward(model: HfModel, ids: readonly number[], options: ForwardOptions = {}): Vec[] {
  const { config: c, w, has } = model;
  const { C, H, Hkv, d, I, V, eps } = c;
  const G = H / Hkv;
  const ab = options.ablate;
  const invFreq = ab === 'rope-scaling' ? c.invFreqUnscaled : c.invFreq;
  const window = ab === 'sliding-window' ? null : c.slidingWindow;
  const post = c.modelType === 'olmo2';
  const ones = new Float64Array(C).fill(1);

  let x: Vec[] = ids.map((id) => w('model.embed_tokens.weight').slice(id * C, (id + 1) * C));
  for (let l = 0; l < c.L; l++) {
    const p = `model.layers.${l}.`;
    const bias = (name: string): Vec | undefined => (ab !== 'qkv-bias' && has(p + name) ? w(p + name) : undefined);

    // Attention: q [H·d], k, v [Hkv·d] per token.
    const attnIn = post ? x : x.map((t) => rmsNorm(t, w(p + 'input_layernorm.weight'), eps));
    const qs: Vec[] = [];
    const ks: Vec[] = [];
    const vs: Vec[] = [];
    attnIn.forEach((t, pos) => {
      let q = linear(t, w(p + 'self_attn.q_proj.weight'), H * d, bias('self_attn.q_proj.bias'));
      let k = linear(t, w(p + 'self_attn.k_proj.weight'), Hkv * d, bias('self_attn.k_proj.bias'));
      const v = linear(t, w(p + 'self_attn.v_proj.weight'), Hkv * d, bias('self_attn.v_proj.bias'));
      if (ab !== 'qk-norm' && c.modelType === 'qwen3') {
        q = rmsNorm(q, w(p + 'self_attn.q_norm.weight'), eps, d); // per head
        k = rmsNorm(k, w(p + 'self_attn.k_norm.weight'), eps, d);
      } else if (ab !== 'qk-norm' && c.modelType === 'olmo2') {
        q = rmsNorm(q, w(p + 'self_attn.q_norm.weight'), eps); // whole projection
        k = rmsNorm(k, w(p + 'self_attn.k_norm.weight'), eps);
      }
      qs.push(rope(q, H, d, pos, invFreq));
      ks.push(rope(k, Hkv, d, pos, invFreq));
      vs.push(v);
    });
    const heads = qs.map((q, t) => {
      const out = new Float64Array(H * d);
      const from = window === null ? 0 : Math.max(0, t - window + 1);
      for (let h = 0; h < H; h++) {
        // Query head h reads key/value head ⌊h/G⌋ (repeat_kv); the ablation pairs them wrongly.
        const kvh = ab === 'gqa-grouping' ? h % Hkv : Math.floor(h / G);
        const scores: number[] = [];
        for (let s = from; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += q[h * d + i] * ks[s][kvh * d + i];
          scores.push(dot / Math.sqrt(d));
        }
        const m = Math.max(...scores);
        const e = scores.map((z) => Math.exp(z - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let s = from; s <= t; s++) for (let i = 0; i < d; i++) out[h * d + i] += (e[s - from] / sum) * vs[s][kvh * d + i];
      }
      return out;
    });
    x = x.map((t, pos) => {
      let o = linear(heads[pos], w(p + 'self_attn.o_proj.weight'), C, has(p + 'self_attn.o_proj.bias') ? w(p + 'self_attn.o_proj.bias') : undefined);
      if (post) o = rmsNorm(o, ab === 'post-norm' ? ones : w(p + 'post_attention_layernorm.weight'), eps);
      return t.map((v, i) => v + o[i]);
    });

    // MLP (SwiGLU).
    x = x.map((t) => {
      const mlpIn = post ? t : rmsNorm(t, w(p + 'post_attention_layernorm.weight'), eps);
      const gate = linear(mlpIn, w(p + 'mlp.gate_proj.weight'), I);
      const up = linear(mlpIn, w(p + 'mlp.up_proj.weight'), I);
      let down = linear(gate.map((g, i) => silu(g) * up[i]), w(p + 'mlp.down_proj.weight'), C);
      if (post) down = rmsNorm(down, ab === 'post-norm' ? ones : w(p + 'post_feedforward_layernorm.weight'), eps);
      return t.map((v, i) => v + down[i]);
    });
  }
  const head = c.tied ? w('model.embed_tokens.weight') : w('lm_head.weight');
  const rows = options.rows ?? ids.map((_, i) => i);
  return rows.map((r) => linear(rmsNorm(x[r], w('model.norm.weight'), eps), head, V));
}

/** Greedy continuation, re-running the whole sequence each step (slow, but nothing cached to get wrong). */
export function hfGreedy(model: HfModel, prompt: readonly number[], steps: number): { tokens: number[]; margins: number[] } {
  const seq = [...prompt];
  const tokens: number[] = [];
  const margins: number[] = [];
  for (let s = 0; s < steps; s++) {
    const [logits] = hfForward(model, seq, { rows: [seq.length - 1] });
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    let second = -Infinity;
    for (let i = 0; i < logits.length; i++) if (i !== best && logits[i] > second) second = logits[i];
    tokens.push(best);
    margins.push(logits[best] - second);
    seq.push(best);
  }
  return { tokens, margins };
}
