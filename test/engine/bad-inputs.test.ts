// Broken model folders: each must fail fast with a ModelError whose one-line message names the file
// and the field at fault — never another exception, never a hang.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModelConfig } from '../../engine/model/config';
import { ModelError } from '../../engine/model/errors';
import { Checkpoint } from '../../engine/model/safetensors';
import { writeSafetensorsSync } from '../../engine/model/safetensors-writer';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { writeRandomCheckpoint } from '../helpers/checkpoint';

const TIMEOUT = { timeout: 10_000 };

let tmp: string;
let good: string; // a valid single-file checkpoint
let goodSharded: string;
let caseNo = 0;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-bad-inputs-'));
  good = (await writeRandomCheckpoint(path.join(tmp, 'good'), { arch: 'llama' })).dir;
  goodSharded = (await writeRandomCheckpoint(path.join(tmp, 'good-sharded'), { arch: 'qwen2', sharded: 3, dtype: 'bfloat16' })).dir;
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh copy of a good checkpoint to break. */
function copyOf(source: string): string {
  const dir = path.join(tmp, `case-${++caseNo}`);
  fs.cpSync(source, dir, { recursive: true });
  return dir;
}

/** `fn` throws a ModelError with a one-line message matching every pattern. */
function expectModelError(fn: () => unknown, ...patterns: (RegExp | string)[]): string {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, 'expected a ModelError, nothing was thrown');
  assert.ok(error instanceof ModelError, `expected a ModelError, got ${(error as Error)?.name}: ${(error as Error)?.message}`);
  const message = error.message;
  assert.ok(!message.includes('\n'), `message is not one line: ${JSON.stringify(message)}`);
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(message.includes(p), `message ${JSON.stringify(message)} lacks ${JSON.stringify(p)}`);
    else assert.match(message, p);
  }
  return message;
}

/** A safetensors file from a raw header object and data bytes, bypassing the writer's checks. */
function rawSafetensors(file: string, header: unknown, data: Buffer = Buffer.alloc(0), headerText?: string): void {
  const json = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
}

function emptyDir(): string {
  const dir = path.join(tmp, `case-${++caseNo}`);
  fs.mkdirSync(dir);
  return dir;
}

function editJson(file: string, edit: (value: Record<string, unknown>) => unknown): void {
  const value = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const result = edit(value);
  fs.writeFileSync(file, JSON.stringify(result === undefined ? value : result));
}

describe('broken safetensors files', () => {
  it('a file cut short in its tensor data', TIMEOUT, () => {
    const dir = copyOf(good);
    const file = path.join(dir, 'model.safetensors');
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', /tensor \S+: data_offsets \[\d+, \d+\] exceed the file's data/, 'truncated');
  });

  it('a file cut short in its header', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.truncateSync(path.join(dir, 'model.safetensors'), 100);
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', /truncated safetensors file \(header says \d+ bytes, file has 92/);
  });

  it('a file shorter than the length prefix', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.truncateSync(path.join(dir, 'model.safetensors'), 5);
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', 'truncated safetensors file (5 bytes, no header)');
  });

  it('a header whose offsets exceed the file', TIMEOUT, () => {
    const dir = emptyDir();
    rawSafetensors(path.join(dir, 'model.safetensors'), { w: { dtype: 'F32', shape: [250], data_offsets: [0, 1000] } }, Buffer.alloc(16));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: tensor w: data_offsets [0, 1000] exceed the file\'s data (16 bytes');
  });

  it('a header length larger than the file', TIMEOUT, () => {
    const dir = emptyDir();
    const file = path.join(dir, 'model.safetensors');
    const buf = Buffer.alloc(64, 0x20);
    buf.writeBigUInt64LE(1_000_000n, 0);
    fs.writeFileSync(file, buf);
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', 'header says 1000000 bytes, file has 56');
    // An absurd length (not a safetensors file at all) is refused before any allocation.
    buf.writeBigUInt64LE(2n ** 62n, 0);
    fs.writeFileSync(file, buf);
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', 'header length 4611686018427387904 is not plausible');
  });

  it('a header that is not JSON', TIMEOUT, () => {
    const dir = emptyDir();
    rawSafetensors(path.join(dir, 'model.safetensors'), null, Buffer.alloc(8), '{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]');
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: header is not valid JSON');
    // A pickle (.bin renamed) or any other file: the first 8 bytes read as a huge length.
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.from('\x80\x02}q\x00(X\x05\x00\x00\x00hello world, this is not safetensors', 'latin1'));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors', /not plausible|truncated/);
    rawSafetensors(path.join(dir, 'model.safetensors'), [1, 2]);
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: header is not a JSON object');
  });

  it('an unknown dtype', TIMEOUT, () => {
    const dir = emptyDir();
    rawSafetensors(path.join(dir, 'model.safetensors'), { 'model.norm.weight': { dtype: 'Q4_K', shape: [4], data_offsets: [0, 4] } }, Buffer.alloc(4));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: tensor model.norm.weight', 'unknown dtype "Q4_K"', 'supported: F64, F32, F16, BF16');
  });

  it('a shape that does not match its data size', TIMEOUT, () => {
    const dir = emptyDir();
    rawSafetensors(path.join(dir, 'model.safetensors'), { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } }, Buffer.alloc(16));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: tensor w: holds 16 bytes but F32[2,3] needs 24');
  });

  it('malformed shapes and offsets', TIMEOUT, () => {
    const dir = emptyDir();
    const file = path.join(dir, 'model.safetensors');
    rawSafetensors(file, { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, Buffer.alloc(4));
    expectModelError(() => Checkpoint.openSync(dir), 'tensor w: shape [-1] is not a list of non-negative integers');
    rawSafetensors(file, { w: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, Buffer.alloc(4));
    expectModelError(() => Checkpoint.openSync(dir), 'tensor w: data_offsets [4,0] are not [begin, end]');
    rawSafetensors(file, { w: 'F32' }, Buffer.alloc(4));
    expectModelError(() => Checkpoint.openSync(dir), 'tensor w: entry is not an object');
  });

  it('a folder with no weights, or only metadata', TIMEOUT, () => {
    const dir = emptyDir();
    expectModelError(() => Checkpoint.openSync(dir), 'no model.safetensors or model.safetensors.index.json');
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'pickle');
    expectModelError(() => Checkpoint.openSync(dir), '.bin/pickle files are never loaded');
    rawSafetensors(path.join(dir, 'model.safetensors'), { __metadata__: { format: 'pt' } });
    expectModelError(() => Checkpoint.openSync(dir), 'the checkpoint holds no tensors');
  });

  it('a directory where a weights file should be', TIMEOUT, () => {
    const dir = emptyDir();
    fs.mkdirSync(path.join(dir, 'model.safetensors'));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors: is not a regular file');
  });
});

describe('broken shard indexes', () => {
  const indexOf = (dir: string): string => path.join(dir, 'model.safetensors.index.json');

  it('an index pointing at a missing shard', TIMEOUT, () => {
    const dir = copyOf(goodSharded);
    fs.rmSync(path.join(dir, 'model-00002-of-00003.safetensors'));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json points at model-00002-of-00003.safetensors, which is missing from');
  });

  it('an index pointing outside the model folder', TIMEOUT, () => {
    const dir = copyOf(goodSharded);
    // A real file there, so only the path check can stop it.
    fs.copyFileSync(path.join(dir, 'model-00001-of-00003.safetensors'), path.join(tmp, 'x.safetensors'));
    editJson(indexOf(dir), (index) => {
      (index.weight_map as Record<string, string>)['model.embed_tokens.weight'] = '../x.safetensors';
    });
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json entry for model.embed_tokens.weight', 'points at ../x.safetensors outside the model folder');

    const absolute = path.join(tmp, 'x.safetensors');
    editJson(indexOf(dir), (index) => {
      (index.weight_map as Record<string, string>)['model.embed_tokens.weight'] = absolute;
    });
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json entry for model.embed_tokens.weight', `points at ${absolute}, an absolute path outside the model folder`);

    editJson(indexOf(dir), (index) => {
      (index.weight_map as Record<string, string>)['model.embed_tokens.weight'] = 'sub/../../x.safetensors';
    });
    expectModelError(() => Checkpoint.openSync(dir), 'outside the model folder');
  });

  it('an index naming a tensor its shard lacks', TIMEOUT, () => {
    const dir = copyOf(goodSharded);
    editJson(indexOf(dir), (index) => {
      (index.weight_map as Record<string, string>)['model.layers.9.mlp.up_proj.weight'] = 'model-00001-of-00003.safetensors';
    });
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json says model.layers.9.mlp.up_proj.weight is in model-00001-of-00003.safetensors, but that shard has no such tensor');
  });

  it('an index that is not JSON, has no weight_map, or maps to a non-string', TIMEOUT, () => {
    const dir = copyOf(goodSharded);
    fs.writeFileSync(indexOf(dir), '{"weight_map": {');
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json: not valid JSON');
    fs.writeFileSync(indexOf(dir), JSON.stringify({ metadata: { total_size: 1 } }));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json: missing "weight_map" object');
    fs.writeFileSync(indexOf(dir), JSON.stringify({ weight_map: { w: 3 } }));
    expectModelError(() => Checkpoint.openSync(dir), 'model.safetensors.index.json: entry for w is not a file name');
  });

  it('a truncated shard', TIMEOUT, () => {
    const dir = copyOf(goodSharded);
    const shard = path.join(dir, 'model-00003-of-00003.safetensors');
    fs.truncateSync(shard, fs.statSync(shard).size - 1);
    expectModelError(() => Checkpoint.openSync(dir), 'model-00003-of-00003.safetensors: tensor', 'exceed the file\'s data');
  });
});

describe('broken config.json', () => {
  const configOf = (dir: string): string => path.join(dir, 'config.json');

  it('a missing config.json', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.rmSync(configOf(dir));
    expectModelError(() => loadModelConfig(dir), 'config.json is missing', dir);
  });

  it('a config.json that is not JSON or not an object', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.writeFileSync(configOf(dir), '{"model_type": "llama",');
    expectModelError(() => loadModelConfig(dir), 'config.json', 'is not valid JSON');
    fs.writeFileSync(configOf(dir), '[]');
    expectModelError(() => loadModelConfig(dir), 'config.json: expected a JSON object');
  });

  for (const field of ['hidden_size', 'num_attention_heads', 'num_hidden_layers', 'intermediate_size', 'vocab_size', 'model_type']) {
    it(`a config missing ${field}`, TIMEOUT, () => {
      const dir = copyOf(good);
      editJson(configOf(dir), (cfg) => {
        delete cfg[field];
      });
      expectModelError(() => loadModelConfig(dir), 'config.json: missing', `"${field}"`);
    });
  }

  const wrongTypes: [string, unknown, string][] = [
    ['hidden_size', '64', 'config.json: "hidden_size" must be a positive integer, got "64"'],
    ['num_key_value_heads', 2.5, 'config.json: "num_key_value_heads" must be a positive integer, got 2.5'],
    ['num_hidden_layers', -2, 'config.json: "num_hidden_layers" must be a positive integer, got -2'],
    ['rms_norm_eps', '1e-5', 'config.json: "rms_norm_eps" must be a number, got "1e-5"'],
    ['tie_word_embeddings', 'yes', 'config.json: "tie_word_embeddings" must be true or false, got "yes"'],
    ['rope_theta', 'big', 'config.json: rope_theta must be a positive number, got "big"'],
    ['rope_scaling', 'llama3', 'config.json: "rope_scaling"/"rope_parameters" must be an object or null'],
    ['torch_dtype', 'int8', 'config.json: dtype "int8" is not supported (float32, float16, bfloat16)'],
    ['hidden_act', 'gelu', 'config.json: hidden_act "gelu" is not supported'],
    ['model_type', 7, 'config.json: missing "model_type"'],
  ];
  for (const [field, value, message] of wrongTypes) {
    it(`a config whose ${field} is ${JSON.stringify(value)}`, TIMEOUT, () => {
      const dir = copyOf(good);
      editJson(configOf(dir), (cfg) => {
        cfg[field] = value;
      });
      expectModelError(() => loadModelConfig(dir), message);
    });
  }

  it('inconsistent head counts and rope parameters', TIMEOUT, () => {
    const dir = copyOf(good);
    editJson(configOf(dir), (cfg) => ({ ...cfg, num_key_value_heads: 3 }));
    expectModelError(() => loadModelConfig(dir), 'config.json: num_attention_heads (4) is not a multiple of num_key_value_heads (3)');
    editJson(configOf(dir), (cfg) => ({ ...cfg, num_key_value_heads: 2, num_attention_heads: 6, head_dim: null }));
    expectModelError(() => loadModelConfig(dir), 'config.json: hidden_size (64) is not divisible by num_attention_heads (6) and no head_dim is given');
    editJson(configOf(dir), (cfg) => ({ ...cfg, num_attention_heads: 4, rope_scaling: { rope_type: 'llama3', factor: 8 } }));
    expectModelError(() => loadModelConfig(dir), 'config.json: rope llama3 scaling needs "low_freq_factor"');
    editJson(configOf(dir), (cfg) => ({ ...cfg, rope_scaling: { rope_type: 'yarn', factor: 4 } }));
    expectModelError(() => loadModelConfig(dir), 'config.json: rope type "yarn" is not supported (default, linear, llama3)');
  });

  it('an unsupported model_type lists the supported ones', TIMEOUT, () => {
    const dir = copyOf(good);
    editJson(configOf(dir), (cfg) => ({ ...cfg, model_type: 'gpt2' }));
    expectModelError(() => loadModelConfig(dir), 'config.json: model_type "gpt2" is not supported', 'supported: llama, mistral, qwen2, qwen3, olmo2');
  });
});

describe('broken tokenizers', () => {
  it('a missing tokenizer.json', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    expectModelError(() => loadTokenizer(dir), `tokenizer.json is missing from ${dir};`);
  });

  it('a tokenizer.json that is not JSON', TIMEOUT, () => {
    const dir = copyOf(good);
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 500));
    expectModelError(() => loadTokenizer(dir), `tokenizer.json in ${dir} is not valid JSON`);
  });

  it('a tokenizer.json that is JSON but not a tokenizer', TIMEOUT, () => {
    const dir = copyOf(good);
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, '"hello"');
    expectModelError(() => loadTokenizer(dir), `tokenizer.json in ${dir} is not a JSON object`);
    fs.writeFileSync(file, JSON.stringify({ version: '1.0', vocab: { a: 0 } }));
    expectModelError(() => loadTokenizer(dir), `tokenizer.json in ${dir} is not a usable Hugging Face tokenizer`, '"model"');
    const original = JSON.parse(fs.readFileSync(path.join(good, 'tokenizer.json'), 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...original, model: { ...original.model, type: 'SentencePieceUltra' } }));
    expectModelError(() => loadTokenizer(dir), `tokenizer.json in ${dir}: model type "SentencePieceUltra" is not supported (BPE, WordPiece, Unigram)`);
    fs.writeFileSync(file, JSON.stringify({ ...original, model: { ...original.model, merges: 'a b' } }));
    expectModelError(() => loadTokenizer(dir), 'is not a usable Hugging Face tokenizer');
    fs.writeFileSync(file, JSON.stringify({ ...original, added_tokens: null }));
    expectModelError(() => loadTokenizer(dir), 'is not a usable Hugging Face tokenizer');
  });

  it('a broken tokenizer_config.json or generation_config.json', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{"bos_token": ');
    expectModelError(() => loadTokenizer(dir), `tokenizer_config.json in ${dir} is not valid JSON`);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: 42 }));
    expectModelError(() => loadTokenizer(dir), 'tokenizer_config.json', '"chat_template" must be a string or a list of named templates');
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'default' }] }));
    expectModelError(() => loadTokenizer(dir), '"chat_template" list entries must be {"name": string, "template": string}');
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{}');
    fs.writeFileSync(path.join(dir, 'generation_config.json'), 'eos=2');
    expectModelError(() => loadTokenizer(dir), `generation_config.json in ${dir} is not valid JSON`);
  });

  it('a chat template that does not parse, fails, or is not there by that name', TIMEOUT, () => {
    const dir = copyOf(good);
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }');
    const tok = loadTokenizer(dir); // the tokenizer itself still loads: plain completion works
    expectModelError(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }]), 'chat template from chat_template.jinja does not parse');
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), "{{ raise_exception('roles must alternate user/assistant') }}");
    expectModelError(() => loadTokenizer(dir).applyChatTemplate([{ role: 'user', content: 'x' }]), 'chat template from chat_template.jinja failed to render: roles must alternate user/assistant');
    fs.rmSync(path.join(dir, 'chat_template.jinja'));
    editJson(path.join(dir, 'tokenizer_config.json'), (cfg) => ({ ...cfg, chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'rag', template: 'y' }] }));
    expectModelError(() => loadTokenizer(dir).applyChatTemplate([]), 'no chat template named "default" (available: tool_use, rag)');
  });
});

describe('the writer refuses what it cannot write', () => {
  it('unknown dtypes and bad shapes are programming errors, not ModelErrors', TIMEOUT, () => {
    const file = path.join(emptyDir(), 'model.safetensors');
    assert.throws(() => writeSafetensorsSync(file, [{ name: 'w', dtype: 'Q4' as 'F32', shape: [1], data: [1] }]), /tensor w: unknown dtype "Q4"/);
    assert.throws(() => writeSafetensorsSync(file, [{ name: 'w', dtype: 'F32', shape: [1.5], data: [1] }]), /shape \[1.5\]/);
    assert.throws(() => writeSafetensorsSync(file, [{ name: '__metadata__', dtype: 'F32', shape: [1], data: [1] }]), /invalid tensor name/);
    assert.equal(fs.existsSync(file), false);
  });
});
