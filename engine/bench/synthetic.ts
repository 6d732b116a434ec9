// Synthetic checkpoints with a real model's shapes and random weights, for speed measurements where
// the real weights cannot be had (the GPU machine has no network) and are not needed (speed does not
// depend on the values). Written streamed, one block of rows at a time, so a 1B-parameter model never
// sits in memory whole.
//
// The tokenizer is a byte-level BPE with the 256 byte tokens and no merges plus the model's special
// tokens at their real ids: any text encodes (one token per byte), and ids stay inside the vocabulary.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { floatToBfloat16, writeShardedSafetensors, type TensorSource } from '../model/safetensors-writer';
import { seededRandom } from '../util/random';

export interface SyntheticShape {
  /** What it imitates, for the README and the report. */
  imitates: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  tieWordEmbeddings: boolean;
  ropeTheta: number;
  ropeScaling: Record<string, unknown> | null;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenId: number;
}

export const SYNTHETIC_SHAPES: Record<string, SyntheticShape> = {
  'llama-1b': {
    imitates: 'meta-llama/Llama-3.2-1B',
    hiddenSize: 2048,
    intermediateSize: 8192,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 64,
    vocabSize: 128256,
    tieWordEmbeddings: true,
    ropeTheta: 500000,
    ropeScaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    maxPositionEmbeddings: 131072,
    bosTokenId: 128000,
    eosTokenId: 128001,
  },
  // The same family scaled down, for tests of the generator itself.
  'llama-tiny': {
    imitates: 'a 2-layer Llama-3-style model (generator tests)',
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 512,
    tieWordEmbeddings: true,
    ropeTheta: 500000,
    ropeScaling: null,
    maxPositionEmbeddings: 4096,
    bosTokenId: 500,
    eosTokenId: 501,
  },
};

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** bf16 bytes of a [rows, cols] tensor, uniform with standard deviation `std` (or all ones), in blocks of rows. */
function* randomBf16(name: string, rows: number, cols: number, std: number | 'ones', seed: number): Generator<Uint8Array> {
  const random = seededRandom(hashName(name) ^ seed);
  const amp = std === 'ones' ? 0 : std * Math.sqrt(3);
  const one = floatToBfloat16(1);
  const blockRows = Math.max(1, Math.floor((8 << 20) / (2 * cols)));
  for (let r = 0; r < rows; r += blockRows) {
    const n = Math.min(blockRows, rows - r) * cols;
    const bits = new Uint16Array(n);
    if (std === 'ones') bits.fill(one);
    else for (let i = 0; i < n; i++) bits[i] = floatToBfloat16((2 * random() - 1) * amp);
    yield new Uint8Array(bits.buffer);
  }
}

/** GPT-2's byte → printable character map, which byte-level BPE vocabularies are written in. */
function bytesToUnicode(): string[] {
  const printable = new Set<number>();
  for (let b = 33; b <= 126; b++) printable.add(b);
  for (let b = 161; b <= 172; b++) printable.add(b);
  for (let b = 174; b <= 255; b++) printable.add(b);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable.has(b) ? b : 256 + extra++));
}

/** The byte-level tokenizer of a synthetic checkpoint: 256 byte tokens, the shape's special tokens at their real ids. */
export function writeByteTokenizer(dir: string, shape: SyntheticShape): void {
  const vocab = Object.fromEntries(bytesToUnicode().map((ch, i) => [ch, i]));
  const specials = [
    { id: shape.bosTokenId, content: '<|begin_of_text|>' },
    { id: shape.eosTokenId, content: '<|end_of_text|>' },
  ];
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((s) => ({ ...s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: { type: 'ByteLevel', ...byteLevel, trim_offsets: false },
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [] },
  };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer) + '\n');
  const config = {
    add_bos_token: false,
    added_tokens_decoder: Object.fromEntries(specials.map((s) => [String(s.id), { content: s.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }])),
    bos_token: '<|begin_of_text|>',
    eos_token: '<|end_of_text|>',
    clean_up_tokenization_spaces: false,
    model_max_length: shape.maxPositionEmbeddings,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
}

/** Parameters of a checkpoint of this shape (Llama layout: no biases; norms included). */
export function parameterCount(shape: SyntheticShape): number {
  const { hiddenSize: C, intermediateSize: I, numLayers: L, numHeads: H, numKvHeads: Hk, headDim: d, vocabSize: V } = shape;
  const layer = 2 * C * H * d + 2 * C * Hk * d + 3 * C * I + 2 * C;
  return V * C * (shape.tieWordEmbeddings ? 1 : 2) + L * layer + C;
}

export interface SyntheticCheckpoint {
  dir: string;
  shape: string;
  parameters: number;
  bytes: number;
  seconds: number;
}

/** Writes a random-weight Hugging Face checkpoint (bf16, sharded) of the named shape into `dir`. */
export async function writeSyntheticCheckpoint(dir: string, shapeName: string, options: { seed?: number } = {}): Promise<SyntheticCheckpoint> {
  const shape = SYNTHETIC_SHAPES[shapeName];
  if (!shape) throw new ModelError(`unknown synthetic shape "${shapeName}" (one of ${Object.keys(SYNTHETIC_SHAPES).join(', ')})`);
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0 && !fs.existsSync(path.join(dir, 'config.json'))) {
    throw new ModelError(`${dir} exists and is not a checkpoint folder; choose an empty or new folder`);
  }
  const t0 = performance.now();
  const seed = options.seed ?? 0;
  const { hiddenSize: C, intermediateSize: I, numLayers: L, numHeads: H, numKvHeads: Hk, headDim: d, vocabSize: V } = shape;
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0,
    bos_token_id: shape.bosTokenId,
    eos_token_id: shape.eosTokenId,
    head_dim: d,
    hidden_act: 'silu',
    hidden_size: C,
    initializer_range: 0.02,
    intermediate_size: I,
    max_position_embeddings: shape.maxPositionEmbeddings,
    mlp_bias: false,
    num_attention_heads: H,
    num_hidden_layers: L,
    num_key_value_heads: Hk,
    rms_norm_eps: 1e-5,
    rope_scaling: shape.ropeScaling,
    rope_theta: shape.ropeTheta,
    tie_word_embeddings: shape.tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    use_cache: true,
    vocab_size: V,
    titan_synthetic: { imitates: shape.imitates, weights: 'random (uniform, std 0.02; norms 1)', seed },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: shape.bosTokenId, eos_token_id: shape.eosTokenId }, null, 2) + '\n');
  writeByteTokenizer(dir, shape);

  const tensors: TensorSource[] = [];
  const matrix = (name: string, rows: number, cols: number) => tensors.push({ name, dtype: 'BF16', shape: [rows, cols], data: () => ({ chunks: randomBf16(name, rows, cols, 0.02, seed) }) });
  const norm = (name: string) => tensors.push({ name, dtype: 'BF16', shape: [C], data: () => ({ chunks: randomBf16(name, 1, C, 'ones', seed) }) });
  matrix('model.embed_tokens.weight', V, C);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}.`;
    norm(p + 'input_layernorm.weight');
    matrix(p + 'self_attn.q_proj.weight', H * d, C);
    matrix(p + 'self_attn.k_proj.weight', Hk * d, C);
    matrix(p + 'self_attn.v_proj.weight', Hk * d, C);
    matrix(p + 'self_attn.o_proj.weight', C, H * d);
    norm(p + 'post_attention_layernorm.weight');
    matrix(p + 'mlp.gate_proj.weight', I, C);
    matrix(p + 'mlp.up_proj.weight', I, C);
    matrix(p + 'mlp.down_proj.weight', C, I);
  }
  norm('model.norm.weight');
  if (!shape.tieWordEmbeddings) matrix('lm_head.weight', V, C);
  const parameters = tensors.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  const shardCount = Math.max(1, Math.ceil((parameters * 2) / 2e9));
  const written = await writeShardedSafetensors(dir, tensors, { shardCount, metadata: { format: 'pt' }, indexMetadata: { total_parameters: parameters } });
  return { dir: path.resolve(dir), shape: shapeName, parameters, bytes: written.totalSize, seconds: (performance.now() - t0) / 1000 };
}
