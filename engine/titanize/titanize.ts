// "Titanize": convert a Hugging Face checkpoint into a Titan package — every attention layer gains
// the LiZA linear branch and Memory-as-Gate (see liza.ts), settings validated before any work starts.
import * as fs from 'node:fs';
import { loadModelConfig } from '../model/config';
import { ModelError } from '../model/errors';
import { LizaExtension, MAX_RUN_TOKENS, multiChunk, runCapacity } from './liza';
import { writePackage, type LoadedPackage, type PackageDType, type PackageQuantization } from './package';
import { resolveTpttSettings, type TpttSettings, type TpttSettingsInput } from './settings';

export interface TitanizeOptions {
  dtype?: PackageDType;
  /** Projection weights as 4-bit blocks (null/absent: the package dtype). */
  quantization?: PackageQuantization | null;
  /** Called with (done, total) weight tensors written. */
  onProgress?: (done: number, total: number) => void;
  /** Rewrites source tensors before they are stored (adapter merging). */
  transformTensor?: (sourceName: string, data: Float32Array, shape: number[]) => Float32Array;
  /** The adapter transformTensor merges (LoraAdapter.sha256), recorded in the manifest. */
  adapter?: { sha256: string };
  /** Tokens per graph run (multi-chunk packages; default DEFAULT_RUN_TOKENS). */
  runTokens?: number;
}

export function titanize(sourceDir: string, outDir: string, input: TpttSettingsInput, options: TitanizeOptions = {}): { pkg: LoadedPackage; settings: TpttSettings } {
  if (!fs.existsSync(sourceDir) || !fs.statSync(sourceDir).isDirectory()) throw new ModelError(`${sourceDir} is not a folder`);
  const config = loadModelConfig(sourceDir);
  const settings = resolveTpttSettings(input, config.headDim);
  const runTokens = options.runTokens;
  if (runTokens !== undefined) {
    if (!Number.isInteger(runTokens) || runTokens < settings.max_chunk_size || runTokens > MAX_RUN_TOKENS) {
      throw new ModelError(`the run length must be a whole number of tokens from the chunk size (${settings.max_chunk_size}) to ${MAX_RUN_TOKENS}, got ${runTokens}`);
    }
    if (!multiChunk(settings)) throw new ModelError(`a run length applies only to exact-semantics packages without per-column decay (delta_rule, delta_product, …); ${settings.operator_mode} with ${settings.semantics} semantics runs one chunk per run`);
  }
  const pkg = writePackage(sourceDir, outDir, {
    dtype: options.dtype ?? 'fp32',
    quantization: options.quantization ?? undefined,
    window: settings.max_self_attn_length,
    kind: 'titan',
    tptt: { ...settings } as unknown as Record<string, unknown>,
    extension: (cfg, mode) => new LizaExtension(cfg, settings, mode, { runTokens }),
    // The reference's semantics are per call, chunk by chunk: one graph serves every run length.
    stepGraph: settings.semantics === 'exact',
    runCapacity: runCapacity(settings, runTokens),
    transformTensor: options.transformTensor,
    adapter: options.adapter,
    onProgress: options.onProgress,
  });
  return { pkg, settings };
}
