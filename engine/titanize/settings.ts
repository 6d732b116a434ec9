// TPTT conversion settings under the reference library's field names, with validation that rejects
// impossible combinations before any work starts. The extension's settings form calls the same API.
import { ModelError } from '../model/errors';

export type GateChoice = 'c' | 'k' | 'v' | 'kv';
export type Trick = 'dt' | 'rot' | 'rdt';
export type Semantics = 'exact' | 'tptt-0.12';

export interface RecurrentConfig {
  /** Householder products per token (delta product order n); 1 = delta rule. */
  order: number;
  /** α (state decay per value column): c = none, or gated from pooled k / v / both. */
  alpha_gate: GateChoice;
  /** β (write strength): c = 0.5, or gated from pooled k / v / both. */
  beta_gate: GateChoice;
  /** false: the normalized tanh-GELU is applied to the state every max_chunk_size tokens. */
  linear: boolean;
  /** How a token becomes `order` virtual tokens: derivative, rotation, or their mean. */
  trick: Trick;
}

export interface LoraConfig {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
}

export interface TpttSettings {
  operator_mode: string;
  mag_weight: number;
  cross_gate: boolean;
  /** Softmax window in tokens (the base attention sees the last W tokens); null = unbounded. */
  max_self_attn_length: number | null;
  max_chunk_size: number;
  base_scale_attn: boolean;
  recurrent_config: RecurrentConfig;
  lora_config: LoraConfig | null;
  semantics: Semantics;
}

/** The reference's operator modes (tptt 0.12.1 TpttConfig.RECURRENT_MODES). */
export const RECURRENT_MODES: Record<string, RecurrentConfig> = {
  delta_rule: { order: 1, alpha_gate: 'c', beta_gate: 'k', linear: true, trick: 'dt' },
  gated_delta_rule: { order: 1, alpha_gate: 'k', beta_gate: 'k', linear: true, trick: 'dt' },
  delta_rule_v: { order: 1, alpha_gate: 'c', beta_gate: 'v', linear: true, trick: 'dt' },
  delta_rule_kv: { order: 1, alpha_gate: 'c', beta_gate: 'kv', linear: true, trick: 'dt' },
  delta_rule_gelu: { order: 1, alpha_gate: 'c', beta_gate: 'k', linear: false, trick: 'dt' },
  delta_product: { order: 2, alpha_gate: 'c', beta_gate: 'k', linear: true, trick: 'dt' },
  gated_delta_product: { order: 2, alpha_gate: 'k', beta_gate: 'k', linear: true, trick: 'dt' },
  delta_product_r: { order: 2, alpha_gate: 'c', beta_gate: 'k', linear: true, trick: 'rot' },
  delta_product_c: { order: 2, alpha_gate: 'c', beta_gate: 'k', linear: true, trick: 'rdt' },
};

export const OPERATOR_MODES = Object.keys(RECURRENT_MODES);

/**
 * μ when none is given. Not the reference's 0.5: before alignment μ 0.5 wrecks a model (code-llama-19m,
 * window 128: held-out NLL 6.36 against 3.24 for the window alone), while a small μ makes the memory
 * a net gain past the window (μ 0.02 / 0.05 / 0.1: −0.013 / −0.022 / −0.009 nats past 4k tokens) and,
 * after alignment, ties a window-only model aligned the same way (docs/alignment.md, "Choosing μ").
 */
export const DEFAULT_MAG_WEIGHT = 0.05;
/** The reference library's default μ (tptt TpttConfig), for its configs that leave the field out. */
export const TPTT_DEFAULT_MAG_WEIGHT = 0.5;
export const MAX_ORDER = 4;

export interface TpttSettingsInput {
  operator_mode?: string;
  mag_weight?: number;
  cross_gate?: boolean;
  max_self_attn_length?: number | null;
  max_chunk_size?: number;
  base_scale_attn?: boolean;
  recurrent_config?: Partial<RecurrentConfig>;
  lora_config?: LoraConfig | null;
  semantics?: Semantics;
}

const GATES: GateChoice[] = ['c', 'k', 'v', 'kv'];
const TRICKS: Trick[] = ['dt', 'rot', 'rdt'];

/** One message per problem; empty when the settings are valid. Used for inline validation in the UI. */
export function validateTpttSettings(input: TpttSettingsInput, headDim?: number): string[] {
  const errors: string[] = [];
  const mode = input.operator_mode ?? 'delta_rule';
  if (!(mode in RECURRENT_MODES) && !input.recurrent_config) errors.push(`operator_mode "${mode}" is unknown (one of ${OPERATOR_MODES.join(', ')}, or give an explicit recurrent_config)`);
  const mu = input.mag_weight ?? DEFAULT_MAG_WEIGHT;
  if (typeof mu !== 'number' || !Number.isFinite(mu) || mu < 0 || mu > 1) errors.push(`mag_weight must be a number in [0, 1], got ${JSON.stringify(input.mag_weight)}`);
  const w = input.max_self_attn_length;
  if (w !== undefined && w !== null && (!Number.isInteger(w) || w < 1)) errors.push(`max_self_attn_length (window) must be an integer ≥ 1 or unset, got ${JSON.stringify(w)}`);
  const c = input.max_chunk_size ?? 64;
  if (!Number.isInteger(c) || c < 1) errors.push(`max_chunk_size (chunk) must be a positive integer, got ${JSON.stringify(input.max_chunk_size)}`);
  else if (c > 512) errors.push(`max_chunk_size ${c} is too large (at most 512: the chunk's triangular solve grows with its square)`);
  if (input.semantics !== undefined && input.semantics !== 'exact' && input.semantics !== 'tptt-0.12') errors.push(`semantics must be "exact" or "tptt-0.12", got ${JSON.stringify(input.semantics)}`);
  const rc = input.recurrent_config;
  if (rc) {
    if (rc.order !== undefined && (!Number.isInteger(rc.order) || rc.order < 1 || rc.order > MAX_ORDER)) errors.push(`recurrent_config.order must be an integer in [1, ${MAX_ORDER}], got ${JSON.stringify(rc.order)}`);
    if (rc.alpha_gate !== undefined && !GATES.includes(rc.alpha_gate)) errors.push(`recurrent_config.alpha_gate must be one of ${GATES.join(', ')}, got ${JSON.stringify(rc.alpha_gate)}`);
    if (rc.beta_gate !== undefined && !GATES.includes(rc.beta_gate)) errors.push(`recurrent_config.beta_gate must be one of ${GATES.join(', ')}, got ${JSON.stringify(rc.beta_gate)}`);
    if (rc.trick !== undefined && !TRICKS.includes(rc.trick)) errors.push(`recurrent_config.trick must be one of ${TRICKS.join(', ')}, got ${JSON.stringify(rc.trick)}`);
    if (rc.linear !== undefined && typeof rc.linear !== 'boolean') errors.push('recurrent_config.linear must be true or false');
  }
  for (const key of ['cross_gate', 'base_scale_attn'] as const) {
    if (input[key] !== undefined && typeof input[key] !== 'boolean') errors.push(`${key} must be true or false`);
  }
  if (headDim !== undefined && headDim % 2 !== 0) errors.push(`head_dim ${headDim} is odd; the rotary trick and RoPE need an even head size`);
  const lc = input.lora_config;
  if (lc) {
    if (!Number.isInteger(lc.r) || lc.r < 1) errors.push(`lora_config.r must be a positive integer, got ${JSON.stringify(lc.r)}`);
    if (typeof lc.lora_alpha !== 'number' || !(lc.lora_alpha > 0)) errors.push(`lora_config.lora_alpha must be a positive number`);
  }
  return errors;
}

/** Fills defaults and validates; throws a ModelError listing every problem. */
export function resolveTpttSettings(input: TpttSettingsInput, headDim?: number): TpttSettings {
  const errors = validateTpttSettings(input, headDim);
  if (errors.length) throw new ModelError(`invalid TPTT settings: ${errors.join('; ')}`);
  const mode = input.operator_mode ?? 'delta_rule';
  const base = RECURRENT_MODES[mode] ?? RECURRENT_MODES.delta_rule;
  return {
    operator_mode: mode,
    mag_weight: input.mag_weight ?? DEFAULT_MAG_WEIGHT,
    cross_gate: input.cross_gate ?? false,
    max_self_attn_length: input.max_self_attn_length ?? null,
    max_chunk_size: input.max_chunk_size ?? 64,
    base_scale_attn: input.base_scale_attn ?? false,
    recurrent_config: { ...base, ...(input.recurrent_config ?? {}) },
    lora_config: input.lora_config ?? null,
    semantics: input.semantics ?? 'exact',
  };
}
