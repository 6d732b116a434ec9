// The model package: a self-contained folder the engine runs from.
//
//   titan-package.json   manifest: format version, source config + weights hash, dtype, TPTT settings, weight table
//   weights.bin          every tensor, aligned, in the package dtype (norm weights stay float32)
//   decoder.onnx         the forward graph (weights external, in weights.bin)
//   config.json, tokenizer.json, tokenizer_config.json, generation_config.json, chat_template.jinja (copied)
//
// Writing goes to a temporary sibling folder renamed into place at the end, so an interrupted
// conversion never leaves a half-written package under the requested name.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GraphBuilder, type DType, type ExternalTensor } from '../graph/builder';
import { buildDecoderGraph, int4Names, type AttentionExtension, type WeightTable, type WindowLayout } from '../graph/transformer';
import { loadModelConfig, parseModelConfig, readJsonFile, type ModelConfig } from '../model/config';
import { ModelError } from '../model/errors';
import { Checkpoint, floatToHalf } from '../model/safetensors';
import { quantizeInt4, type PackageQuantization } from './int4';

export type { PackageQuantization } from './int4';

export const PACKAGE_FORMAT = 'titan-package';
export const PACKAGE_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'titan-package.json';

export type PackageDType = 'fp32' | 'fp16';


export interface PackageManifest {
  format: typeof PACKAGE_FORMAT;
  formatVersion: number;
  kind: 'base' | 'titan';
  createdAt: string;
  source: { path: string; modelType: string; weightsSha256: string; config: Record<string, unknown> };
  dtype: PackageDType;
  /** Present when projection weights are stored as 4-bit blocks. */
  quantization?: PackageQuantization;
  /** Softmax window (max_self_attn_length); null = unbounded. */
  window: number | null;
  /** How the inference graphs carry a bounded window (DecoderGraphOptions.windowLayout); absent: sliding. */
  windowLayout?: WindowLayout;
  /** TPTT settings for Titan packages, under the reference library's field names. */
  tptt?: Record<string, unknown>;
  /** The LoRA adapter merged at conversion: its content hash (adapter.ts), part of the package's identity. */
  adapter?: { sha256: string };
  weights: { file: string; tensors: WeightTable };
  /** decoder: any run length; step: one token (decode), when the package has a faster graph for it. */
  graphs: { decoder: string; step?: string; decoderFp16?: string; stepFp16?: string };
  /** Most real tokens one decoder run takes (the runtime cuts longer calls); absent = unlimited. */
  runCapacity?: number;
  tokenizerFiles: string[];
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'chat_template.jinja', 'special_tokens_map.json'];

export interface LoadedPackage {
  dir: string;
  manifest: PackageManifest;
  config: ModelConfig;
}

export function readPackage(dir: string): LoadedPackage {
  const manifestPath = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(manifestPath)) {
    throw new ModelError(`${dir} is not a Titan model package (no ${MANIFEST_FILE}); create one with \`titan convert <hf-dir> --out <dir>\``);
  }
  const manifest = readJsonFile(manifestPath, MANIFEST_FILE) as PackageManifest;
  if (manifest.format !== PACKAGE_FORMAT) throw new ModelError(`${MANIFEST_FILE}: not a Titan package manifest`);
  if (manifest.formatVersion !== PACKAGE_FORMAT_VERSION) {
    throw new ModelError(`${MANIFEST_FILE}: package format version ${manifest.formatVersion} is not supported by this engine (expects ${PACKAGE_FORMAT_VERSION}); convert the model again`);
  }
  for (const f of [manifest.weights.file, ...Object.values(manifest.graphs)]) {
    if (!fs.existsSync(path.join(dir, f))) throw new ModelError(`${dir}: package file ${f} is missing; convert the model again`);
  }
  return { dir, manifest, config: parseModelConfig(manifest.source.config) };
}

/** Maps one HF tensor to the package table: which source tensors, concatenated along rows. */
export interface TableEntry {
  name: string;
  sources: string[];
  /** Norm weights and biases stay float32 whatever the package dtype. */
  keepFloat32: boolean;
}

/** The weights a decoder graph reads, in file order (also used by the transformers.js exporter). */
export function tableLayout(config: ModelConfig, ck: Checkpoint): TableEntry[] {
  const entries: TableEntry[] = [];
  const need = (name: string): string => {
    if (!ck.has(name)) throw new ModelError(`checkpoint is missing tensor ${name} (required for ${config.modelType})`);
    return name;
  };
  const entry = (name: string, sources: string[], keepFloat32 = false) => entries.push({ name, sources: sources.map(need), keepFloat32 });
  entry('embed', ['model.embed_tokens.weight']);
  for (let i = 0; i < config.numLayers; i++) {
    const s = `model.layers.${i}.`;
    const p = `layers.${i}.`;
    const attn = ['q_proj', 'k_proj', 'v_proj'].map((n) => `${s}self_attn.${n}`);
    entry(p + 'qkv', attn.map((n) => n + '.weight'));
    if (config.qkvBias) entry(p + 'qkv_bias', attn.map((n) => n + '.bias'), true);
    entry(p + 'o', [`${s}self_attn.o_proj.weight`]);
    if (config.oBias) entry(p + 'o_bias', [`${s}self_attn.o_proj.bias`], true);
    if (config.qkNorm !== 'none') {
      entry(p + 'q_norm', [`${s}self_attn.q_norm.weight`], true);
      entry(p + 'k_norm', [`${s}self_attn.k_norm.weight`], true);
    }
    if (config.normPlacement === 'pre') {
      entry(p + 'attn_norm', [`${s}input_layernorm.weight`], true);
      entry(p + 'mlp_norm', [`${s}post_attention_layernorm.weight`], true);
    } else {
      entry(p + 'post_attn_norm', [`${s}post_attention_layernorm.weight`], true);
      entry(p + 'post_mlp_norm', [`${s}post_feedforward_layernorm.weight`], true);
    }
    entry(p + 'gate_up', [`${s}mlp.gate_proj.weight`, `${s}mlp.up_proj.weight`]);
    entry(p + 'down', [`${s}mlp.down_proj.weight`]);
    if (config.mlpBias) {
      entry(p + 'gate_up_bias', [`${s}mlp.gate_proj.bias`, `${s}mlp.up_proj.bias`], true);
      entry(p + 'down_bias', [`${s}mlp.down_proj.bias`], true);
    }
  }
  entry('final_norm', ['model.norm.weight'], true);
  if (!config.tieWordEmbeddings) {
    if (ck.has('lm_head.weight')) entry('lm_head', ['lm_head.weight']);
    else throw new ModelError('checkpoint is missing tensor lm_head.weight and config.json does not set tie_word_embeddings');
  }
  return entries;
}

/** Expected shape of each source tensor, checked before anything is written. */
function expectedShape(config: ModelConfig, name: string): number[] | null {
  const { hiddenSize: C, numHeads: H, numKvHeads: Hk, headDim: d, intermediateSize: I, vocabSize: V } = config;
  const m = /^model\.layers\.\d+\.(.+)$/.exec(name);
  const key = m ? m[1] : name;
  const table: Record<string, number[]> = {
    'model.embed_tokens.weight': [V, C],
    'lm_head.weight': [V, C],
    'model.norm.weight': [C],
    'self_attn.q_proj.weight': [H * d, C],
    'self_attn.k_proj.weight': [Hk * d, C],
    'self_attn.v_proj.weight': [Hk * d, C],
    'self_attn.q_proj.bias': [H * d],
    'self_attn.k_proj.bias': [Hk * d],
    'self_attn.v_proj.bias': [Hk * d],
    'self_attn.o_proj.weight': [C, H * d],
    'self_attn.o_proj.bias': [C],
    'self_attn.q_norm.weight': config.qkNorm === 'full' ? [H * d] : [d],
    'self_attn.k_norm.weight': config.qkNorm === 'full' ? [Hk * d] : [d],
    'input_layernorm.weight': [C],
    'post_attention_layernorm.weight': [C],
    'post_feedforward_layernorm.weight': [C],
    'mlp.gate_proj.weight': [I, C],
    'mlp.up_proj.weight': [I, C],
    'mlp.down_proj.weight': [C, I],
    'mlp.gate_proj.bias': [I],
    'mlp.up_proj.bias': [I],
    'mlp.down_proj.bias': [C],
  };
  return table[key] ?? null;
}

export interface WriteOptions {
  dtype: PackageDType;
  quantization?: PackageQuantization;
  window: number | null;
  kind: 'base' | 'titan';
  tptt?: Record<string, unknown>;
  /** Rewrites a source tensor before it is stored (LoRA merging at conversion). */
  transformTensor?: (sourceName: string, data: Float32Array, shape: number[]) => Float32Array;
  /** The adapter that transformTensor merges (recorded in the manifest). */
  adapter?: { sha256: string };
  /** The attention extension for the decoder graph and, when given, for a one-token step graph. */
  extension?: (config: ModelConfig, mode: 'segment' | 'step') => AttentionExtension;
  /** Builds step.onnx too (exact-semantics Titan packages). */
  stepGraph?: boolean;
  runCapacity?: number;
  /** Called with (done, total) tensors, and may throw to cancel. */
  onProgress?: (done: number, total: number) => void;
}

/** Hash of the source weights: every safetensors file, in name order. */
function hashWeights(ck: Checkpoint): string {
  const hash = crypto.createHash('sha256');
  const files = [...new Set(ck.names().map((n) => ck.info(n).file))].sort();
  for (const file of files) {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 22);
      let pos = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
        pos += n;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return hash.digest('hex');
}

export function writePackage(sourceDir: string, outDir: string, options: WriteOptions): LoadedPackage {
  const source = path.resolve(sourceDir);
  const config = loadModelConfig(source);
  if (!fs.existsSync(path.join(source, 'tokenizer.json'))) throw new ModelError(`tokenizer.json is missing from ${source}; the model folder needs its Hugging Face tokenizer files`);
  const ck = Checkpoint.openSync(source);
  try {
    const layout = tableLayout(config, ck);
    for (const e of layout) {
      for (const s of e.sources) {
        const want = expectedShape(config, s);
        const got = ck.info(s).shape;
        if (want && (want.length !== got.length || want.some((v, j) => v !== got[j]))) {
          throw new ModelError(`tensor ${s} has shape [${got}] but config.json implies [${want}]`);
        }
        if (!['F32', 'F16', 'BF16'].includes(ck.info(s).dtype)) throw new ModelError(`tensor ${s} has dtype ${ck.info(s).dtype}; expected F32, F16 or BF16`);
      }
    }

    const target = path.resolve(outDir);
    removeStaleSiblings(target);
    const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
    fs.mkdirSync(tmp, { recursive: true });
    try {
      const tensors: WeightTable = {};
      const fd = fs.openSync(path.join(tmp, 'weights.bin'), 'w');
      let offset = 0;
      const store = (name: string, dtype: DType, dims: number[], bytes: Uint8Array) => {
        // Page alignment lets onnxruntime map tensors from the file instead of copying them.
        const pad = (4096 - (offset % 4096)) % 4096;
        if (pad) fs.writeSync(fd, Buffer.alloc(pad), 0, pad, offset);
        offset += pad;
        fs.writeSync(fd, bytes, 0, bytes.length, offset);
        tensors[name] = { dtype, dims, offset, length: bytes.length } satisfies ExternalTensor;
        offset += bytes.length;
      };
      const q = options.quantization;
      const quantized = q ? quantizedEntries(config, q) : new Set<string>();
      // Tied embeddings: the vocabulary projection gets its own 4-bit copy (the lookup keeps the original).
      const entries = q && q.head !== 'keep' && !layout.some((e) => e.name === 'lm_head') ? [...layout, { name: 'lm_head', sources: ['model.embed_tokens.weight'], keepFloat32: false }] : layout;
      const bytesOf = (a: Float32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      try {
        entries.forEach((e, idx) => {
          const parts = e.sources.map((s) => {
            const data = ck.readFloat32(s);
            return options.transformTensor ? options.transformTensor(s, data, ck.info(s).shape) : data;
          });
          const shape0 = ck.info(e.sources[0]).shape;
          const rows = e.sources.reduce((a, s) => a + ck.info(s).shape[0], 0);
          const dims = shape0.length === 1 ? [rows] : [rows, ...shape0.slice(1)];
          const count = parts.reduce((a, p) => a + p.length, 0);
          if (quantized.has(e.name)) {
            const all = new Float32Array(count);
            parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
            // The vocabulary projection may take 8-bit blocks (--quant-head int8): it is the most sensitive matrix.
            const w4 = quantizeInt4(all, dims[0], dims[1], q!.blockSize, q!.symmetric, e.name === 'lm_head' && q!.head === 'int8' ? 8 : 4);
            const names = int4Names(e.name);
            const kBlocks = w4.scales.length / w4.N;
            store(names.codes, 'uint8', [w4.N, kBlocks, (w4.blockSize * w4.bits) / 8], w4.codes);
            store(names.scales, 'float32', [w4.N, kBlocks], bytesOf(w4.scales));
            if (w4.zeroPoints) store(names.zeroPoints, 'uint8', [w4.N, w4.zeroPoints.length / w4.N], w4.zeroPoints);
          } else {
            const dtype: DType = options.dtype === 'fp16' && !e.keepFloat32 ? 'float16' : 'float32';
            const buf = Buffer.allocUnsafe(dtype === 'float32' ? count * 4 : count * 2);
            let at = 0;
            for (const p of parts) {
              if (dtype === 'float32') {
                Buffer.from(p.buffer, p.byteOffset, p.byteLength).copy(buf, at);
                at += p.byteLength;
              } else {
                for (let j = 0; j < p.length; j++, at += 2) buf.writeUInt16LE(floatToHalf(p[j]), at);
              }
            }
            store(e.name, dtype, dims, buf);
          }
          options.onProgress?.(idx + 1, entries.length);
        });
      } finally {
        fs.closeSync(fd);
      }

      // Graphs: float32 compute (every provider) and, for fp16 packages, half-precision compute for
      // GPU providers; a one-token step graph where the extension has a faster decode path.
      const graphs: PackageManifest['graphs'] = { decoder: 'decoder.onnx' };
      const emit = (file: string, mode: 'segment' | 'step', compute: 'float32' | 'float16') => {
        const g = new GraphBuilder(`titan-${mode}-${compute}`, 'weights.bin');
        const int4 = q ? { blockSize: q.blockSize, accuracyLevel: q.accuracyLevel } : undefined;
        buildDecoderGraph(g, config, tensors, { window: options.window, extension: options.extension?.(config, mode), compute, int4, fusedOps: true, windowLayout: 'ring', oneToken: mode === 'step', matmulProjections: compute === 'float16' });
        fs.writeFileSync(path.join(tmp, file), g.toBytes({ 'titan.kind': options.kind, 'titan.compute': compute }));
      };
      emit(graphs.decoder, 'segment', 'float32');
      if (options.stepGraph && options.extension) emit((graphs.step = 'step.onnx'), 'step', 'float32');
      if (options.dtype === 'fp16') {
        emit((graphs.decoderFp16 = 'decoder-fp16.onnx'), 'segment', 'float16');
        if (graphs.step) emit((graphs.stepFp16 = 'step-fp16.onnx'), 'step', 'float16');
      }

      const tokenizerFiles: string[] = [];
      for (const f of TOKENIZER_FILES) {
        if (fs.existsSync(path.join(source, f))) {
          fs.copyFileSync(path.join(source, f), path.join(tmp, f));
          tokenizerFiles.push(f);
        }
      }
      fs.copyFileSync(path.join(source, 'config.json'), path.join(tmp, 'config.json'));
      const manifest: PackageManifest = {
        format: PACKAGE_FORMAT,
        formatVersion: PACKAGE_FORMAT_VERSION,
        kind: options.kind,
        createdAt: new Date().toISOString(),
        source: { path: source, modelType: config.modelType, weightsSha256: hashWeights(ck), config: config.raw },
        dtype: options.dtype,
        ...(q ? { quantization: q } : {}),
        window: options.window,
        // Inference graphs keep a bounded window as a ring (graph/transformer.ts); packages without
        // the field are older ones that slide it. The runtime reads the layout from the graph inputs.
        ...((options.window ?? config.slidingWindow) !== null ? { windowLayout: 'ring' as const } : {}),
        ...(options.tptt ? { tptt: options.tptt } : {}),
        ...(options.adapter ? { adapter: { sha256: options.adapter.sha256 } } : {}),
        weights: { file: 'weights.bin', tensors },
        graphs,
        ...(options.runCapacity ? { runCapacity: options.runCapacity } : {}),
        tokenizerFiles,
      };
      fs.writeFileSync(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
      // Swap into place: the old package (if any) is moved aside only once the new one is complete,
      // and deleted after the rename, so a kill at any moment leaves a whole package or none.
      let old: string | null = null;
      if (fs.existsSync(target)) {
        if (!fs.existsSync(path.join(target, MANIFEST_FILE)) && fs.readdirSync(target).length > 0) {
          throw new ModelError(`${target} exists and is not a Titan package; choose an empty or new --out folder`);
        }
        old = `${target}.old-${process.pid}-${Date.now()}`;
        fs.renameSync(target, old);
      }
      fs.renameSync(tmp, target);
      if (old) fs.rmSync(old, { recursive: true, force: true });
      return { dir: target, manifest, config };
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  } finally {
    ck.close();
  }
}

/** The table entries a quantized package stores as 4-bit blocks: every projection, and the head when asked. */
function quantizedEntries(config: ModelConfig, q: PackageQuantization): Set<string> {
  const names = new Set<string>();
  for (let i = 0; i < config.numLayers; i++) for (const p of ['qkv', 'o', 'gate_up', 'down']) names.add(`layers.${i}.${p}`);
  if (q.head !== 'keep') names.add('lm_head');
  return names;
}

/**
 * Temporary siblings (`<out>.tmp-<pid>-<time>`, `<out>.old-<pid>-<time>`) of conversions whose process
 * is gone (killed, crashed): removed before a new conversion into the same folder.
 */
function removeStaleSiblings(target: string): void {
  const dir = path.dirname(target);
  const pattern = new RegExp(`^${path.basename(target).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(?:tmp|old)-(\\d+)-\\d+$`);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!pid || pid === process.pid || processRuns(pid)) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
