// Loading checkpoints end to end: the real demo model (sharded bf16, older config style) and generated
// random-weight checkpoints of every supported architecture, dtype and config style; the safetensors
// writer those are made with; and the tokenizer (round trips, chat templates, eos ids, streaming).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModelConfig, type ModelConfig } from '../../engine/model/config';
import { ModelError } from '../../engine/model/errors';
import { Checkpoint, floatToHalf, halfToFloat } from '../../engine/model/safetensors';
import { floatToBfloat16, writeSafetensors, writeSafetensorsSync, writeShardedSafetensors, type TensorSource } from '../../engine/model/safetensors-writer';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ARCHS, tensorLayout, writeRandomCheckpoint, type CheckpointDType } from '../helpers/checkpoint';

const DEMO = '/work/shared/models/code-llama-19m';

const CODE_SAMPLES = [
  'function add(a: number, b: number): number {\n  return a + b;\n}\n',
  'def main():\n\tfor i in range(10):\n\t\tprint(f"{i:>3} ok")  # tabs\r\n',
  'const s = "héllo wörld — ünïcödé 😀 日本語";\nconsole.log(s . length , x ,y);\n',
  "  leading spaces, don't  collapse   runs of spaces  \n\n\n",
  '',
];

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-model-loading-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function bf16ToFloat(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
}

/** What reading back a float32 value stored as `dtype` gives. */
function roundTo(dtype: CheckpointDType, v: number): number {
  if (dtype === 'float16') return halfToFloat(floatToHalf(v));
  if (dtype === 'bfloat16') return bf16ToFloat(floatToBfloat16(v));
  return Math.fround(v);
}

describe('the demo model code-llama-19m', () => {
  it('normalizes its config', () => {
    const cfg = loadModelConfig(DEMO);
    assert.equal(cfg.modelType, 'llama');
    assert.deepEqual(
      [cfg.hiddenSize, cfg.intermediateSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.headDim, cfg.vocabSize],
      [384, 1024, 8, 6, 2, 64, 16384],
    );
    assert.equal(cfg.rmsNormEps, 1e-5);
    assert.equal(cfg.tieWordEmbeddings, true);
    assert.equal(cfg.dtype, 'bfloat16');
    assert.deepEqual(cfg.rope, { type: 'default', theta: 10000 });
    assert.equal(cfg.qkvBias, false);
    assert.equal(cfg.qkNorm, 'none');
    assert.equal(cfg.normPlacement, 'pre');
    assert.equal(cfg.slidingWindow, null);
    assert.deepEqual([cfg.bosTokenId, cfg.eosTokenIds, cfg.padTokenId], [0, [0], 4]);
  });

  it('reads every tensor with the shape its config implies', () => {
    const cfg = loadModelConfig(DEMO);
    const ckpt = Checkpoint.openSync(DEMO);
    try {
      const layout = tensorLayout(cfg);
      assert.deepEqual(ckpt.names().sort(), [...layout.keys()].sort());
      let params = 0;
      let bytes = 0;
      for (const [name, { shape }] of layout) {
        const info = ckpt.info(name);
        assert.equal(info.dtype, 'BF16', name);
        assert.deepEqual(info.shape, shape, name);
        const values = ckpt.readFloat32(name);
        assert.equal(values.length, shape.reduce((a, b) => a * b, 1), name);
        for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) assert.fail(`${name}[${i}] is ${values[i]}`);
        params += values.length;
        bytes += info.byteLength;
      }
      const index = JSON.parse(fs.readFileSync(path.join(DEMO, 'model.safetensors.index.json'), 'utf8'));
      assert.equal(params, 18_880_896);
      assert.equal(bytes, index.metadata.total_size);
      // A trained model's norms sit near 1, not at init's exact 1 nor at random-init 0.
      const norm = ckpt.readFloat32('model.norm.weight');
      assert.ok(norm.some((v) => v !== 1) && norm.every((v) => Math.abs(v) < 50));
    } finally {
      ckpt.close();
    }
  });

  it('tokenizes code losslessly', () => {
    const tok = loadTokenizer(DEMO);
    assert.equal(tok.vocabSize, 16384);
    for (const text of CODE_SAMPLES) {
      const ids = tok.encode(text);
      assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < 16384));
      assert.equal(tok.decode(ids), text);
    }
    // Real tokens, not bytes: a common keyword is one token.
    assert.ok(tok.encode('function add(a, b) { return a + b; }').length < 20);
    // Special tokens are recognized in text and can be skipped on decode.
    const ids = tok.encode('<|file|> src/a.ts\n<|endoftext|>');
    assert.equal(ids[0], 1);
    assert.equal(ids[ids.length - 1], 0);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), ' src/a.ts\n');
  });

  it('knows its special tokens and eos ids', () => {
    const tok = loadTokenizer(DEMO);
    assert.equal(tok.bosTokenId, 0);
    assert.ok(tok.eosTokenIds.includes(0));
    assert.equal(tok.padTokenId, 4);
    assert.equal(tok.specialTokens.eos, '<|endoftext|>');
    assert.deepEqual([...tok.specialTokens.all.values()].sort(), [0, 1, 2, 3, 4]);
    assert.equal(tok.specialTokens.all.get('<|im_start|>'), 2);
  });

  it('applies the ChatML template from tokenizer_config.json', () => {
    const tok = loadTokenizer(DEMO);
    assert.ok(tok.hasChatTemplate);
    const messages = [
      { role: 'system', content: 'You answer about code.' },
      { role: 'user', content: 'What does add do?' },
    ];
    const expected = '<|im_start|>system\nYou answer about code.<|im_end|>\n<|im_start|>user\nWhat does add do?<|im_end|>\n';
    assert.equal(tok.applyChatTemplate(messages), expected);
    const prompt = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    assert.equal(prompt, expected + '<|im_start|>assistant\n');
    const ids = tok.encode(prompt, { addSpecialTokens: false });
    assert.equal(ids[0], 2);
    assert.equal(ids.filter((id) => id === 3).length, 2);
    assert.equal(tok.decode(ids), prompt);
  });

  it('streams decoded text without splitting characters', () => {
    const tok = loadTokenizer(DEMO);
    for (const text of CODE_SAMPLES) {
      const stream = tok.streamDecoder();
      const pieces: string[] = [];
      for (const id of tok.encode(text)) pieces.push(stream.push(id));
      pieces.push(stream.flush());
      for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)} of ${JSON.stringify(text)}`);
      assert.equal(pieces.join(''), text);
      assert.equal(stream.text, text);
    }
    // An emoji split over byte tokens is held back until complete.
    const emoji = tok.encode('😀');
    if (emoji.length > 1) {
      const stream = tok.streamDecoder();
      assert.deepEqual(emoji.slice(0, -1).map((id) => stream.push(id)).join(''), '');
      assert.equal(stream.push(emoji[emoji.length - 1]), '😀');
    }
    // Special tokens can be left out of the stream.
    const stream = tok.streamDecoder({ skipSpecialTokens: true });
    const out = tok.encode('<|im_start|>assistant\nok<|im_end|>').map((id) => stream.push(id)).join('') + stream.flush();
    assert.equal(out, 'assistant\nok');
  });
});

describe('generated checkpoints', () => {
  const dtypes: CheckpointDType[] = ['float32', 'float16', 'bfloat16'];
  const styles = ['old', 'new'] as const;
  let variant = 0;
  for (const arch of ARCHS) {
    for (const dtype of dtypes) {
      for (const configStyle of styles) {
        // Alternate sharding and tying across the grid so each architecture sees both.
        const sharded = variant % 2 === 0 ? 3 : false;
        const tied = variant % 3 === 0;
        variant++;
        it(`${arch} ${dtype} ${configStyle}-style config, ${sharded ? 'sharded' : 'single file'}, ${tied ? 'tied' : 'untied'}`, async () => {
          const dir = path.join(tmp, `${arch}-${dtype}-${configStyle}`);
          const gen = await writeRandomCheckpoint(dir, { arch, dtype, configStyle, sharded, tied, seed: variant });
          assert.equal(fs.existsSync(path.join(dir, 'model.safetensors.index.json')), Boolean(sharded));
          const cfg = loadModelConfig(dir);
          assertNormalized(cfg, arch, dtype, tied);
          const ckpt = Checkpoint.openSync(dir);
          try {
            assert.deepEqual(ckpt.names().sort(), [...gen.shapes.keys()].sort());
            assert.deepEqual(new Set(ckpt.names()), new Set(tensorLayout(cfg).keys()));
            for (const [name, shape] of gen.shapes) {
              assert.deepEqual(ckpt.info(name).shape, shape, name);
              const got = ckpt.readFloat32(name);
              const want = gen.values(name);
              for (let i = 0; i < want.length; i++) if (got[i] !== roundTo(dtype, want[i])) assert.fail(`${name}[${i}]: ${got[i]} != ${want[i]} as ${dtype}`);
            }
          } finally {
            ckpt.close();
          }
          const tok = loadTokenizer(dir);
          assert.equal(tok.vocabSize, cfg.vocabSize);
          for (const text of CODE_SAMPLES) assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
          assert.deepEqual(tok.eosTokenIds.sort(), gen.eosTokenIds.sort());
        });
      }
    }
  }

  function assertNormalized(cfg: ModelConfig, arch: string, dtype: CheckpointDType, tied: boolean): void {
    assert.equal(cfg.modelType, arch);
    assert.equal(cfg.dtype, dtype);
    assert.equal(cfg.tieWordEmbeddings, tied);
    assert.deepEqual([cfg.hiddenSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.intermediateSize, cfg.vocabSize], [64, 2, 4, 2, 128, 300]);
    assert.equal(cfg.headDim, arch === 'qwen3' ? 32 : 16);
    assert.equal(cfg.qkvBias, arch === 'qwen2');
    assert.equal(cfg.oBias, false);
    assert.equal(cfg.qkNorm, arch === 'qwen3' ? 'per-head' : arch === 'olmo2' ? 'full' : 'none');
    assert.equal(cfg.normPlacement, arch === 'olmo2' ? 'post' : 'pre');
    assert.deepEqual(cfg.rope, { type: 'default', theta: arch.startsWith('qwen') ? 1000000 : 10000 });
    // Qwen configs carry a sliding_window that is off unless use_sliding_window is set.
    assert.equal(cfg.slidingWindow, null);
  }

  for (const configStyle of styles) {
    it(`llama with llama3 rope scaling, ${configStyle}-style config`, async () => {
      const dir = path.join(tmp, `llama3-rope-${configStyle}`);
      const gen = await writeRandomCheckpoint(dir, { arch: 'llama', rope: 'llama3', configStyle, dtype: 'bfloat16' });
      if (configStyle === 'new') {
        assert.equal(gen.config.rope_theta, undefined);
        assert.deepEqual(gen.config.rope_parameters, {
          rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192, rope_theta: 500000,
        });
      } else {
        assert.equal(gen.config.rope_theta, 500000);
        assert.equal((gen.config.rope_scaling as Record<string, unknown>).rope_type, 'llama3');
      }
      assert.deepEqual(loadModelConfig(dir).rope, {
        type: 'llama3', theta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192,
      });
    });

    it(`linear rope scaling, ${configStyle}-style config`, async () => {
      const dir = path.join(tmp, `linear-rope-${configStyle}`);
      await writeRandomCheckpoint(dir, { arch: 'mistral', rope: 'linear', configStyle, slidingWindow: 4096 });
      const cfg = loadModelConfig(dir);
      assert.deepEqual(cfg.rope, { type: 'linear', theta: 10000, factor: 2 });
      assert.equal(cfg.slidingWindow, 4096);
    });
  }

  it('Qwen sliding windows apply from max_window_layers on (or per layer_types); a mix of sliding and full layers is refused', async () => {
    const dir = path.join(tmp, 'qwen-window-layers');
    await writeRandomCheckpoint(dir, { arch: 'qwen2', numLayers: 4 });
    const file = path.join(dir, 'config.json');
    const { max_window_layers: generated, ...original } = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    assert.equal(generated, 4, 'the generator writes max_window_layers as real Qwen configs do');
    const windowWith = (extra: Record<string, unknown>): number | null => {
      fs.writeFileSync(file, JSON.stringify({ ...original, sliding_window: 64, use_sliding_window: true, ...extra }));
      return loadModelConfig(dir).slidingWindow;
    };
    assert.equal(windowWith({ max_window_layers: 0 }), 64);
    assert.equal(windowWith({ max_window_layers: 4 }), null, 'no layer reaches max_window_layers: all attend fully');
    assert.equal(windowWith({ max_window_layers: 28 }), null);
    assert.equal(windowWith({}), null, 'without max_window_layers transformers uses 28: no layer of 4 slides');
    assert.throws(() => windowWith({ max_window_layers: 2 }), (e: Error) => e instanceof ModelError && /2 of 4 layers use a sliding window of 64/.test(e.message));
    assert.equal(windowWith({ layer_types: Array(4).fill('sliding_attention') }), 64);
    assert.equal(windowWith({ layer_types: Array(4).fill('full_attention') }), null);
    assert.throws(() => windowWith({ layer_types: ['full_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention'] }), ModelError);
    assert.throws(() => windowWith({ max_window_layers: -1 }), /max_window_layers/);
    assert.throws(() => windowWith({ layer_types: Array(3).fill('sliding_attention') }), /lists 3 layers, num_hidden_layers is 4/);
    // A layer count far past any model must not be expanded into a list (a fuzzing find: it hung).
    assert.equal(windowWith({ num_hidden_layers: 2 ** 31 - 1, max_window_layers: 0 }), 64);
    assert.equal(windowWith({ use_sliding_window: false, max_window_layers: 2 }), null, 'use_sliding_window off wins');
  });

  it('non-default sizes flow through config and shapes', async () => {
    const dir = path.join(tmp, 'sizes');
    const gen = await writeRandomCheckpoint(dir, { arch: 'qwen3', hiddenSize: 96, numLayers: 3, numHeads: 6, numKvHeads: 3, headDim: 8, intermediateSize: 40, vocabSize: 320, seed: 7 });
    const cfg = loadModelConfig(dir);
    assert.deepEqual([cfg.hiddenSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.headDim, cfg.intermediateSize, cfg.vocabSize], [96, 3, 6, 3, 8, 40, 320]);
    assert.deepEqual(gen.shapes.get('model.layers.2.self_attn.q_proj.weight'), [48, 96]);
    assert.deepEqual(gen.shapes.get('model.layers.2.self_attn.k_norm.weight'), [8]);
    assert.equal(loadTokenizer(dir).vocabSize, 320);
  });

  it('is deterministic for a seed and differs across seeds', async () => {
    const a = await writeRandomCheckpoint(path.join(tmp, 'seed-a'), { arch: 'llama', seed: 3 });
    const b = await writeRandomCheckpoint(path.join(tmp, 'seed-b'), { arch: 'llama', seed: 3 });
    const c = await writeRandomCheckpoint(path.join(tmp, 'seed-c'), { arch: 'llama', seed: 4 });
    assert.deepEqual(fs.readFileSync(path.join(a.dir, 'model.safetensors')), fs.readFileSync(path.join(b.dir, 'model.safetensors')));
    assert.notDeepEqual(a.values('model.embed_tokens.weight'), c.values('model.embed_tokens.weight'));
  });

  it('with the demo model tokenizer', async () => {
    const dir = path.join(tmp, 'demo-tokenizer');
    const gen = await writeRandomCheckpoint(dir, { arch: 'llama', tokenizer: 'code-llama-19m', tied: true, hiddenSize: 32, numHeads: 2, numKvHeads: 1 });
    const cfg = loadModelConfig(dir);
    assert.equal(cfg.vocabSize, 16384);
    assert.deepEqual(gen.shapes.get('model.embed_tokens.weight'), [16384, 32]);
    const tok = loadTokenizer(dir);
    assert.equal(tok.vocabSize, 16384);
    assert.deepEqual(tok.eosTokenIds, [0]);
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  });
});

describe('tokenizers of generated checkpoints', () => {
  it('llama and mistral tokenizers add BOS, qwen and olmo2 ones do not', async () => {
    for (const arch of ARCHS) {
      const gen = await writeRandomCheckpoint(path.join(tmp, `bos-${arch}`), { arch });
      const tok = loadTokenizer(gen.dir);
      const ids = tok.encode('hello');
      const addsBos = arch === 'llama' || arch === 'mistral';
      assert.equal(ids[0] === gen.bosTokenId, addsBos, arch);
      assert.equal(tok.encode('hello', { addSpecialTokens: false })[0] === gen.bosTokenId, false, arch);
      assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'hello');
    }
  });

  it('merges generation_config.json eos ids with the tokenizer eos', async () => {
    const gen = await writeRandomCheckpoint(path.join(tmp, 'eos-qwen2'), { arch: 'qwen2' });
    const tok = loadTokenizer(gen.dir);
    const endOfText = tok.tokenToId('<|endoftext|>')!;
    const imEnd = tok.tokenToId('<|im_end|>')!;
    assert.deepEqual(tok.eosTokenIds.sort(), [endOfText, imEnd].sort());
    assert.ok(tok.isEos(imEnd) && tok.isEos(endOfText) && !tok.isEos(tok.tokenToId('<|im_start|>')!));
    // Without generation_config.json, config.json's eos_token_id counts, as in transformers.
    fs.rmSync(path.join(gen.dir, 'generation_config.json'));
    const cfg = JSON.parse(fs.readFileSync(path.join(gen.dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(gen.dir, 'config.json'), JSON.stringify({ ...cfg, eos_token_id: [imEnd] }));
    assert.deepEqual(loadTokenizer(gen.dir).eosTokenIds.sort(), [endOfText, imEnd].sort());
  });

  it('reads chat templates inline, as a named list, from chat_template.jinja, or reports none', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const expected = '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n';
    for (const chatTemplate of ['inline', 'list', 'file'] as const) {
      const gen = await writeRandomCheckpoint(path.join(tmp, `chat-${chatTemplate}`), { arch: 'qwen3', chatTemplate });
      assert.equal(fs.existsSync(path.join(gen.dir, 'chat_template.jinja')), chatTemplate === 'file');
      const tok = loadTokenizer(gen.dir);
      assert.equal(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), expected, chatTemplate);
      const ids = tok.encode(expected, { addSpecialTokens: false });
      assert.equal(ids[0], tok.tokenToId('<|im_start|>'));
      if (chatTemplate === 'list') {
        assert.deepEqual(tok.chatTemplateNames, ['default', 'tool_use']);
        const withTools = tok.applyChatTemplate(messages, { templateName: 'tool_use', tools: [{ name: 'grep' }] });
        assert.ok(withTools.startsWith('<|im_start|>system\nTools: '), withTools);
        assert.ok(withTools.includes('"name": "grep"') || withTools.includes('"name":"grep"'), withTools);
      }
    }
    const none = await writeRandomCheckpoint(path.join(tmp, 'chat-none'), { arch: 'olmo2', chatTemplate: 'none' });
    const tok = loadTokenizer(none.dir);
    assert.equal(tok.hasChatTemplate, false);
    assert.throws(() => tok.applyChatTemplate(messages), { name: 'ModelError', message: /no chat template/ });
  });

  it('passes special tokens and extra variables to templates', async () => {
    const gen = await writeRandomCheckpoint(path.join(tmp, 'chat-vars'), { arch: 'llama', chatTemplate: 'none' });
    fs.writeFileSync(path.join(gen.dir, 'chat_template.jinja'), "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}{% if think %}<think>{% endif %}");
    const tok = loadTokenizer(gen.dir);
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { variables: { think: true } }), '<|endoftext|>[user]x<|endoftext|><think>');
  });
});

describe('safetensors writer', () => {
  it('round-trips every dtype with an 8-byte aligned header and __metadata__', () => {
    const file = path.join(tmp, 'dtypes.safetensors');
    const f = [0, 1, -2.5, 65504, 1e-8, 3.14159];
    const tensors: TensorSource[] = [
      { name: 'f64', dtype: 'F64', shape: [2, 3], data: new Float64Array(f) },
      { name: 'f32', dtype: 'F32', shape: [6], data: f },
      { name: 'f16', dtype: 'F16', shape: [3, 2], data: new Float32Array(f) },
      { name: 'bf16', dtype: 'BF16', shape: [6], data: () => new Float32Array(f) },
      { name: 'i64', dtype: 'I64', shape: [3], data: new BigInt64Array([-1n, 2n ** 40n, 7n]) },
      { name: 'i64n', dtype: 'I64', shape: [2], data: [5, -6] },
      { name: 'i32', dtype: 'I32', shape: [2], data: [-7, 2 ** 30] },
      { name: 'i16', dtype: 'I16', shape: [1], data: new Int16Array([-300]) },
      { name: 'i8', dtype: 'I8', shape: [1], data: [-5] },
      { name: 'u8', dtype: 'U8', shape: [3], data: [0, 128, 255] },
      { name: 'bool', dtype: 'BOOL', shape: [2], data: [1, 0] },
      { name: 'scalar', dtype: 'F32', shape: [], data: [42] },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: [] },
    ];
    const written = writeSafetensorsSync(file, tensors, { metadata: { format: 'pt', note: 'titan' } });
    const raw = fs.readFileSync(file);
    assert.equal(written.fileBytes, raw.byteLength);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0);
    const header = JSON.parse(raw.subarray(8, 8 + n).toString('utf8'));
    assert.deepEqual(header.__metadata__, { format: 'pt', note: 'titan' });
    assert.deepEqual(header.f16, { dtype: 'F16', shape: [3, 2], data_offsets: [72, 84] });

    fs.mkdirSync(path.join(tmp, 'dtypes'), { recursive: true });
    fs.renameSync(file, path.join(tmp, 'dtypes', 'model.safetensors'));
    const ckpt = Checkpoint.openSync(path.join(tmp, 'dtypes'));
    try {
      assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => ckpt.readBytes('f64').readDoubleLE(8 * i)), f);
      assert.deepEqual([...ckpt.readFloat32('f64')], f.map(Math.fround));
      assert.deepEqual([...ckpt.readFloat32('f32')], f.map(Math.fround));
      assert.deepEqual([...ckpt.readFloat32('f16')], f.map((v) => roundTo('float16', v)));
      assert.deepEqual([...ckpt.readFloat32('bf16')], f.map((v) => roundTo('bfloat16', v)));
      const bytes = (name: string): Buffer => ckpt.readBytes(name);
      const i64 = bytes('i64');
      assert.deepEqual([0, 1, 2].map((i) => i64.readBigInt64LE(8 * i)), [-1n, 2n ** 40n, 7n]);
      assert.deepEqual([0, 1].map((i) => bytes('i64n').readBigInt64LE(8 * i)), [5n, -6n]);
      assert.deepEqual([0, 1].map((i) => bytes('i32').readInt32LE(4 * i)), [-7, 2 ** 30]);
      assert.equal(bytes('i16').readInt16LE(0), -300);
      assert.equal(bytes('i8').readInt8(0), -5);
      assert.deepEqual([...bytes('u8')], [0, 128, 255]);
      assert.deepEqual([...bytes('bool')], [1, 0]);
      assert.deepEqual([...ckpt.readFloat32('scalar')], [42]);
      assert.equal(ckpt.info('empty').byteLength, 0);
    } finally {
      ckpt.close();
    }
  });

  it('rounds float32 to bfloat16 to nearest even, keeping NaN and infinities', () => {
    assert.equal(floatToBfloat16(1), 0x3f80);
    assert.equal(floatToBfloat16(-2), 0xc000);
    assert.equal(floatToBfloat16(1 + 2 ** -8), 0x3f80); // tie → even
    assert.equal(floatToBfloat16(1 + 3 * 2 ** -8), 0x3f82); // tie → even (up)
    assert.equal(floatToBfloat16(1 + 2 ** -8 + 2 ** -12), 0x3f81);
    assert.equal(floatToBfloat16(Infinity), 0x7f80);
    assert.equal(floatToBfloat16(-Infinity), 0xff80);
    assert.ok(Number.isNaN(bf16ToFloat(floatToBfloat16(NaN))));
    assert.equal(floatToBfloat16(3.4028234663852886e38), 0x7f80); // rounds up past the largest bf16
  });

  it('produces tensor data lazily, one tensor at a time, in order', async () => {
    const calls: string[] = [];
    const tensors: TensorSource[] = ['a', 'b', 'c'].map((name) => ({
      name,
      dtype: 'F32',
      shape: [1024],
      data: async () => {
        calls.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, 1));
        calls.push(`end ${name}`);
        return new Float32Array(1024).fill(name.charCodeAt(0));
      },
    }));
    const dir = path.join(tmp, 'lazy');
    fs.mkdirSync(dir);
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    assert.deepEqual(calls, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    const ckpt = Checkpoint.openSync(dir);
    assert.equal(ckpt.readFloat32('c')[1023], 99);
    ckpt.close();
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  });

  it('writes a tensor given as a sequence of byte chunks', async () => {
    const dir = path.join(tmp, 'chunks');
    fs.mkdirSync(dir);
    async function* rows(): AsyncGenerator<Uint8Array> {
      for (let r = 0; r < 4; r++) yield new Uint8Array(new Float32Array(8).fill(r).buffer);
    }
    await writeSafetensors(path.join(dir, 'model.safetensors'), [
      { name: 'big', dtype: 'F32', shape: [4, 8], data: { chunks: rows() } },
      { name: 'after', dtype: 'F32', shape: [1], data: [7] },
    ]);
    const ckpt = Checkpoint.openSync(dir);
    assert.deepEqual([...ckpt.readFloat32('big')], [0, 1, 2, 3].flatMap((r) => Array(8).fill(r)));
    assert.deepEqual([...ckpt.readFloat32('after')], [7]);
    ckpt.close();
    const tooMuch = { chunks: [new Uint8Array(8), new Uint8Array(8)] };
    await assert.rejects(writeSafetensors(path.join(dir, 'x.safetensors'), [{ name: 'w', dtype: 'F32', shape: [3], data: tooMuch }]), /tensor w has 16\+ bytes of data but F32\[3\] needs 12/);
    assert.throws(() => writeSafetensorsSync(path.join(dir, 'x.safetensors'), [{ name: 'w', dtype: 'F32', shape: [3], data: { chunks: [new Uint8Array(8)] } }]), /tensor w has 8 bytes/);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  });

  it('refuses data of the wrong size and leaves no file behind', async () => {
    const dir = path.join(tmp, 'wrong-size');
    fs.mkdirSync(dir);
    const file = path.join(dir, 'model.safetensors');
    await assert.rejects(writeSafetensors(file, [{ name: 'w', dtype: 'F16', shape: [2, 2], data: new Uint8Array(6) }]), /tensor w has 6 bytes of data but F16\[2,2\] needs 8/);
    assert.throws(() => writeSafetensorsSync(file, [{ name: 'w', dtype: 'F32', shape: [2], data: [1, 2] }, { name: 'w', dtype: 'F32', shape: [2], data: [1, 2] }]), /written twice/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('writes shards and an index as save_pretrained does', async () => {
    const dir = path.join(tmp, 'shards');
    const tensors: TensorSource[] = Array.from({ length: 5 }, (_, i) => ({ name: `t${i}`, dtype: 'BF16', shape: [100, 10], data: new Float32Array(1000).fill(i) }));
    const written = await writeShardedSafetensors(dir, tensors, { maxShardBytes: 4500, indexMetadata: { total_parameters: 5000 } });
    assert.deepEqual(written.files.map((f) => path.basename(f)), ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.deepEqual(index.metadata, { total_parameters: 5000, total_size: 10000 });
    assert.deepEqual(index.weight_map, {
      t0: 'model-00001-of-00003.safetensors',
      t1: 'model-00001-of-00003.safetensors',
      t2: 'model-00002-of-00003.safetensors',
      t3: 'model-00002-of-00003.safetensors',
      t4: 'model-00003-of-00003.safetensors',
    });
    const ckpt = Checkpoint.openSync(dir);
    assert.deepEqual([...ckpt.readFloat32('t3').slice(0, 2)], [3, 3]);
    ckpt.close();

    const even = await writeShardedSafetensors(path.join(tmp, 'shards-even'), tensors, { shardCount: 2 });
    assert.equal(even.files.length, 2);
    assert.equal(Object.values(even.weightMap).filter((f) => f.startsWith('model-00001')).length, 2);
  });
});
