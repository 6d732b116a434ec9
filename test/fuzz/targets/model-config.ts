// config.json: loadModelConfig on the bytes as the file (JSON syntax, types, ranges, rope scaling,
// multimodal text_config), then the rotary frequencies of an accepted config. Post-conditions: the
// blueprint is self-consistent (positive integer sizes, H divisible by H_kv, even head size, finite
// frequencies).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { loadModelConfig, ropeInverseFrequencies, SUPPORTED_MODEL_TYPES } from '../../../engine/model/config';
import { checkCleanError, fuzzTempDir, OracleViolation, utf8, type FuzzTarget } from '../target';

let dir = '';

const size = fc.oneof({ arbitrary: fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 128), weight: 8 }, { arbitrary: fc.constantFrom(0, -1, 1.5, '64', null, 2 ** 31, 2 ** 53, 1e308), weight: 1 });
const rope = fc.oneof(
  fc.constant(undefined),
  fc.record({ rope_type: fc.constantFrom('default', 'linear', 'llama3', 'yarn', 'dynamic'), factor: fc.oneof(fc.constantFrom(1, 2, 8, 0, -1), fc.double()), low_freq_factor: fc.constantFrom(1, 0, 4), high_freq_factor: fc.constantFrom(4, 1, 0), original_max_position_embeddings: fc.constantFrom(8192, 0, -1), rope_theta: fc.constantFrom(10000, 500000, 0, -1, 'x') }, { requiredKeys: [] }),
  fc.constantFrom(null, [], 'linear', 1),
);

const arbitrary: fc.Arbitrary<Uint8Array> = fc
  .record({
    model_type: fc.oneof({ arbitrary: fc.constantFrom(...SUPPORTED_MODEL_TYPES), weight: 9 }, { arbitrary: fc.constantFrom('gpt2', '', 1, null, 'LLAMA'), weight: 1 }),
    hidden_size: size,
    intermediate_size: size,
    num_hidden_layers: size,
    num_attention_heads: size,
    num_key_value_heads: fc.option(size, { nil: undefined }),
    head_dim: fc.option(size, { nil: undefined }),
    vocab_size: size,
    rms_norm_eps: fc.oneof(fc.constant(1e-6), fc.double()),
    max_position_embeddings: fc.option(size, { nil: undefined }),
    tie_word_embeddings: fc.option(fc.oneof(fc.boolean(), fc.constantFrom(0, 'true')), { nil: undefined }),
    attention_bias: fc.option(fc.boolean(), { nil: undefined }),
    hidden_act: fc.option(fc.constantFrom('silu', 'gelu', 1), { nil: undefined }),
    rope_theta: fc.option(fc.oneof(fc.constantFrom(10000, 1e6), fc.double()), { nil: undefined }),
    rope_scaling: rope,
    rope_parameters: rope,
    sliding_window: fc.option(fc.oneof(size, fc.constant(null)), { nil: undefined }),
    use_sliding_window: fc.option(fc.boolean(), { nil: undefined }),
    torch_dtype: fc.option(fc.constantFrom('float32', 'bfloat16', 'float16', 'float8', 'half', 1), { nil: undefined }),
    bos_token_id: fc.option(fc.oneof(fc.nat(), fc.array(fc.integer()), fc.constant('1')), { nil: undefined }),
    eos_token_id: fc.option(fc.oneof(fc.nat(), fc.array(fc.integer())), { nil: undefined }),
  }, { requiredKeys: ['model_type', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'vocab_size'] })
  .chain((cfg) => fc.constantFrom<unknown>(cfg, { architectures: ['X'], text_config: cfg }, { ...cfg, text_config: { model_type: cfg.model_type, hidden_size: 32 } }, [cfg], 'config'))
  .map((v) => utf8(JSON.stringify(v)));

export const target: FuzzTarget = {
  name: 'model-config',
  description: 'config.json loading: JSON syntax, field types and ranges, GQA/head sizes, rope scaling variants, text_config nesting',
  coverage: ['/engine/model/config.ts'],
  arbitrary,
  json: true,
  dictionary: ['"model_type"', '"llama"', '"qwen3"', '"olmo2"', '"hidden_size"', '"num_attention_heads"', '"num_key_value_heads"', '"head_dim"', '"rope_scaling"', '"rope_parameters"', '"rope_type"', '"llama3"', '"linear"', '"factor"', '"text_config"', '"sliding_window"', '"use_sliding_window"', '"dtype"', '"torch_dtype"', 'null', 'true', '1e999'],
  maxLen: 1 << 14,
  setup() {
    dir = fuzzTempDir('config');
  },
  run(input) {
    fs.writeFileSync(path.join(dir, 'config.json'), input);
    let cfg;
    try {
      cfg = loadModelConfig(dir);
    } catch (e) {
      checkCleanError(e);
      return 'rejected';
    }
    const ints = { hiddenSize: cfg.hiddenSize, intermediateSize: cfg.intermediateSize, numLayers: cfg.numLayers, numHeads: cfg.numHeads, numKvHeads: cfg.numKvHeads, headDim: cfg.headDim, vocabSize: cfg.vocabSize, maxPositionEmbeddings: cfg.maxPositionEmbeddings };
    for (const [k, v] of Object.entries(ints)) if (!Number.isSafeInteger(v) || v <= 0) throw new OracleViolation(`accepted config has ${k} = ${v}`);
    if (cfg.numHeads % cfg.numKvHeads !== 0) throw new OracleViolation(`accepted config has ${cfg.numHeads} heads for ${cfg.numKvHeads} kv heads`);
    if (cfg.headDim % 2 !== 0) throw new OracleViolation(`accepted config has odd head_dim ${cfg.headDim}`);
    if (!Number.isFinite(cfg.rmsNormEps)) throw new OracleViolation('accepted config has a non-finite rms_norm_eps');
    if (cfg.headDim <= 4096) {
      const inv = ropeInverseFrequencies(cfg.rope, cfg.headDim);
      if (inv.some((x) => !Number.isFinite(x))) throw new OracleViolation(`rope ${JSON.stringify(cfg.rope)} gives non-finite inverse frequencies`);
    }
    return 'accepted';
  },
};
