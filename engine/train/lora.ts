// LoRA on the package's projections, as PEFT applies it to the Hugging Face modules:
//
//   y = x·Wᵀ + s · dropout(x)·Aᵀ·Bᵀ        A [r, in], B [out, r], s = lora_alpha / r (or / √r with rsLoRA)
//
// The package fuses q/k/v into `layers.i.qkv` and gate/up into `layers.i.gate_up`; each HF module keeps
// its own A and B, and their products are placed on the fused output's rows. A and B are graph inputs,
// so the trainer (and its optimizer state) lives in JavaScript and the frozen weights never change.
// Initialization follows PEFT: A ~ kaiming-uniform(a = √5) = U(−1/√in, 1/√in), B = 0, so training
// starts exactly at the converted model.
import type { GraphBuilder, Value } from '../graph/builder';
import type { ProjectionName } from '../graph/transformer';
import type { ModelConfig } from '../model/config';
import { ModelError } from '../model/errors';

/** HF projection modules LoRA may target (PEFT's target_modules names). */
export const LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

/** The paper's choice: attention projections only. */
export const DEFAULT_LORA_TARGETS: LoraModule[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  targets: LoraModule[];
  rslora: boolean;
}

/** One LoRA-adapted module of one layer. */
export interface LoraSlot {
  layer: number;
  module: LoraModule;
  /** PEFT module name: model.layers.{i}.self_attn.q_proj */
  peftName: string;
  inFeatures: number;
  outFeatures: number;
  /** Graph input names. */
  a: string;
  b: string;
  /** Dropout mask input (present when dropout > 0). */
  mask: string | null;
}

const BLOCK: Record<LoraModule, 'self_attn' | 'mlp'> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

/** Which fused package projection holds a module, and the rows it occupies there. */
function placement(config: ModelConfig, module: LoraModule): { projection: ProjectionName; rows: [number, number]; inFeatures: number } {
  const { hiddenSize: C, numHeads: H, numKvHeads: Hk, headDim: d, intermediateSize: I } = config;
  switch (module) {
    case 'q_proj':
      return { projection: 'qkv', rows: [0, H * d], inFeatures: C };
    case 'k_proj':
      return { projection: 'qkv', rows: [H * d, H * d + Hk * d], inFeatures: C };
    case 'v_proj':
      return { projection: 'qkv', rows: [H * d + Hk * d, H * d + 2 * Hk * d], inFeatures: C };
    case 'o_proj':
      return { projection: 'o', rows: [0, C], inFeatures: H * d };
    case 'gate_proj':
      return { projection: 'gate_up', rows: [0, I], inFeatures: C };
    case 'up_proj':
      return { projection: 'gate_up', rows: [I, 2 * I], inFeatures: C };
    case 'down_proj':
      return { projection: 'down', rows: [0, C], inFeatures: I };
  }
}

export function loraScaling(spec: LoraSpec): number {
  return spec.rslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r;
}

export function validateLoraSpec(spec: LoraSpec): void {
  if (!Number.isInteger(spec.r) || spec.r < 1) throw new ModelError(`LoRA rank must be a positive integer, got ${spec.r}`);
  if (!(spec.alpha > 0) || !Number.isFinite(spec.alpha)) throw new ModelError(`LoRA alpha must be a positive number, got ${spec.alpha}`);
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw new ModelError(`LoRA dropout must be in [0, 1), got ${spec.dropout}`);
  if (spec.targets.length === 0) throw new ModelError('LoRA needs at least one target module');
  for (const t of spec.targets) if (!LORA_MODULES.includes(t)) throw new ModelError(`LoRA target ${t} is not one of ${LORA_MODULES.join(', ')}`);
}

/** Every adapted (layer, module), in layer order then module order. */
export function loraSlots(config: ModelConfig, spec: LoraSpec): LoraSlot[] {
  const slots: LoraSlot[] = [];
  const targets = LORA_MODULES.filter((m) => spec.targets.includes(m));
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of targets) {
      const { rows, inFeatures } = placement(config, module);
      const base = `lora.${layer}.${module}`;
      slots.push({
        layer,
        module,
        peftName: `model.layers.${layer}.${BLOCK[module]}.${module}`,
        inFeatures,
        outFeatures: rows[1] - rows[0],
        a: `${base}.A`,
        b: `${base}.B`,
        mask: spec.dropout > 0 ? `${base}.dropout_mask` : null,
      });
    }
  }
  return slots;
}

/** Shapes of a slot's A and B. */
export const shapeA = (s: LoraSlot, r: number): number[] => [r, s.inFeatures];
export const shapeB = (s: LoraSlot, r: number): number[] => [s.outFeatures, r];

/**
 * The decoder graph's projection hook: declares the slots' A/B (and mask) inputs when first used and
 * adds the low-rank updates to the fused projections' outputs.
 */
export function loraProjection(config: ModelConfig, spec: LoraSpec, sequence: number, options: { dropout: boolean; compute?: 'float32' | 'float16' }) {
  const slots = loraSlots(config, spec);
  const scale = loraScaling(spec);
  const keep = 1 / (1 - spec.dropout);
  const half = options.compute === 'float16';
  const declared = new Map<string, Value>();
  /** A/B in the activation dtype (cast once per graph in half precision). */
  const inCompute = new Map<string, Value>();
  const factor = (g: GraphBuilder, name: string): Value => {
    if (!half) return declared.get(name)!;
    let v = inCompute.get(name);
    if (!v) {
      v = g.op('Cast', [declared.get(name)!], { to: 10 });
      inCompute.set(name, v);
    }
    return v;
  };
  const scalar = (g: GraphBuilder, v: number): Value => g.floatIn(half ? 'float16' : 'float32', v);
  const inputOf = (g: GraphBuilder, name: string, dtype: 'float32' | 'bool', shape: number[]): Value => {
    let v = declared.get(name);
    if (!v) {
      v = g.input(name, dtype, shape);
      declared.set(name, v);
    }
    return v;
  };
  /** Declares every LoRA input up front, in slot order (a stable graph interface). */
  const declare = (g: GraphBuilder) => {
    for (const s of slots) {
      inputOf(g, s.a, 'float32', shapeA(s, spec.r));
      inputOf(g, s.b, 'float32', shapeB(s, spec.r));
    }
    if (options.dropout) for (const s of slots) if (s.mask) inputOf(g, s.mask, 'bool', [sequence, s.inFeatures]);
  };
  const hook = (g: GraphBuilder, layer: number, name: ProjectionName, x: Value, y: Value, rows: { start: number; count: number }): Value => {
    const mine = slots.filter((s) => s.layer === layer && placement(config, s.module).projection === name);
    if (mine.length === 0) return y;
    const width = totalRows(config, name);
    const pieces: Value[] = [];
    let at = 0;
    const zerosOf = (n: number) => g.op('Expand', [scalar(g, 0), g.ints([rows.count, n])]);
    for (const s of [...mine].sort((p, q) => placement(config, p.module).rows[0] - placement(config, q.module).rows[0])) {
      const [from, to] = placement(config, s.module).rows;
      if (from > at) pieces.push(zerosOf(from - at));
      let input = x;
      if (options.dropout && s.mask) {
        // The run covers tokens [rows.start, rows.start + rows.count) of the sequence's mask.
        const mask = g.op('Slice', [declared.get(s.mask)!, g.ints([rows.start]), g.ints([rows.start + rows.count]), g.ints([0])]);
        input = g.op('Where', [mask, g.op('Mul', [x, scalar(g, keep)]), scalar(g, 0)]);
      }
      const low = g.op('Gemm', [input, factor(g, s.a)], { transB: 1 }); // [T, r]
      pieces.push(g.op('Gemm', [low, factor(g, s.b)], { transB: 1, alpha: { float: scale } })); // [T, out]
      at = to;
    }
    if (at < width) pieces.push(zerosOf(width - at));
    const delta = pieces.length === 1 ? pieces[0] : g.op('Concat', pieces, { axis: 1 });
    return g.op('Add', [y, delta]);
  };
  return { slots, declare, hook };
}

function totalRows(config: ModelConfig, name: ProjectionName): number {
  const { hiddenSize: C, numHeads: H, numKvHeads: Hk, headDim: d, intermediateSize: I } = config;
  return name === 'qkv' ? (H + 2 * Hk) * d : name === 'gate_up' ? 2 * I : C;
}

/** PEFT's initialization: A uniform in ±1/√in (kaiming-uniform with a = √5), B zero. */
export function initLora(slot: LoraSlot, r: number, random: () => number): { a: Float32Array; b: Float32Array } {
  const bound = 1 / Math.sqrt(slot.inFeatures);
  const a = Float32Array.from({ length: r * slot.inFeatures }, () => (random() * 2 - 1) * bound);
  return { a, b: new Float32Array(slot.outFeatures * r) };
}
