// Export of a Hugging Face checkpoint in the layout `@huggingface/transformers` (transformers.js)
// loads offline, so the bench can run the base model the way a user without Titan would.
//
//   config.json             the source config + "transformers.js_config" (external data, fp32)
//   generation_config.json  copied (or made from config.json's token ids)
//   tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja  copied
//   onnx/model.onnx         the decoder with a growing KV cache (fp16 weights: onnx/model_fp16.onnx)
//   onnx/model.onnx_data    its weights (external data, 64-byte aligned)
//
// Graph interface: the one transformers.js feeds decoder-only LLMs (Optimum's naming):
//   inputs   input_ids [B, T] int64 · attention_mask [B, P+T] int64 · position_ids [B, T] int64
//            num_logits_to_keep [] int64 (0: logits for every position; k: the last k)
//            past_key_values.{i}.key / .value [B, Hk, P, d] float32 — keys *after* RoPE, as transformers caches them
//   outputs  logits [B, K, V] float32 · present.{i}.key / .value [B, Hk, P+T, d]
// Unlike the Titan package graph (keys cached before RoPE, window-relative positions), RoPE is applied
// once per token at its absolute position, and the cache only grows: the standard full-attention design.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GraphBuilder, type DType, type ExternalTensor, type Value } from '../graph/builder';
import { add, cast, concat, dimOf, linear, matmul, mul, reshape, rmsNorm, rope, silu, slice, sub, transpose, unsqueeze } from '../graph/ops';
import type { WeightTable } from '../graph/transformer';
import { loadModelConfig, ropeInverseFrequencies, type ModelConfig } from '../model/config';
import { ModelError } from '../model/errors';
import { Checkpoint, floatToHalf } from '../model/safetensors';
import { tableLayout, type TableEntry } from '../titanize/package';

export type ExportDType = 'fp32' | 'fp16';

export interface TransformersJsExportOptions {
  /** Weight precision in the ONNX file; the math is float32 either way (default fp32). */
  dtype?: ExportDType;
  /** Called with (done, total) weight tensors written. */
  onProgress?: (done: number, total: number) => void;
}

export interface TransformersJsExport {
  dir: string;
  /** The ONNX file, relative to `dir` (onnx/model.onnx or onnx/model_fp16.onnx). */
  modelFile: string;
  /** The dtype to pass to `from_pretrained` so it picks that file. */
  dtype: ExportDType;
  weightsBytes: number;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

/** The masked-out score: the float32 minimum (as transformers), so fully masked rows stay finite. */
const MASKED = -3.4028234663852886e38;

/** Writes every weight, one at a time, into `file`; returns where each landed. */
function writeWeights(ck: Checkpoint, layout: TableEntry[], file: string, dtype: ExportDType, onProgress?: (done: number, total: number) => void): { table: WeightTable; bytes: number } {
  const table: WeightTable = {};
  const fd = fs.openSync(file, 'w');
  let offset = 0;
  try {
    layout.forEach((e, idx) => {
      const parts = e.sources.map((s) => ck.readFloat32(s));
      const shape0 = ck.info(e.sources[0]).shape;
      for (const s of e.sources.slice(1)) {
        const sh = ck.info(s).shape;
        if (sh.length !== shape0.length || sh.slice(1).some((v, j) => v !== shape0[j + 1])) throw new ModelError(`tensor ${s} has shape [${sh}], which does not stack with ${e.sources[0]} [${shape0}]`);
      }
      const rows = e.sources.reduce((a, s) => a + ck.info(s).shape[0], 0);
      const dims = [rows, ...shape0.slice(1)];
      const dt: DType = dtype === 'fp16' && !e.keepFloat32 ? 'float16' : 'float32';
      const count = parts.reduce((a, p) => a + p.length, 0);
      const buf = Buffer.allocUnsafe(dt === 'float32' ? count * 4 : count * 2);
      let at = 0;
      for (const p of parts) {
        if (dt === 'float32') at += Buffer.from(p.buffer, p.byteOffset, p.byteLength).copy(buf, at);
        else for (let j = 0; j < p.length; j++, at += 2) buf.writeUInt16LE(floatToHalf(p[j]), at);
      }
      const pad = (64 - (offset % 64)) % 64;
      if (pad) fs.writeSync(fd, Buffer.alloc(pad), 0, pad, offset);
      offset += pad;
      fs.writeSync(fd, buf, 0, buf.length, offset);
      table[e.name] = { dtype: dt, dims, offset, length: buf.length } satisfies ExternalTensor;
      offset += buf.length;
      onProgress?.(idx + 1, layout.length);
    });
  } finally {
    fs.closeSync(fd);
  }
  return { table, bytes: offset };
}

/** Builds the transformers.js decoder graph (interface in the header comment) into `g`. */
export function buildTransformersJsGraph(g: GraphBuilder, config: ModelConfig, weights: WeightTable): void {
  const { numHeads: H, numKvHeads: Hk, headDim: d, numLayers: L, hiddenSize: C, vocabSize: V } = config;
  const G = H / Hk;
  const w = (name: string): Value => {
    const t = weights[name];
    if (!t) throw new Error(`weight table has no ${name}`);
    const v = g.weight(name, t);
    return t.dtype === 'float16' ? cast(g, v, 'float32') : v;
  };
  const opt = (name: string): Value | null => (weights[name] ? w(name) : null);

  const inputIds = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const attentionMask = g.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
  const positionIds = g.input('position_ids', 'int64', ['batch_size', 'sequence_length']);
  const keep = g.input('num_logits_to_keep', 'int64', []);
  const past = Array.from({ length: L }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, 'float32', ['batch_size', Hk, 'past_sequence_length', d]),
    value: g.input(`past_key_values.${i}.value`, 'float32', ['batch_size', Hk, 'past_sequence_length', d]),
  }));

  const B = dimOf(g, inputIds, 0); // [1]
  const T = dimOf(g, inputIds, 1); // [1]
  const P = dimOf(g, past[0].key, 2); // [1]
  const S = add(g, P, T); // [1]

  // RoPE angles of the new tokens at their absolute positions: [N, 1, d/2] with N = B·T.
  const invFreq = g.constant('float32', [1, d / 2], Float32Array.from(ropeInverseFrequencies(config.rope, d)));
  const angles = mul(g, reshape(g, cast(g, positionIds, 'float32'), [-1, 1]), invFreq); // [N, d/2]
  const cos = unsqueeze(g, g.op('Cos', [angles]), [1]);
  const sin = unsqueeze(g, g.op('Sin', [angles]), [1]);

  // Mask [B, 1, 1, T, S]: the query at cache index P+t sees key j when j ≤ P+t, the key is not
  // padding, and (sliding-window models) P+t − j < window.
  const rangeOf = (start: Value, len: Value) => g.op('Range', [g.op('Squeeze', [start, g.ints([0])]), g.op('Squeeze', [add(g, start, len), g.ints([0])]), g.int(1)]);
  const queryPos = unsqueeze(g, rangeOf(P, T), [1]); // [T, 1]
  const keyPos = unsqueeze(g, rangeOf(g.ints([0]), S), [0]); // [1, S]
  let allowed = g.op('LessOrEqual', [keyPos, queryPos]); // [T, S]
  if (config.slidingWindow !== null) allowed = g.op('And', [allowed, g.op('Less', [sub(g, queryPos, keyPos), g.int(config.slidingWindow)])]);
  const notPadding = unsqueeze(g, cast(g, attentionMask, 'bool'), [1, 2, 3]); // [B, 1, 1, 1, S]
  const mask = g.op('Where', [g.op('And', [allowed, notPadding]), g.float(0), g.float(MASKED)]); // [B, 1, 1, T, S]

  // Shapes that depend on B and T.
  const shape = (...parts: (Value | number)[]) => concat(g, parts.map((p) => (typeof p === 'number' ? g.ints([p]) : p)), 0);
  const byHeads = (heads: number) => shape(B, T, heads, d); // [B, T, heads, d]

  let x = reshape(g, g.op('Gather', [w('embed'), inputIds], { axis: 0 }), [-1, C]); // [N, C]
  for (let i = 0; i < L; i++) {
    g.within(`layers.${i}`, () => {
      const p = `layers.${i}.`;
      // ── attention ──
      const attnIn = config.normPlacement === 'pre' ? rmsNorm(g, x, w(p + 'attn_norm'), config.rmsNormEps) : x;
      const qkv = linear(g, attnIn, w(p + 'qkv'), opt(p + 'qkv_bias')); // [N, (H+2Hk)·d]
      const [qRaw, kRaw, v] = g.op('Split', [qkv, g.ints([H * d, Hk * d, Hk * d])], { axis: 1 }, 3);
      let q = qRaw;
      let k = kRaw;
      if (config.qkNorm === 'full') {
        q = rmsNorm(g, q, w(p + 'q_norm'), config.rmsNormEps);
        k = rmsNorm(g, k, w(p + 'k_norm'), config.rmsNormEps);
      }
      q = reshape(g, q, [-1, H, d]); // [N, H, d]
      k = reshape(g, k, [-1, Hk, d]); // [N, Hk, d]
      if (config.qkNorm === 'per-head') {
        q = rmsNorm(g, q, w(p + 'q_norm'), config.rmsNormEps);
        k = rmsNorm(g, k, w(p + 'k_norm'), config.rmsNormEps);
      }
      const qRot = g.op('Reshape', [rope(g, q, cos, sin, d), byHeads(H)]); // [B, T, H, d]
      const kRot = transpose(g, g.op('Reshape', [rope(g, k, cos, sin, d), byHeads(Hk)]), [0, 2, 1, 3]); // [B, Hk, T, d]
      const vNew = transpose(g, g.op('Reshape', [v, byHeads(Hk)]), [0, 2, 1, 3]); // [B, Hk, T, d]
      const keys = concat(g, [past[i].key, kRot], 2); // [B, Hk, S, d]
      const values = concat(g, [past[i].value, vNew], 2);
      g.output(keys, `present.${i}.key`, 'float32', ['batch_size', Hk, 'total_sequence_length', d]);
      g.output(values, `present.${i}.value`, 'float32', ['batch_size', Hk, 'total_sequence_length', d]);

      // GQA without copies: queries [B, Hk, G, T, d] against keys [B, Hk, 1, S, d].
      const qg = transpose(g, g.op('Reshape', [qRot, shape(B, T, Hk, G, d)]), [0, 2, 3, 1, 4]); // [B, Hk, G, T, d]
      const kT = unsqueeze(g, transpose(g, keys, [0, 1, 3, 2]), [2]); // [B, Hk, 1, d, S]
      const scores = add(g, mul(g, matmul(g, qg, kT), g.float(1 / Math.sqrt(d))), mask); // [B, Hk, G, T, S]
      const probs = g.op('Softmax', [scores], { axis: -1 });
      const ctx = matmul(g, probs, unsqueeze(g, values, [2])); // [B, Hk, G, T, d]
      const heads = reshape(g, transpose(g, ctx, [0, 3, 1, 2, 4]), [-1, H * d]); // [N, H·d]
      let attnOut = linear(g, heads, w(p + 'o'), opt(p + 'o_bias')); // [N, C]
      if (config.normPlacement === 'post') attnOut = rmsNorm(g, attnOut, w(p + 'post_attn_norm'), config.rmsNormEps);
      x = add(g, x, attnOut);

      // ── MLP (SwiGLU) ──
      const mlpIn = config.normPlacement === 'pre' ? rmsNorm(g, x, w(p + 'mlp_norm'), config.rmsNormEps) : x;
      const gateUp = linear(g, mlpIn, w(p + 'gate_up'), opt(p + 'gate_up_bias')); // [N, 2·I]
      const [gate, up] = g.op('Split', [gateUp, g.ints([config.intermediateSize, config.intermediateSize])], { axis: 1 }, 2);
      let mlpOut = linear(g, mul(g, silu(g, gate), up), w(p + 'down'), opt(p + 'down_bias')); // [N, C]
      if (config.normPlacement === 'post') mlpOut = rmsNorm(g, mlpOut, w(p + 'post_mlp_norm'), config.rmsNormEps);
      x = add(g, x, mlpOut);
    });
  }

  // Only the last K positions go through the vocabulary projection (K = T when num_logits_to_keep is 0).
  const keepV = reshape(g, keep, [1]);
  const K = g.op('Where', [g.op('Equal', [keepV, g.ints([0])]), T, g.op('Min', [keepV, T])]); // [1]
  const kept = slice(g, g.op('Reshape', [x, shape(B, T, C)]), sub(g, T, K), T, [1]); // [B, K, C]
  const normed = reshape(g, rmsNorm(g, kept, w('final_norm'), config.rmsNormEps), [-1, C]); // [B·K, C]
  const logits = g.op('Reshape', [linear(g, normed, w(weights.lm_head ? 'lm_head' : 'embed')), shape(B, K, V)]); // [B, K, V]
  g.output(logits, 'logits', 'float32', ['batch_size', 'sequence_length', V]);
}

/**
 * Writes the transformers.js layout of the checkpoint in `sourceDir` to `outDir` (replaced if it is a
 * previous export; refused if it is some other non-empty folder).
 */
export function exportTransformersJs(sourceDir: string, outDir: string, options: TransformersJsExportOptions = {}): TransformersJsExport {
  const source = path.resolve(sourceDir);
  if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new ModelError(`${sourceDir} is not a folder`);
  const config = loadModelConfig(source);
  if (!fs.existsSync(path.join(source, 'tokenizer.json'))) throw new ModelError(`tokenizer.json is missing from ${source}; the model folder needs its Hugging Face tokenizer files`);
  const dtype = options.dtype ?? 'fp32';
  const modelFile = dtype === 'fp16' ? 'model_fp16.onnx' : 'model.onnx';
  const target = path.resolve(outDir);
  if (fs.existsSync(target) && fs.readdirSync(target).length > 0 && !fs.existsSync(path.join(target, 'onnx'))) {
    throw new ModelError(`${target} exists and is not a transformers.js export; choose an empty or new folder`);
  }
  const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
  fs.mkdirSync(path.join(tmp, 'onnx'), { recursive: true });
  const ck = Checkpoint.openSync(source);
  try {
    const layout = tableLayout(config, ck);
    const { table, bytes } = writeWeights(ck, layout, path.join(tmp, 'onnx', `${modelFile}_data`), dtype, options.onProgress);
    const g = new GraphBuilder('transformers-js-decoder', `${modelFile}_data`);
    buildTransformersJsGraph(g, config, table);
    fs.writeFileSync(path.join(tmp, 'onnx', modelFile), g.toBytes({ 'titan.kind': 'transformers-js' }));

    // transformers.js reads "transformers.js_config" for the dtype to pick and whether weights are external.
    const raw = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8')) as Record<string, unknown>;
    raw['transformers.js_config'] = { dtype, use_external_data_format: { [modelFile]: 1 } };
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(raw, null, 2) + '\n');
    if (fs.existsSync(path.join(source, 'generation_config.json'))) fs.copyFileSync(path.join(source, 'generation_config.json'), path.join(tmp, 'generation_config.json'));
    else {
      const gen = { bos_token_id: config.bosTokenId, eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds, pad_token_id: config.padTokenId };
      fs.writeFileSync(path.join(tmp, 'generation_config.json'), JSON.stringify(gen, null, 2) + '\n');
    }
    for (const f of TOKENIZER_FILES) if (fs.existsSync(path.join(source, f))) fs.copyFileSync(path.join(source, f), path.join(tmp, f));

    fs.rmSync(target, { recursive: true, force: true });
    fs.renameSync(tmp, target);
    return { dir: target, modelFile: `onnx/${modelFile}`, dtype, weightsBytes: bytes };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    ck.close();
  }
}
