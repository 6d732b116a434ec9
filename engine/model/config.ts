// Reading `config.json` of a Hugging Face checkpoint into one normalized, validated blueprint.
// Both config styles are read: the older (`rope_theta`, `rope_scaling`, `torch_dtype`) and the newer
// (`rope_parameters`, `dtype`).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clip, ModelError } from './errors';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3', 'olmo2'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export type RopeConfig =
  | { type: 'default'; theta: number }
  | { type: 'linear'; theta: number; factor: number }
  | { type: 'llama3'; theta: number; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export type WeightDType = 'float32' | 'float16' | 'bfloat16';

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number; // C
  intermediateSize: number; // MLP inner size
  numLayers: number; // L
  numHeads: number; // H (query heads)
  numKvHeads: number; // H_kv (GQA: H % H_kv == 0)
  headDim: number; // d
  vocabSize: number; // V
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2; Llama with attention_bias). */
  qkvBias: boolean;
  /** o_proj carries a bias (Llama with attention_bias). */
  oBias: boolean;
  mlpBias: boolean;
  /** RMSNorm on q and k before RoPE: per head over d (Qwen3) or over the whole projection (OLMo 2). */
  qkNorm: 'none' | 'per-head' | 'full';
  /** Where the block norms sit: before attention/MLP (Llama) or after them (OLMo 2). */
  normPlacement: 'pre' | 'post';
  rope: RopeConfig;
  /** Sliding window of the base model's own attention, when it has one (Mistral). */
  slidingWindow: number | null;
  dtype: WeightDType;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** The file as read, kept so packages can carry the source config verbatim. */
  raw: Record<string, unknown>;
}

export function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(code === 'ENOENT' ? `${what} is missing (${file})` : `${what}: cannot read ${file} (${code ?? String(e)})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelError(`${what}: ${file} is not valid JSON (${clip((e as Error).message.replace(/\s+/g, ' '), 200)})`);
  }
}

export function loadModelConfig(dir: string): ModelConfig {
  const raw = readJsonFile(path.join(dir, 'config.json'), 'config.json');
  return parseModelConfig(raw);
}

function ids(value: unknown): number[] {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
  return [];
}

export function parseModelConfig(rawValue: unknown): ModelConfig {
  if (typeof rawValue !== 'object' || rawValue === null || Array.isArray(rawValue)) throw new ModelError('config.json: expected a JSON object');
  const raw = rawValue as Record<string, unknown>;
  // Multimodal wrappers (e.g. Gemma 3, Mistral 3) nest the language model's config.
  const cfg = (typeof raw.text_config === 'object' && raw.text_config !== null ? { ...raw, ...(raw.text_config as object) } : raw) as Record<string, unknown>;
  const modelType = cfg.model_type;
  if (typeof modelType !== 'string') throw new ModelError('config.json: missing "model_type"');
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ModelError(`config.json: model_type "${clip(modelType)}" is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = cfg[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ModelError(`config.json: missing required field "${key}"`);
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new ModelError(`config.json: "${key}" must be a positive integer, got ${clip(JSON.stringify(v))}`);
    return v;
  };
  const num = (key: string, fallback?: number): number => {
    const v = cfg[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ModelError(`config.json: missing required field "${key}"`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ModelError(`config.json: "${key}" must be a number, got ${clip(JSON.stringify(v))}`);
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = cfg[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ModelError(`config.json: "${key}" must be true or false, got ${clip(JSON.stringify(v))}`);
    return v;
  };

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw new ModelError(`config.json: num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`);
  if ((cfg.head_dim === undefined || cfg.head_dim === null) && hiddenSize % numHeads !== 0) throw new ModelError(`config.json: hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
  const headDim = int('head_dim', Math.floor(hiddenSize / numHeads));
  if (headDim % 2 !== 0) throw new ModelError(`config.json: head_dim ${headDim} must be even for rotary embeddings`);
  const act = cfg.hidden_act ?? cfg.hidden_activation ?? 'silu';
  if (act !== 'silu') throw new ModelError(`config.json: hidden_act "${clip(String(act))}" is not supported (only silu/SwiGLU MLPs)`);

  const attentionBias = bool('attention_bias', false);
  const config: ModelConfig = {
    modelType: modelType as ModelType,
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    maxPositionEmbeddings: int('max_position_embeddings', 4096),
    tieWordEmbeddings: bool('tie_word_embeddings', false),
    qkvBias: modelType === 'qwen2' ? true : attentionBias,
    oBias: modelType === 'qwen2' ? false : attentionBias,
    mlpBias: bool('mlp_bias', false),
    qkNorm: modelType === 'qwen3' ? 'per-head' : modelType === 'olmo2' ? 'full' : 'none',
    normPlacement: modelType === 'olmo2' ? 'post' : 'pre',
    rope: parseRope(cfg),
    slidingWindow: parseSlidingWindow(cfg, modelType as ModelType),
    dtype: parseDType(cfg.dtype ?? cfg.torch_dtype),
    bosTokenId: ids(cfg.bos_token_id)[0] ?? null,
    eosTokenIds: ids(cfg.eos_token_id),
    padTokenId: ids(cfg.pad_token_id)[0] ?? null,
    raw,
  };
  // Each scaling field is checked on its own, but together they can still divide by (nearly) zero:
  // a denormal linear factor, or llama3 with equal low and high frequency factors.
  if (headDim <= 1 << 16 && ropeInverseFrequencies(config.rope, headDim).some((f) => !Number.isFinite(f))) {
    throw new ModelError(`config.json: rope scaling ${clip(JSON.stringify(cfg.rope_parameters ?? cfg.rope_scaling ?? null))} gives infinite or undefined rotary frequencies; check "factor", "low_freq_factor" and "high_freq_factor"`);
  }
  return config;
}

function parseDType(v: unknown): WeightDType {
  if (v === undefined || v === null) return 'float32';
  switch (v) {
    case 'float32':
    case 'float':
      return 'float32';
    case 'float16':
    case 'half':
      return 'float16';
    case 'bfloat16':
      return 'bfloat16';
    default:
      throw new ModelError(`config.json: dtype ${clip(String(JSON.stringify(v)))} is not supported (float32, float16, bfloat16)`);
  }
}

function parseSlidingWindow(cfg: Record<string, unknown>, modelType: ModelType): number | null {
  const w = cfg.sliding_window;
  if (w === undefined || w === null) return null;
  // Qwen2/3 configs carry a sliding_window that is only used when use_sliding_window is true.
  if ((modelType === 'qwen2' || modelType === 'qwen3') && cfg.use_sliding_window !== true) return null;
  if (typeof w !== 'number' || !Number.isInteger(w) || w <= 0) throw new ModelError(`config.json: "sliding_window" must be a positive integer or null, got ${clip(JSON.stringify(w))}`);
  // Which layers slide: newer configs list layer_types; Qwen2/3's older ones slide the layers from
  // max_window_layers on. The graphs use one window for every layer, so a mix is refused. (Counted,
  // not listed: num_hidden_layers is not yet checked here and may be absurdly large.)
  const layers = cfg.num_hidden_layers as number;
  let sliding: number | null = null;
  if (Array.isArray(cfg.layer_types)) {
    if (cfg.layer_types.some((t) => t !== 'sliding_attention' && t !== 'full_attention')) throw new ModelError(`config.json: "layer_types" may hold only "sliding_attention" and "full_attention", got ${clip(JSON.stringify(cfg.layer_types))}`);
    if (cfg.layer_types.length !== layers) throw new ModelError(`config.json: "layer_types" lists ${cfg.layer_types.length} layers, num_hidden_layers is ${clip(JSON.stringify(layers))}`);
    sliding = cfg.layer_types.filter((t) => t === 'sliding_attention').length;
  } else if (modelType === 'qwen2' || modelType === 'qwen3') {
    // transformers' Qwen2Config/Qwen3Config default it to 28.
    const from = cfg.max_window_layers ?? 28;
    if (typeof from !== 'number' || !Number.isInteger(from) || from < 0) throw new ModelError(`config.json: "max_window_layers" must be a non-negative integer, got ${clip(JSON.stringify(from))}`);
    sliding = typeof layers === 'number' ? Math.max(0, layers - from) : 0;
  }
  if (sliding === null || sliding === layers) return w;
  if (sliding === 0) return null;
  throw new ModelError(`config.json: ${sliding} of ${layers} layers use a sliding window of ${w} and the others full attention; models that mix the two are not supported`);
}

function parseRope(cfg: Record<string, unknown>): RopeConfig {
  // Newer style: rope_parameters {rope_type, rope_theta, factor, ...}; older: rope_theta + rope_scaling.
  const params = (cfg.rope_parameters ?? cfg.rope_scaling ?? null) as Record<string, unknown> | null;
  if (params !== null && (typeof params !== 'object' || Array.isArray(params))) throw new ModelError('config.json: "rope_scaling"/"rope_parameters" must be an object or null');
  const thetaValue = params?.rope_theta ?? cfg.rope_theta ?? 10000;
  if (typeof thetaValue !== 'number' || !Number.isFinite(thetaValue) || !(thetaValue > 0)) throw new ModelError(`config.json: rope_theta must be a positive number, got ${clip(String(JSON.stringify(thetaValue)))}`);
  // Real models use 10^4…10^7; a theta below 1 (a denormal one especially) makes the inverse frequencies infinite.
  if (thetaValue < 1) throw new ModelError(`config.json: rope_theta ${thetaValue} is below 1 (models use 10000 and up); its rotary frequencies would overflow`);
  const theta = thetaValue;
  const type = (params?.rope_type ?? params?.type ?? 'default') as string;
  const pnum = (key: string, fallback?: number): number => {
    const v = params?.[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ModelError(`config.json: rope ${type} scaling needs "${key}"`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || !(v > 0)) throw new ModelError(`config.json: rope scaling "${key}" must be a positive number, got ${clip(String(JSON.stringify(v)))}`);
    return v;
  };
  switch (type) {
    case 'default':
      return { type: 'default', theta };
    case 'linear':
      return { type: 'linear', theta, factor: pnum('factor') };
    case 'llama3':
      return {
        type: 'llama3',
        theta,
        factor: pnum('factor'),
        lowFreqFactor: pnum('low_freq_factor'),
        highFreqFactor: pnum('high_freq_factor'),
        originalMaxPositionEmbeddings: pnum('original_max_position_embeddings'),
      };
    default:
      throw new ModelError(`config.json: rope type "${clip(String(type))}" is not supported (default, linear, llama3)`);
  }
}

/** Rotary inverse frequencies (length d/2), with the config's scaling applied, as transformers computes them. */
export function ropeInverseFrequencies(rope: RopeConfig, headDim: number): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(rope.theta, (2 * i) / headDim);
  if (rope.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= rope.factor;
  } else if (rope.type === 'llama3') {
    const lowWavelen = rope.originalMaxPositionEmbeddings / rope.lowFreqFactor;
    const highWavelen = rope.originalMaxPositionEmbeddings / rope.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] = inv[i] / rope.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (rope.originalMaxPositionEmbeddings / wavelen - rope.lowFreqFactor) / (rope.highFreqFactor - rope.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / rope.factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}
