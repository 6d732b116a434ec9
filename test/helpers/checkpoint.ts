// Random-weight Hugging Face checkpoints with the real layout of each supported architecture: the key
// names and shapes transformers' save_pretrained writes, config.json in the older or newer style,
// generation_config.json, and a small but real byte-level BPE tokenizer (or the demo model's own).
// Weights come from a seeded PRNG, per tensor name, so a test can regenerate any tensor it reads back.
//
//   const ckpt = await writeRandomCheckpoint(dir, { arch: 'qwen3', dtype: 'bfloat16', sharded: true });
//   ckpt.config        // config.json as written
//   ckpt.shapes        // tensor name → shape, in file order
//   ckpt.values(name)  // the float32 values before rounding to dtype
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../../engine/model/config';
import type { SafetensorsDType } from '../../engine/model/safetensors';
import { writeSafetensors, writeShardedSafetensors, type TensorSource } from '../../engine/model/safetensors-writer';
import { seededRandom } from '../../engine/util/random';

export type Arch = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'olmo2';
export const ARCHS: readonly Arch[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'olmo2'];
export type CheckpointDType = 'float32' | 'float16' | 'bfloat16';

export interface CheckpointOptions {
  arch: Arch;
  /** Weight dtype on disk (default float32). */
  dtype?: CheckpointDType;
  /** Split into shards + model.safetensors.index.json: true = 2 shards, or the shard count (default: single file). */
  sharded?: boolean | number;
  /** 'old': rope_theta / rope_scaling / torch_dtype (transformers 4.x); 'new': rope_parameters / dtype (5.x). Default 'old'. */
  configStyle?: 'old' | 'new';
  /** tie_word_embeddings: no lm_head.weight in the files (default false). */
  tied?: boolean;
  /** RoPE scaling (default 'default'); llama3 writes Llama 3.1's parameters. */
  rope?: 'default' | 'linear' | 'llama3';
  seed?: number;
  hiddenSize?: number; // C, default 64
  numLayers?: number; // L, default 2
  numHeads?: number; // H, default 4
  numKvHeads?: number; // H_kv, default 2
  /** d; default C/H, except qwen3 (2·C/H, as Qwen3 models whose H·d ≠ C). */
  headDim?: number;
  intermediateSize?: number; // default 2·C
  /** Model vocabulary V (default 300 with the tiny tokenizer, 16384 with code-llama-19m's); may exceed the tokenizer's. */
  vocabSize?: number;
  maxPositionEmbeddings?: number; // default 512
  /** Mistral's sliding_window (default null, as Mistral v0.2+). */
  slidingWindow?: number | null;
  /** 'tiny': a byte-level BPE trained here to fill the vocabulary; 'code-llama-19m': the demo model's real tokenizer. */
  tokenizer?: 'tiny' | 'code-llama-19m';
  /** 'inline' string in tokenizer_config.json, 'list' of named templates, 'file' chat_template.jinja, or 'none'. */
  chatTemplate?: 'inline' | 'list' | 'file' | 'none';
}

export interface GeneratedCheckpoint {
  dir: string;
  /** config.json as written. */
  config: Record<string, unknown>;
  /** Every tensor's shape, in the order written. */
  shapes: Map<string, number[]>;
  /** The tensor's values before rounding to the dtype on disk. */
  values(name: string): Float32Array;
  bosTokenId: number;
  eosTokenIds: number[];
}

const ARCHITECTURES: Record<Arch, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  olmo2: 'Olmo2ForCausalLM',
};

const SAFETENSORS_DTYPE: Record<CheckpointDType, SafetensorsDType> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/** Writes a random-weight checkpoint of `options.arch` into `dir` (created if needed). */
export async function writeRandomCheckpoint(dir: string, options: CheckpointOptions): Promise<GeneratedCheckpoint> {
  const { arch } = options;
  const dtype = options.dtype ?? 'float32';
  const seed = options.seed ?? 1;
  const C = options.hiddenSize ?? 64;
  const L = options.numLayers ?? 2;
  const H = options.numHeads ?? 4;
  const Hkv = options.numKvHeads ?? 2;
  const d = options.headDim ?? (arch === 'qwen3' ? (2 * C) / H : C / H);
  const I = options.intermediateSize ?? 2 * C;
  const tokenizerKind = options.tokenizer ?? 'tiny';
  const V = options.vocabSize ?? (tokenizerKind === 'tiny' ? 300 : 16384);
  const tied = options.tied ?? false;
  fs.mkdirSync(dir, { recursive: true });

  const tok = tokenizerKind === 'tiny' ? writeTinyTokenizer(dir, arch, V, options.chatTemplate ?? 'inline') : copyDemoTokenizer(dir, V, options.chatTemplate ?? 'inline');
  const config = buildConfig(options, { C, L, H, Hkv, d, I, V, dtype, tied, bos: tok.bos, eos: tok.eos, pad: tok.pad });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const generation: Record<string, unknown> = {
    _from_model_config: true,
    bos_token_id: tok.bos,
    eos_token_id: tok.generationEos.length === 1 ? tok.generationEos[0] : tok.generationEos,
    transformers_version: config.transformers_version,
  };
  if (tok.pad !== null) generation.pad_token_id = tok.pad;
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(generation, null, 2) + '\n');

  const layout = tensorLayout({ modelType: arch, hiddenSize: C, numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I, vocabSize: V, tieWordEmbeddings: tied });
  const shapes = new Map([...layout].map(([name, t]) => [name, t.shape]));
  const values = (name: string): Float32Array => {
    const t = layout.get(name);
    if (!t) throw new Error(`generated checkpoint has no tensor ${name}`);
    return randomValues(seed, name, t.shape.reduce((a, b) => a * b, 1), t.kind);
  };
  const tensors: TensorSource[] = [...shapes].map(([name, shape]) => ({ name, shape, dtype: SAFETENSORS_DTYPE[dtype], data: () => values(name) }));
  const metadata = { format: 'pt' };
  if (options.sharded) {
    const shardCount = options.sharded === true ? 2 : options.sharded;
    await writeShardedSafetensors(dir, tensors, { shardCount, metadata, indexMetadata: { total_parameters: [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0) } });
  } else {
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { metadata });
  }
  return { dir, config, shapes, values, bosTokenId: tok.bos, eosTokenIds: [...new Set([...tok.generationEos, tok.eos])] };
}

/** The dimensions that fix a checkpoint's tensors; a normalized ModelConfig has them all. */
export type LayoutDims = Pick<ModelConfig, 'modelType' | 'hiddenSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'vocabSize' | 'tieWordEmbeddings'>;

export type TensorKind = 'matrix' | 'norm' | 'bias';

/** Every tensor transformers saves for this architecture, in state_dict order; shapes are [out, in] as torch Linear stores them. */
export function tensorLayout(dims: LayoutDims): Map<string, { shape: number[]; kind: TensorKind }> {
  const { modelType: arch, hiddenSize: C, numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I, vocabSize: V } = dims;
  const layout = new Map<string, { shape: number[]; kind: TensorKind }>();
  const add = (name: string, shape: number[], kind: TensorKind = 'matrix'): void => {
    layout.set(name, { shape, kind });
  };
  add('model.embed_tokens.weight', [V, C]);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    add(`${p}.self_attn.q_proj.weight`, [H * d, C]);
    if (arch === 'qwen2') add(`${p}.self_attn.q_proj.bias`, [H * d], 'bias');
    add(`${p}.self_attn.k_proj.weight`, [Hkv * d, C]);
    if (arch === 'qwen2') add(`${p}.self_attn.k_proj.bias`, [Hkv * d], 'bias');
    add(`${p}.self_attn.v_proj.weight`, [Hkv * d, C]);
    if (arch === 'qwen2') add(`${p}.self_attn.v_proj.bias`, [Hkv * d], 'bias');
    add(`${p}.self_attn.o_proj.weight`, [C, H * d]);
    if (arch === 'qwen3') {
      add(`${p}.self_attn.q_norm.weight`, [d], 'norm'); // RMSNorm per head, over d
      add(`${p}.self_attn.k_norm.weight`, [d], 'norm');
    } else if (arch === 'olmo2') {
      add(`${p}.self_attn.q_norm.weight`, [H * d], 'norm'); // RMSNorm over the whole projection
      add(`${p}.self_attn.k_norm.weight`, [Hkv * d], 'norm');
    }
    add(`${p}.mlp.gate_proj.weight`, [I, C]);
    add(`${p}.mlp.up_proj.weight`, [I, C]);
    add(`${p}.mlp.down_proj.weight`, [C, I]);
    if (arch === 'olmo2') {
      // OLMo 2 norms the sublayer outputs instead of their inputs: no input_layernorm.
      add(`${p}.post_attention_layernorm.weight`, [C], 'norm');
      add(`${p}.post_feedforward_layernorm.weight`, [C], 'norm');
    } else {
      add(`${p}.input_layernorm.weight`, [C], 'norm');
      add(`${p}.post_attention_layernorm.weight`, [C], 'norm');
    }
  }
  add('model.norm.weight', [C], 'norm');
  // Tied checkpoints share the embedding: save_pretrained drops the duplicate lm_head.weight.
  if (!dims.tieWordEmbeddings) add('lm_head.weight', [V, C]);
  return layout;
}

interface Dims {
  C: number;
  L: number;
  H: number;
  Hkv: number;
  d: number;
  I: number;
  V: number;
  dtype: CheckpointDType;
  tied: boolean;
  bos: number;
  eos: number;
  pad: number | null;
}

function buildConfig(options: CheckpointOptions, dims: Dims): Record<string, unknown> {
  const { arch } = options;
  const style = options.configStyle ?? 'old';
  const theta = options.rope === 'llama3' ? 500000 : arch === 'qwen2' || arch === 'qwen3' ? 1000000 : 10000;
  const scaling: Record<string, unknown> | null =
    options.rope === 'llama3'
      ? { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }
      : options.rope === 'linear'
        ? { rope_type: 'linear', factor: 2.0 }
        : null;
  const cfg: Record<string, unknown> = {
    architectures: [ARCHITECTURES[arch]],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: dims.bos,
    eos_token_id: dims.eos,
    hidden_act: 'silu',
    hidden_size: dims.C,
    initializer_range: 0.02,
    intermediate_size: dims.I,
    max_position_embeddings: options.maxPositionEmbeddings ?? 512,
    model_type: arch,
    num_attention_heads: dims.H,
    num_hidden_layers: dims.L,
    num_key_value_heads: dims.Hkv,
    rms_norm_eps: arch === 'olmo2' ? 1e-6 : 1e-5,
    tie_word_embeddings: dims.tied,
    use_cache: true,
    vocab_size: dims.V,
  };
  if (dims.pad !== null) cfg.pad_token_id = dims.pad;
  // head_dim: Qwen3 always writes it (H·d ≠ C there), Llama since transformers 4.45, Mistral in newer configs.
  if (arch === 'qwen3' || arch === 'llama' || (arch === 'mistral' && style === 'new')) cfg.head_dim = dims.d;
  if (arch === 'llama') Object.assign(cfg, { mlp_bias: false, pretraining_tp: 1 });
  if (arch === 'mistral') cfg.sliding_window = options.slidingWindow === undefined ? null : options.slidingWindow;
  if (arch === 'qwen2' || arch === 'qwen3') Object.assign(cfg, { use_sliding_window: false, sliding_window: 4096, max_window_layers: dims.L });
  if (style === 'old') {
    Object.assign(cfg, { rope_theta: theta, rope_scaling: scaling, torch_dtype: dims.dtype, transformers_version: '4.51.3' });
  } else {
    Object.assign(cfg, { rope_parameters: { rope_type: 'default', ...scaling, rope_theta: theta }, dtype: dims.dtype, transformers_version: '5.0.0' });
  }
  return Object.fromEntries(Object.entries(cfg).sort(([a], [b]) => a.localeCompare(b)));
}

// --- weights -------------------------------------------------------------------------------------

function hashString(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0; // FNV-1a
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Values like a trained model's scale: N(0, 0.02) matrices, norms near 1, small biases. */
function randomValues(seed: number, name: string, n: number, kind: TensorKind): Float32Array {
  const rand = seededRandom(hashString(name, seed));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()); // Box-Muller
    out[i] = kind === 'norm' ? 1 + 0.1 * g : kind === 'bias' ? 0.05 * g : 0.02 * g;
  }
  return out;
}

// --- tokenizers ----------------------------------------------------------------------------------

interface WrittenTokenizer {
  bos: number;
  /** tokenizer_config.json's eos_token. */
  eos: number;
  pad: number | null;
  /** generation_config.json's eos_token_id(s). */
  generationEos: number[];
}

const CHATML = [
  "{%- for message in messages %}",
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}",
  "{{- '<|im_start|>assistant\\n' }}",
  "{%- endif %}",
].join('\n');

const CHATML_TOOLS = [
  "{%- if tools %}{{- '<|im_start|>system\\nTools: ' + (tools | tojson) + '<|im_end|>\\n' }}{%- endif %}",
  CHATML,
].join('\n');

/** A training text for the tiny tokenizer's merges: code and prose, so common pieces become tokens. */
const BPE_CORPUS = `
export function add(a: number, b: number): number {
  return a + b;
}
const result = add(1, 2);
console.log("the result is", result);
def main():
    for i in range(10):
        print(i)
if __name__ == "__main__":
    main()
The quick brown fox jumps over the lazy dog. The model reads the file and then it writes the answer.
import { readFile } from 'node:fs/promises';
async function load(path) { const text = await readFile(path, 'utf8'); return text.split('\\n'); }
`;

/** GPT-2's reversible byte → printable character map used by byte-level BPE. */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return map;
}

/** The pre-tokenizer split of ByteLevel with use_regex (GPT-2's pattern). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte-level BPE training: `count` merges, most frequent pair first, ties broken by the pair's text. */
function trainMerges(corpus: string, count: number): [string, string][] {
  const b2u = bytesToUnicode();
  const encoder = new TextEncoder();
  const words = new Map<string, { symbols: string[]; freq: number }>();
  for (const piece of corpus.match(GPT2_SPLIT) ?? []) {
    const symbols = [...encoder.encode(piece)].map((b) => b2u[b]);
    const key = symbols.join('');
    const w = words.get(key);
    if (w) w.freq++;
    else words.set(key, { symbols, freq: 1 });
  }
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, freq } of words.values()) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + freq);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [key, n] of pairs) if (n > bestCount || (n === bestCount && best !== null && key < best)) [best, bestCount] = [key, n];
    if (best === null) break;
    const [a, b] = best.split(' ');
    merges.push([a, b]);
    for (const w of words.values()) {
      const next: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(w.symbols[i]);
      }
      w.symbols = next;
    }
  }
  return merges;
}

/**
 * A valid byte-level BPE tokenizer.json (the layout of GPT-2/Qwen/Llama 3 tokenizers) of exactly
 * `vocabSize` tokens: 256 bytes, merges learned from BPE_CORPUS, then the special tokens.
 * Llama and Mistral tokenizers add BOS in their post-processor, the others add nothing.
 */
function writeTinyTokenizer(dir: string, arch: Arch, vocabSize: number, chatTemplate: NonNullable<CheckpointOptions['chatTemplate']>): WrittenTokenizer {
  const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
  const mergeCount = vocabSize - 256 - specials.length;
  if (mergeCount < 0) throw new Error(`tiny tokenizer needs vocabSize >= ${256 + specials.length}, got ${vocabSize}`);
  const merges = trainMerges(BPE_CORPUS, mergeCount);
  const vocab: Record<string, number> = {};
  for (const ch of bytesToUnicode()) vocab[ch] = Object.keys(vocab).length;
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const firstSpecial = Object.keys(vocab).length;
  const [endoftext, , imEnd] = specials.map((_, i) => firstSpecial + i);
  const addBos = arch === 'llama' || arch === 'mistral';
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({ id: firstSpecial + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: addBos
      ? {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|endoftext|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [endoftext], tokens: ['<|endoftext|>'] } },
        }
      : { type: 'ByteLevel', ...byteLevel, trim_offsets: false },
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson, null, 2) + '\n');

  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: addBos,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(
      specials.map((content, i) => [String(firstSpecial + i), { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }]),
    ),
    bos_token: '<|endoftext|>',
    clean_up_tokenization_spaces: false,
    eos_token: '<|endoftext|>',
    model_max_length: 512,
    pad_token: '<|endoftext|>',
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: null,
  };
  writeChatTemplate(dir, tokenizerConfig, chatTemplate);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  // Chat-tuned Qwen models stop at either end token; the others at the one eos.
  const generationEos = arch === 'qwen2' || arch === 'qwen3' ? [endoftext, imEnd] : [endoftext];
  return { bos: endoftext, eos: endoftext, pad: endoftext, generationEos };
}

/** The demo model's real 16,384-token tokenizer (ChatML template, special tokens at ids 0-4). */
function copyDemoTokenizer(dir: string, vocabSize: number, chatTemplate: NonNullable<CheckpointOptions['chatTemplate']>): WrittenTokenizer {
  const source = path.resolve(__dirname, '../../media/models/code-llama-19m');
  if (vocabSize < 16384) throw new Error(`the code-llama-19m tokenizer has 16384 tokens; vocabSize ${vocabSize} is too small`);
  fs.copyFileSync(path.join(source, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(source, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete tokenizerConfig.chat_template;
  writeChatTemplate(dir, tokenizerConfig, chatTemplate);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  return { bos: 0, eos: 0, pad: 4, generationEos: [0] };
}

function writeChatTemplate(dir: string, tokenizerConfig: Record<string, unknown>, kind: NonNullable<CheckpointOptions['chatTemplate']>): void {
  if (kind === 'inline') tokenizerConfig.chat_template = CHATML;
  else if (kind === 'list') tokenizerConfig.chat_template = [{ name: 'default', template: CHATML }, { name: 'tool_use', template: CHATML_TOOLS }];
  else if (kind === 'file') fs.writeFileSync(path.join(dir, 'chat_template.jinja'), CHATML);
}
