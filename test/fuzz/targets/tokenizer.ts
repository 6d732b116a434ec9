// Tokenizer files: loadTokenizer with one of tokenizer_config.json, tokenizer.json, chat_template.jinja
// or generation_config.json replaced by the input (first byte picks which; the others are a real tiny
// byte-level BPE tokenizer), then encode/decode/stream-decode and the chat template, as the engine
// uses them on every question. The template is code from the model folder: it must render inside a
// budget or fail with a ModelError, never hang the engine (the corpus keeps the nested-loop templates
// that used to; the generator leaves them out, as each one spends the whole ~1 s budget).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { loadTokenizer } from '../../../engine/model/tokenizer';
import { writeRandomCheckpoint } from '../../helpers/checkpoint';
import { checkCleanError, fuzzTempDir, OracleViolation, utf8, type FuzzTarget } from '../target';

const FILES = ['tokenizer_config.json', 'tokenizer.json', 'chat_template.jinja', 'generation_config.json'] as const;
let dir = '';
const base = new Map<string, Buffer | null>();
let baseTokenizer: Record<string, unknown> = {};

const TEMPLATE_PIECES = [
  '{% for message in messages %}', '{% endfor %}', '{{ message.role }}', '{{ message.content }}', '{{ bos_token }}', '{{ eos_token }}',
  '{% if add_generation_prompt %}<|assistant|>{% endif %}', '{% if loop.first %}x{% endif %}', '{{ messages[0].content | trim }}',
  '{{ raise_exception("no") }}', '{% for i in range(100) %}{{ i }}{% endfor %}', '{% for i in range(100000000) %}{% endfor %}',
  "{{ 'ab' * 100000000 }}", '{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}',
  '{% set ns = namespace(x=0) %}', '{{ ns.x }}', '{{ messages | tojson }}', '{{ (messages | length) * 2 }}', '{{ 1 / 0 }}', '{{ undefined_var.attr }}',
  '{% if %}', '{{', '}}', '{%', '%}', '{# c #}', '{{ "<script>alert(1)</script>" }}', '{% generation %}', '{% endgeneration %}', '{{ tools }}',
];

const templateArb = fc.array(fc.constantFrom(...TEMPLATE_PIECES), { maxLength: 6 }).map((p) => p.join(''));
const configArb = fc.record({
  bos_token: fc.oneof(fc.constantFrom('<s>', '<|endoftext|>', '', 'nope'), fc.record({ content: fc.constantFrom('<s>', 'x') }), fc.constant(null), fc.constant(1)),
  eos_token: fc.oneof(fc.constantFrom('</s>', '<|endoftext|>', ''), fc.constant({ content: 1 }), fc.constant(null)),
  pad_token: fc.option(fc.constantFrom('<pad>', '</s>'), { nil: undefined }),
  add_bos_token: fc.option(fc.oneof(fc.boolean(), fc.constant('yes')), { nil: undefined }),
  add_eos_token: fc.option(fc.boolean(), { nil: undefined }),
  clean_up_tokenization_spaces: fc.option(fc.boolean(), { nil: undefined }),
  chat_template: fc.oneof(templateArb, fc.array(fc.record({ name: fc.constantFrom('default', 'tool_use', ''), template: templateArb }), { maxLength: 3 }), fc.constantFrom(null, 1, [{}], [null])),
  model_max_length: fc.option(fc.oneof(fc.nat(), fc.constant(1e30)), { nil: undefined }),
  tokenizer_class: fc.option(fc.constantFrom('LlamaTokenizer', 'PreTrainedTokenizerFast', 'X'), { nil: undefined }),
}, { requiredKeys: [] });

/** tokenizer.json with one part swapped for something else. */
const tokenizerArb = fc
  .record({
    part: fc.constantFrom('model', 'pre_tokenizer', 'decoder', 'normalizer', 'post_processor', 'added_tokens', 'model.type', 'model.vocab', 'model.merges', 'truncation'),
    value: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, 'BPE', 'WordLevel', { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated' }, { type: 'Sequence', pretokenizers: [] }, [{ id: 0, content: '', special: true }], [['a', 'b']], { a: -1 }, { type: 'ByteLevel' })),
  })
  .map(({ part, value }) => {
    const t = structuredClone(baseTokenizer) as Record<string, Record<string, unknown>>;
    const [a, b] = part.split('.');
    if (b) t[a] = { ...(t[a] ?? {}), [b]: value };
    else (t as Record<string, unknown>)[a] = value;
    return JSON.stringify(t);
  });

const generationArb = fc.record({ eos_token_id: fc.oneof(fc.nat(300), fc.array(fc.integer()), fc.constantFrom(null, '2', -1, 1e20)), bos_token_id: fc.option(fc.nat(), { nil: undefined }) }, { requiredKeys: [] }).map((v) => JSON.stringify(v));

const arbitrary: fc.Arbitrary<Uint8Array> = fc.oneof(
  configArb.map((c) => withMode(0, JSON.stringify(c))),
  tokenizerArb.map((t) => withMode(1, t)),
  templateArb.map((t) => withMode(2, t)),
  generationArb.map((g) => withMode(3, g)),
);

function withMode(mode: number, text: string): Uint8Array {
  const body = utf8(text);
  const out = new Uint8Array(body.length + 1);
  out[0] = mode;
  out.set(body, 1);
  return out;
}

export const target: FuzzTarget = {
  name: 'tokenizer',
  description: 'tokenizer.json / tokenizer_config.json / chat_template.jinja / generation_config.json loading, then encode, decode, streaming decode and the chat template',
  coverage: ['/engine/model/tokenizer.ts', '@huggingface/jinja', '@huggingface/tokenizers'],
  arbitrary,
  dictionary: [...TEMPLATE_PIECES, '"chat_template"', '"bos_token"', '"eos_token"', '"add_bos_token"', '"model"', '"type"', '"BPE"', '"vocab"', '"merges"', '"added_tokens"', '"special"', '"content"', '"pre_tokenizer"', '"decoder"'],
  maxLen: 1 << 16,
  budgetMs: 10_000,
  async setup() {
    dir = fuzzTempDir('tokenizer');
    await writeRandomCheckpoint(dir, { arch: 'llama', chatTemplate: 'inline', numLayers: 1, hiddenSize: 16, numHeads: 2, numKvHeads: 1 });
    for (const f of FILES) base.set(f, fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f)) : null);
    baseTokenizer = JSON.parse(base.get('tokenizer.json')!.toString('utf8'));
  },
  async run(input) {
    const mode = (input[0] ?? 0) % FILES.length;
    for (const f of FILES) {
      const content = f === FILES[mode] ? input.subarray(1) : base.get(f);
      if (content) fs.writeFileSync(path.join(dir, f), content);
      else fs.rmSync(path.join(dir, f), { force: true });
    }
    let tk;
    try {
      tk = loadTokenizer(dir);
    } catch (e) {
      checkCleanError(e);
      return 'rejected';
    }
    const ids = tk.encode('def main():\n    return "héllo" + 1 // 🚀');
    if (!ids.every((id) => Number.isInteger(id) && id >= 0)) throw new OracleViolation(`encode gave ids ${JSON.stringify(ids.slice(0, 10))}`);
    tk.decode(ids);
    const stream = tk.streamDecoder();
    for (const id of ids) stream.push(id);
    stream.flush();
    if (tk.hasChatTemplate) {
      try {
        tk.applyChatTemplate([{ role: 'user', content: 'where is main?' }], { addGenerationPrompt: true });
      } catch (e) {
        checkCleanError(e);
        return 'rejected';
      }
    }
    return 'accepted';
  },
};
