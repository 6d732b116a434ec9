// What an alignment run leaves behind:
//
//   <out>/adapter/   the LoRA matrices where the reference library and PEFT look for them:
//                    adapter_model.safetensors (F32), adapter_config.json (PEFT's LoraConfig), and for
//                    Titan packages a config.json in tptt's TpttConfig form (backbone fields, TPTT settings,
//                    lora_config). Titan keys follow tptt's save_tptt_safetensors:
//                      model.model.layers.{i}.self_attn.base_attn.q_proj.lora_A.default.weight
//                    base-model keys follow PEFT's save_pretrained:
//                      base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
//                    `titan titanize <hf-dir> --adapter <out>/adapter` reads either.
//   <out>/package/   the package again with the LoRA merged (W + s·B·A in float64), written by the same
//                    conversion `titan titanize --adapter` runs, so the two give the same logits.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensorsSync } from '../model/safetensors-writer';
import { ModelError } from '../model/errors';
import { loadLoraAdapter } from '../titanize/adapter';
import { writePackage, type LoadedPackage } from '../titanize/package';
import type { TpttSettings } from '../titanize/settings';
import { titanize } from '../titanize/titanize';
import { loraScaling, shapeA, shapeB, type LoraSlot, type LoraSpec } from './lora';

export const ADAPTER_SUBDIR = 'adapter';
export const PACKAGE_SUBDIR = 'package';

/** The adapter key of one LoRA factor, in the layout the package kind's Python library loads. */
export function adapterKey(kind: 'titan' | 'base', slot: LoraSlot, factor: 'lora_A' | 'lora_B'): string {
  if (kind === 'titan') {
    const [, , , block, module] = slot.peftName.split('.');
    const attn = block === 'self_attn' ? 'self_attn.base_attn' : block;
    return `model.model.layers.${slot.layer}.${attn}.${module}.${factor}.default.weight`;
  }
  return `base_model.model.${slot.peftName}.${factor}.weight`;
}

/** PEFT's LoraConfig as save_pretrained writes it. */
export function peftConfig(spec: LoraSpec, baseModel: string): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: spec.alpha,
    lora_dropout: spec.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: spec.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...spec.targets],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: spec.rslora,
  };
}

/** tptt's TpttConfig (configuration_tptt.py, v0.12.1) for the package's settings with this LoRA. */
function tpttConfig(pkg: LoadedPackage, spec: LoraSpec, baseModel: string): Record<string, unknown> {
  const s = pkg.manifest.tptt as unknown as TpttSettings;
  return {
    ...pkg.manifest.source.config,
    model_type: 'tptt',
    architectures: ['TpttModel'],
    auto_map: { AutoModelForCausalLM: 'modeling_tptt.TpttModel', AutoConfig: 'configuration_tptt.TpttConfig' },
    base_model_name: baseModel,
    base_model_subfolder: null,
    model_task: 'causal_lm',
    target_modules_names: ['attn', 'self_attn', 'attention'],
    operator_mode: s.operator_mode,
    recurrent_config: s.recurrent_config,
    mag_weight: s.mag_weight,
    cross_gate: s.cross_gate,
    max_chunk_size: s.max_chunk_size,
    max_self_attn_length: s.max_self_attn_length,
    base_scale_attn: s.base_scale_attn,
    linear_precision: 'float32',
    lora_config: peftConfig(spec, baseModel),
    padding_side: 'right',
    bidirectional: false,
    pooling_config: null,
    // Not a TpttConfig field: which recurrence the adapter was trained under (the reference computes tptt-0.12).
    titan_semantics: s.semantics,
  };
}

export interface WrittenAdapter {
  dir: string;
  files: string[];
  keys: number;
}

/** Writes the adapter folder from the trained matrices (by graph input name). */
export function writeAdapter(out: string, pkg: LoadedPackage, spec: LoraSpec, slots: LoraSlot[], values: ReadonlyMap<string, Float32Array>): WrittenAdapter {
  const dir = path.join(out, ADAPTER_SUBDIR);
  fs.mkdirSync(dir, { recursive: true });
  const kind = pkg.manifest.kind;
  const baseModel = pkg.manifest.source.path;
  const tensors = slots.flatMap((s) => [
    { name: adapterKey(kind, s, 'lora_A'), dtype: 'F32' as const, shape: shapeA(s, spec.r), data: values.get(s.a)! },
    { name: adapterKey(kind, s, 'lora_B'), dtype: 'F32' as const, shape: shapeB(s, spec.r), data: values.get(s.b)! },
  ]);
  writeSafetensorsSync(path.join(dir, 'adapter_model.safetensors'), tensors, { metadata: { format: 'pt' } });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(peftConfig(spec, baseModel), null, 2) + '\n');
  const files = ['adapter_model.safetensors', 'adapter_config.json'];
  if (kind === 'titan') {
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(tpttConfig(pkg, spec, baseModel), null, 2) + '\n');
    files.push('config.json');
  }
  const readme = [
    '# LoRA adapter written by `titan align`',
    '',
    `Base model: ${baseModel}`,
    `Rank ${spec.r}, alpha ${spec.alpha} (scaling ${loraScaling(spec)}), targets ${spec.targets.join(', ')}.`,
    '',
    'Merge it into a Titan package with the same settings:',
    '',
    '    titan titanize <base-model> --adapter <this folder> --out <package> [the conversion options]',
    '',
    kind === 'titan'
      ? "Keys follow the tptt library's save_tptt_safetensors layout and config.json is a TpttConfig, so tptt's TpttModel.from_pretrained loads this folder (its base_model_name must point at the base model)."
      : "Keys and adapter_config.json follow PEFT's save_pretrained layout (PeftModel.from_pretrained).",
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'README.md'), readme);
  files.push('README.md');
  return { dir, files, keys: tensors.length };
}

/** Why the merged package cannot be written (its source checkpoint is gone), or null. */
export function mergeBlocker(pkg: LoadedPackage): string | null {
  const source = pkg.manifest.source.path;
  // The merged package is converted from the source with this adapter alone: an adapter merged before
  // (an aligned package aligned again) would be lost.
  if (pkg.manifest.adapter || (pkg.manifest.tptt as { lora_config?: unknown } | undefined)?.lora_config) return `${pkg.dir} already has a LoRA adapter merged, and the merged package is converted from the source checkpoint with one adapter`;
  if (!fs.existsSync(path.join(source, 'config.json'))) return `the package's source checkpoint ${source} is not there (the merged package is converted from it, with the adapter)`;
  return null;
}

/** Converts the package's source again with the adapter merged, with the package's own settings. */
export function writeMergedPackage(out: string, pkg: LoadedPackage, adapterDir: string): { dir: string; sourceChanged: boolean } {
  const blocker = mergeBlocker(pkg);
  if (blocker) throw new ModelError(`cannot write the merged package: ${blocker}`);
  const source = pkg.manifest.source.path;
  const adapter = loadLoraAdapter(adapterDir, source);
  const target = path.join(out, PACKAGE_SUBDIR);
  let written: LoadedPackage;
  if (pkg.manifest.kind === 'titan') {
    const settings = { ...(pkg.manifest.tptt as unknown as TpttSettings), lora_config: adapter.loraConfig };
    written = titanize(source, target, settings, { dtype: pkg.manifest.dtype, transformTensor: adapter.transformTensor, adapter: { sha256: adapter.sha256 } }).pkg;
  } else {
    written = writePackage(source, target, { dtype: pkg.manifest.dtype, window: pkg.manifest.window, kind: 'base', transformTensor: adapter.transformTensor, adapter: { sha256: adapter.sha256 } });
  }
  return { dir: written.dir, sourceChanged: written.manifest.source.weightsSha256 !== pkg.manifest.source.weightsSha256 };
}
