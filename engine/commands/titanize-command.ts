// titan titanize
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { HEAD_CHOICES, resolveQuantization, type HeadQuantization, type PackageQuantization } from '../titanize/int4';
import type { PackageDType } from '../titanize/package';
import { DEFAULT_MAG_WEIGHT, OPERATOR_MODES, type Semantics, type TpttSettingsInput } from '../titanize/settings';
import { titanize } from '../titanize/titanize';
import { adapterTrainedSettings, withTrainedSettings, type TrainedSettingKey } from '../titanize/adapter';
import { choice, flag, int, noExtraPositionals, num, positional, str } from './args';
import { UsageError, type Command, type CommandContext } from './types';

/** Reads the conversion settings from the command line (validated later, all at once). */
export function settingsFromArgs(ctx: CommandContext): TpttSettingsInput {
  const input: TpttSettingsInput = {};
  const mode = str(ctx, 'operator');
  if (mode !== undefined) input.operator_mode = mode;
  if (str(ctx, 'mag-weight') !== undefined) input.mag_weight = num(ctx, 'mag-weight', DEFAULT_MAG_WEIGHT);
  if (flag(ctx, 'cross-gate')) input.cross_gate = true;
  if (flag(ctx, 'base-scale-attn')) input.base_scale_attn = true;
  if (str(ctx, 'window') !== undefined) input.max_self_attn_length = int(ctx, 'window', 0, -Infinity);
  if (str(ctx, 'chunk') !== undefined) input.max_chunk_size = int(ctx, 'chunk', 0, -Infinity);
  input.semantics = choice<Semantics>(ctx, 'semantics', ['exact', 'tptt-0.12'], 'exact');
  const rc = str(ctx, 'recurrent-config');
  if (rc !== undefined) {
    try {
      input.recurrent_config = JSON.parse(rc);
    } catch {
      throw new UsageError(`--recurrent-config must be JSON like '{"order":2,"alpha_gate":"c","beta_gate":"k","linear":true,"trick":"dt"}'`);
    }
  }
  return input;
}

/** The quantization options of `titan convert` and `titan titanize`. */
export const quantizeOptions = {
  quantize: { type: 'string', help: 'int4: projection weights as 4-bit blocks run by MatMulNBits (any provider; compute stays in --dtype), the vocabulary projection as --quant-head says' },
  'quant-block': { type: 'string', help: 'int4 block size along the input axis: 16 (default), 32, 64, 128 or 256' },
  'quant-symmetric': { type: 'boolean', help: 'int4 with a scale per block only (default: scale and zero point)' },
  'quant-head': { type: 'string', help: 'the vocabulary projection: int8 blocks (default), int4 (fastest, ~1 point more perplexity on code-llama-19m) or keep (the package dtype)' },
  'quant-accuracy': { type: 'string', help: 'MatMulNBits accuracy_level: 4 (default: activations to int8 per block), 1 or 0 (fp32 activations)' },
} as const;

/** Reads --quantize and its companions; null when the package is not quantized. */
export function quantizationFromArgs(ctx: CommandContext): PackageQuantization | null {
  const method = str(ctx, 'quantize');
  if (method === undefined) {
    const stray = ['quant-block', 'quant-symmetric', 'quant-head', 'quant-accuracy'].find((k) => ctx.values[k] !== undefined && ctx.values[k] !== false);
    if (stray) throw new UsageError(`--${stray} needs --quantize int4`);
    return null;
  }
  if (method !== 'int4') throw new UsageError(`--quantize must be int4, got "${method}"`);
  const input: Partial<PackageQuantization> = { method };
  if (str(ctx, 'quant-block') !== undefined) input.blockSize = int(ctx, 'quant-block', 0, 0);
  if (str(ctx, 'quant-accuracy') !== undefined) input.accuracyLevel = int(ctx, 'quant-accuracy', 0, 0);
  if (flag(ctx, 'quant-symmetric')) input.symmetric = true;
  if (str(ctx, 'quant-head') !== undefined) input.head = choice<HeadQuantization>(ctx, 'quant-head', HEAD_CHOICES, 'int8');
  try {
    return resolveQuantization(input);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** "int4 (block 32, asymmetric, head)" for the one-line summaries. */
export function quantizationLabel(q: PackageQuantization | null): string {
  return q ? `, int4 weights (block ${q.blockSize}, ${q.symmetric ? 'symmetric' : 'asymmetric'}, head ${q.head}, accuracy ${q.accuracyLevel})` : '';
}

/** The option that sets each TPTT setting, for messages. */
const CLI_OPTION_OF: Record<TrainedSettingKey, string> = {
  operator_mode: '--operator',
  recurrent_config: '--recurrent-config',
  mag_weight: '--mag-weight',
  cross_gate: '--cross-gate',
  base_scale_attn: '--base-scale-attn',
  max_self_attn_length: '--window',
  max_chunk_size: '--chunk',
  semantics: '--semantics',
};

export const titanizeCommand: Command = {
  name: 'titanize',
  usage: 'titanize <hf-dir> --out <dir> [--operator MODE] [--mag-weight μ] [--cross-gate] [--base-scale-attn] [--window W] [--chunk C] [--semantics exact|tptt-0.12] [--run-tokens N] [--adapter DIR] [--dtype fp32|fp16] [--quantize int4 [--quant-block B] [--quant-symmetric] [--quant-head int8|int4|keep] [--quant-accuracy 0|1|4]] [--json]',
  summary: 'Convert a Hugging Face checkpoint into a Titan package: LiZA linear attention + Memory-as-Gate in every layer.',
  options: {
    out: { type: 'string', help: 'package folder to write' },
    operator: { type: 'string', help: `operator_mode: ${OPERATOR_MODES.join(', ')} (default delta_rule)` },
    'recurrent-config': { type: 'string', help: 'explicit recurrent_config JSON (order, alpha_gate, beta_gate, linear, trick)' },
    'mag-weight': { type: 'string', help: `Memory-as-Gate weight μ of the linear branch, in [0, 1] (default ${DEFAULT_MAG_WEIGHT}; the reference's 0.5 needs alignment first)` },
    'cross-gate': { type: 'boolean', help: 'add the product of the two weighted branches' },
    'base-scale-attn': { type: 'boolean', help: 'scale the linear output by the RMS of the softmax output' },
    window: { type: 'string', help: 'softmax window W in tokens (max_self_attn_length; default unbounded)' },
    chunk: { type: 'string', help: 'max_chunk_size C: tokens per chunk of the linear branch (default 64)' },
    semantics: { type: 'string', help: 'exact (default: a true recurrence) or tptt-0.12 (the reference library, quirks included)' },
    'run-tokens': { type: 'string', help: 'tokens per graph run (default 512, the fastest measured on the H200; longer runs cost more activation memory); exact-semantics delta rule / delta product packages' },
    adapter: { type: 'string', help: 'merge a TPTT/PEFT LoRA adapter folder into the projections; the TPTT settings its config.json records (titan align writes them) are used where no option is given' },
    dtype: { type: 'string', help: 'weight precision: fp32 (default) or fp16' },
    ...quantizeOptions,
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  async run(ctx) {
    const source = positional(ctx, 0, '<hf-dir>');
    noExtraPositionals(ctx, 1);
    const out = str(ctx, 'out');
    if (!out) throw new UsageError('missing --out <dir>');
    const dtype = choice<PackageDType>(ctx, 'dtype', ['fp32', 'fp16'], 'fp32');
    const quantization = quantizationFromArgs(ctx);
    const input = settingsFromArgs(ctx);
    const runTokens = str(ctx, 'run-tokens') === undefined ? undefined : int(ctx, 'run-tokens', 0, 1);
    const adapterDir = str(ctx, 'adapter');
    let transformTensor: ((name: string, data: Float32Array, shape: number[]) => Float32Array) | undefined;
    let adapterInfo: Record<string, unknown> | undefined;
    let adapterIdentity: { sha256: string } | undefined;
    if (adapterDir !== undefined) {
      if (!fs.existsSync(adapterDir)) throw new ModelError(`adapter folder ${adapterDir} does not exist`);
      const { loadLoraAdapter } = await import('../titanize/adapter');
      const adapter = loadLoraAdapter(adapterDir, source);
      transformTensor = adapter.transformTensor;
      adapterInfo = adapter.summary;
      input.lora_config = adapter.loraConfig;
      adapterIdentity = { sha256: adapter.sha256 };
      // The TPTT settings the adapter was trained under (titan align records them) fill what the
      // command line leaves out; a contradicting option is refused rather than silently obeyed.
      const trained = adapterTrainedSettings(adapterDir);
      if (trained) {
        if (str(ctx, 'semantics') === undefined) delete input.semantics;
        const given = (key: TrainedSettingKey) => (key === 'semantics' ? str(ctx, 'semantics') !== undefined : input[key] !== undefined);
        const merged = withTrainedSettings(input, trained, given);
        const refused = merged.conflicts.map((c) => `${CLI_OPTION_OF[c.key]} ${c.given} contradicts the adapter, trained with ${c.key} ${c.trained} (${c.file}); leave ${CLI_OPTION_OF[c.key]} out to use the adapter's, or pass ${c.trained}`);
        if (refused.length) throw new UsageError(refused.join('; '));
        Object.assign(input, merged.input);
      }
    }
    const t0 = performance.now();
    const { pkg, settings } = titanize(source, out, input, { dtype, quantization, transformTensor, adapter: adapterIdentity, runTokens });
    const seconds = (performance.now() - t0) / 1000;
    const bytes = fs.statSync(path.join(pkg.dir, 'weights.bin')).size;
    const runLength = pkg.manifest.runCapacity ?? settings.max_chunk_size;
    if (flag(ctx, 'json')) process.stdout.write(JSON.stringify({ package: pkg.dir, kind: 'titan', dtype, quantization, tptt: settings, runTokens: runLength, adapter: adapterInfo ?? null, weightsBytes: bytes, seconds }) + '\n');
    else process.stdout.write(`wrote ${pkg.dir} (Titan ${settings.operator_mode}, μ ${settings.mag_weight}, window ${settings.max_self_attn_length ?? 'unbounded'}, chunk ${settings.max_chunk_size}, runs of ${runLength} tokens, ${settings.semantics}, ${dtype}${quantizationLabel(quantization)}) in ${seconds.toFixed(1)} s\n`);
  },
};
