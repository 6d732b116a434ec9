// Random LoRA adapters for a checkpoint from writeRandomCheckpoint, in the layouts found in the wild:
// PEFT's (adapter_config.json + adapter_model.safetensors, keys under base_model.model.) and the one
// tptt 0.12 writes (the LoRA config inside config.json, keys model.model.…self_attn.base_attn.….default),
// plus the variants in between. Values come from a seeded PRNG per key and are exactly representable in
// the dtype written, so a test can recompute W + s·B·A from `values(key)` or from the file itself.
//
//   const adapter = writeRandomLoraAdapter(dir, ckpt, { style: 'tptt', r: 4, alpha: 16 });
//   adapter.keyFor(0, 'q_proj', 'lora_A')   // the key as written
//   adapter.scaling('model.layers.0.self_attn.q_proj')
import * as fs from 'node:fs';
import * as path from 'node:path';
import { floatToHalf, halfToFloat, type SafetensorsDType } from '../../engine/model/safetensors';
import { writeSafetensorsSync, type TensorSource } from '../../engine/model/safetensors-writer';
import type { GeneratedCheckpoint } from './checkpoint';

/** How keys are spelled; see KEY_STYLES. */
export type AdapterKeyStyle = 'peft' | 'bare' | 'base-attn' | 'default' | 'tptt';

export const KEY_STYLES: Record<AdapterKeyStyle, { prefix: string; baseAttn: boolean; adapterName: string | null; config: 'peft' | 'tptt' }> = {
  /** base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight — PEFT's save_pretrained. */
  peft: { prefix: 'base_model.model.', baseAttn: false, adapterName: null, config: 'peft' },
  /** model.layers.0.self_attn.q_proj.lora_A.weight — no wrapper prefix at all. */
  bare: { prefix: '', baseAttn: false, adapterName: null, config: 'peft' },
  /** base_model.model.model.layers.0.self_attn.base_attn.q_proj.lora_A.weight — PEFT around tptt's LiZA wrapper. */
  'base-attn': { prefix: 'base_model.model.', baseAttn: true, adapterName: null, config: 'peft' },
  /** base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight — a raw PEFT state_dict. */
  default: { prefix: 'base_model.model.', baseAttn: false, adapterName: 'default', config: 'peft' },
  /** model.model.layers.0.self_attn.base_attn.q_proj.lora_A.default.weight, config in config.json — tptt's save_tptt_safetensors. */
  tptt: { prefix: 'model.', baseAttn: true, adapterName: 'default', config: 'tptt' },
};

export const ATTENTION_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
export const MLP_PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj'];

export interface LoraAdapterOptions {
  style?: AdapterKeyStyle; // default 'peft'
  r?: number; // default 4
  alpha?: number; // default 8
  targetModules?: string[]; // default q/k/v/o_proj
  useRslora?: boolean;
  /** Which layers get matrices (default all). */
  layers?: number[];
  /** Per-module rank / alpha, by full module name (model.layers.1.self_attn.q_proj), written as rank_pattern / alpha_pattern. */
  ranks?: Record<string, number>;
  alphas?: Record<string, number>;
  /** Also write lora_B.bias (PEFT's lora_bias). */
  loraBias?: boolean;
  dtype?: 'F32' | 'BF16' | 'F16'; // default F32
  seed?: number;
  /** Extra fields merged into the LoRA config as written. */
  configExtra?: Record<string, unknown>;
}

export interface GeneratedAdapter {
  dir: string;
  /** The LoRA config as written (adapter_config.json, or config.json's lora_config). */
  loraConfig: Record<string, unknown>;
  /** Every key written with its shape, in file order. */
  shapes: Map<string, number[]>;
  /** The values written under `key` (exact in the file's dtype). */
  values(key: string): Float32Array;
  keyFor(layer: number, proj: string, factor: 'lora_A' | 'lora_B', param?: 'weight' | 'bias'): string;
  /** Full module names that got matrices, e.g. model.layers.0.self_attn.q_proj. */
  modules: string[];
  rank(module: string): number;
  scaling(module: string): number;
}

const blockOf = (proj: string): string => (MLP_PROJECTIONS.includes(proj) ? 'mlp' : 'self_attn');

/** Writes a random adapter for `ckpt` into `dir` (created if needed). */
export function writeRandomLoraAdapter(dir: string, ckpt: GeneratedCheckpoint, options: LoraAdapterOptions = {}): GeneratedAdapter {
  const style = KEY_STYLES[options.style ?? 'peft'];
  const r = options.r ?? 4;
  const alpha = options.alpha ?? 8;
  const targets = options.targetModules ?? ATTENTION_PROJECTIONS;
  const dtype: SafetensorsDType = options.dtype ?? 'F32';
  const seed = options.seed ?? 7;
  const numLayers = ckpt.config.num_hidden_layers as number;
  const layers = options.layers ?? Array.from({ length: numLayers }, (_, i) => i);
  fs.mkdirSync(dir, { recursive: true });

  const keyFor = (layer: number, proj: string, factor: 'lora_A' | 'lora_B', param: 'weight' | 'bias' = 'weight'): string => {
    const block = blockOf(proj);
    const attn = style.baseAttn && block === 'self_attn' ? 'base_attn.' : '';
    const name = style.adapterName ? `.${style.adapterName}` : '';
    return `${style.prefix}model.layers.${layer}.${block}.${attn}${proj}.${factor}${name}.${param}`;
  };
  const rank = (module: string): number => options.ranks?.[module] ?? r;
  const scaling = (module: string): number => {
    const a = options.alphas?.[module] ?? alpha;
    return options.useRslora ? a / Math.sqrt(rank(module)) : a / rank(module);
  };

  const shapes = new Map<string, number[]>();
  const modules: string[] = [];
  for (const layer of layers) {
    for (const proj of targets) {
      const module = `model.layers.${layer}.${blockOf(proj)}.${proj}`;
      const base = ckpt.shapes.get(`${module}.weight`);
      if (!base) throw new Error(`checkpoint has no ${module}.weight`);
      const [out, inp] = base;
      modules.push(module);
      shapes.set(keyFor(layer, proj, 'lora_A'), [rank(module), inp]);
      shapes.set(keyFor(layer, proj, 'lora_B'), [out, rank(module)]);
      if (options.loraBias) shapes.set(keyFor(layer, proj, 'lora_B', 'bias'), [out]);
    }
  }
  const values = (key: string): Float32Array => {
    const shape = shapes.get(key);
    if (!shape) throw new Error(`adapter has no key ${key}`);
    // Trained adapters have B ≠ 0 (PEFT starts it at zero); scales chosen so the merge visibly moves the logits.
    const std = key.includes('lora_A') ? 0.1 : 0.05;
    return exactIn(dtype, gaussian(seed, key, shape.reduce((a, b) => a * b, 1), std));
  };
  const tensors: TensorSource[] = [...shapes].map(([name, shape]) => ({ name, shape, dtype, data: () => values(name) }));
  writeSafetensorsSync(path.join(dir, 'adapter_model.safetensors'), tensors, { metadata: { format: 'pt' } });

  const loraConfig: Record<string, unknown> = {
    alpha_pattern: options.alphas ?? {},
    base_model_name_or_path: ckpt.dir,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: alpha,
    lora_bias: options.loraBias ?? false,
    lora_dropout: 0.05,
    modules_to_save: null,
    peft_type: 'LORA',
    r,
    rank_pattern: options.ranks ?? {},
    revision: null,
    target_modules: targets,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: options.useRslora ?? false,
    ...options.configExtra,
  };
  if (style.config === 'peft') {
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(loraConfig, null, 2) + '\n');
  } else {
    // tptt's TpttConfig: the backbone's fields, its own, and the LoRA config as a dict.
    const tpttConfig = {
      ...ckpt.config,
      architectures: ['TpttModel'],
      model_type: 'tptt',
      base_model_name: ckpt.dir,
      operator_mode: 'delta_rule',
      mag_weight: 0.5,
      max_chunk_size: 64,
      lora_config: loraConfig,
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(tpttConfig, null, 2) + '\n');
  }
  return { dir, loraConfig, shapes, values, keyFor, modules, rank, scaling };
}

/** mulberry32 seeded by FNV-1a of the key: the same key always gives the same values. */
function gaussian(seed: number, key: string, n: number, std: number): Float32Array {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  let a = h;
  const rand = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return out;
}

/** Rounds values to what the dtype holds exactly, so writing them loses nothing. */
function exactIn(dtype: SafetensorsDType, values: Float32Array): Float32Array {
  if (dtype === 'BF16') {
    const u = new Uint32Array(values.buffer);
    for (let i = 0; i < u.length; i++) u[i] &= 0xffff0000;
  } else if (dtype === 'F16') {
    for (let i = 0; i < values.length; i++) values[i] = halfToFloat(floatToHalf(values[i]));
  }
  return values;
}
