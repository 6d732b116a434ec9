// The model's tokenizer and chat template, loaded offline from the checkpoint folder.
//
// Files read (all local; nothing is ever looked up remotely):
//   tokenizer.json          the fast-tokenizer definition (required), run by @huggingface/tokenizers
//   tokenizer_config.json   special tokens, add_bos_token, clean-up flag, inline chat_template (string
//                           or a list of {name, template})
//   chat_template.jinja     the template as its own file (newer save_pretrained); wins over the inline one
//   generation_config.json  eos_token_id(s) generation stops at (falls back to config.json's, as transformers)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { clip, ModelError } from './errors';

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** End with the assistant turn's opening, so generation continues as the assistant. */
  addGenerationPrompt?: boolean;
  /** Which template, when tokenizer_config.json holds a list of named ones (default: "default"). */
  templateName?: string;
  tools?: unknown[];
  documents?: unknown[];
  /** Extra variables templates may read (e.g. enable_thinking). */
  variables?: Record<string, unknown>;
}

export interface SpecialTokens {
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
  /** Every token tokenizer.json marks special: content → id. */
  all: ReadonlyMap<string, number>;
}

/** Which special tokens templates see, as transformers passes its special_tokens_map. */
const TEMPLATE_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/**
 * A chat template is code from the model folder, run on every question. @huggingface/jinja has no step
 * limit, and a template of two nested `range(3000)` loops keeps the engine busy for minutes, so while
 * one of our renders runs, every node evaluated and every loop iteration spends one step of a budget
 * (real templates take a few thousand; a step of a loop costs up to ~30 µs), and range() builds at most TEMPLATE_RANGE_LIMIT items.
 */
export const TEMPLATE_STEP_LIMIT = 50_000;
export const TEMPLATE_RANGE_LIMIT = 100_000;

class TemplateBudgetError extends Error {}
let renderSteps: { left: number } | null = null;
const interpreterMethods = Interpreter.prototype as unknown as Record<'evaluate' | 'evaluateBlock', (...args: unknown[]) => unknown>;
for (const method of ['evaluate', 'evaluateBlock'] as const) {
  const original = interpreterMethods[method];
  interpreterMethods[method] = function (this: Interpreter, ...args: unknown[]) {
    if (renderSteps && --renderSteps.left < 0) throw new TemplateBudgetError(`exceeded ${TEMPLATE_STEP_LIMIT} steps (a loop that never ends or is far too long)`);
    return original.apply(this, args);
  };
}

// The global range() is declared when a render sets up its environment: ours replaces it then.
const environmentSet = Environment.prototype.set;
Environment.prototype.set = function (this: Environment, name: string, value: unknown) {
  return environmentSet.call(this, name, renderSteps && name === 'range' ? boundedRange : value);
};

/** jinja's range() with a cap on the list it builds. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (![start, stop, step].every((n) => typeof n === 'number' && Number.isFinite(n))) throw new Error('range() takes finite numbers');
  if (step === 0) throw new Error('range() step must not be zero');
  const count = Math.max(0, Math.ceil((stop - start) / step));
  if (count > TEMPLATE_RANGE_LIMIT) throw new TemplateBudgetError(`range() of ${count} items (at most ${TEMPLATE_RANGE_LIMIT})`);
  return Array.from({ length: count }, (_, i) => start + i * step);
}

function renderWithBudget(template: Template, variables: Record<string, unknown>): string {
  const outer = renderSteps;
  renderSteps = { left: TEMPLATE_STEP_LIMIT };
  try {
    return template.render(variables);
  } finally {
    renderSteps = outer;
  }
}

export class TitanTokenizer {
  readonly specialTokens: SpecialTokens;
  readonly bosTokenId: number | null;
  readonly padTokenId: number | null;
  /** Ids that end generation: generation_config.json's (or config.json's) eos ids plus the tokenizer's eos. */
  readonly eosTokenIds: number[];
  /** One past the largest token id the tokenizer knows (the model's vocab_size may be larger). */
  readonly vocabSize: number;
  private readonly tokenizerEosId: number | null;
  private readonly addBos: boolean;
  private readonly addEos: boolean;
  private readonly cleanUpSpaces: boolean;
  private readonly compiled = new Map<string, Template>();

  constructor(
    readonly dir: string,
    private readonly tokenizer: Tokenizer,
    private readonly tokenizerConfig: Record<string, unknown>,
    /** Template source by name ("default" for a single one) and where it came from, for error messages. */
    private readonly templates: Map<string, { source: string; origin: string }>,
    generationEosIds: number[],
  ) {
    const all = new Map<string, number>();
    for (const [id, token] of tokenizer.get_added_tokens_decoder()) if (token.special) all.set(token.content, id);
    const tokenText = (key: string): string | null => tokenString(tokenizerConfig[key]);
    this.specialTokens = { bos: tokenText('bos_token'), eos: tokenText('eos_token'), pad: tokenText('pad_token'), unk: tokenText('unk_token'), all };
    const idOf = (t: string | null): number | null => (t === null ? null : (tokenizer.token_to_id(t) ?? null));
    this.bosTokenId = idOf(this.specialTokens.bos);
    this.padTokenId = idOf(this.specialTokens.pad);
    this.tokenizerEosId = idOf(this.specialTokens.eos);
    this.eosTokenIds = [...new Set([...generationEosIds, ...(this.tokenizerEosId === null ? [] : [this.tokenizerEosId])])];
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.addBos = tokenizerConfig.add_bos_token === true && this.bosTokenId !== null;
    this.addEos = tokenizerConfig.add_eos_token === true && this.tokenizerEosId !== null;
    // transformers defaults this to false now; the JS library still defaults to true, which would turn
    // code such as `a .b` into `a.b` on decode.
    this.cleanUpSpaces = tokenizerConfig.clean_up_tokenization_spaces === true;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const ids = this.tokenizer.encode(text, { add_special_tokens: addSpecial }).ids;
    // Llama-style tokenizer_config flags that transformers applies on top of tokenizer.json's post-processor.
    if (addSpecial && this.addBos && ids[0] !== this.bosTokenId) ids.unshift(this.bosTokenId!);
    if (addSpecial && this.addEos && ids[ids.length - 1] !== this.tokenizerEosId) ids.push(this.tokenizerEosId!);
    // Load checks the vocabulary, but post-processors and added tokens carry ids of their own.
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0) throw new ModelError(`tokenizer.json in ${this.dir} produced the token id ${clip(String(JSON.stringify(id)))}, not a non-negative integer; re-export it with save_pretrained`);
    }
    return ids;
  }

  /** Text of `ids`; ids the tokenizer does not know (padding rows of a larger embedding) decode to nothing. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const known = ids.filter((id) => Number.isInteger(id) && this.tokenizer.id_to_token(id) !== undefined);
    if (known.length === 0) return '';
    return this.tokenizer.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  isEos(id: number): boolean {
    return this.eosTokenIds.includes(id);
  }

  /** A decoder for generated ids that hands back text only once it is final (see StreamDecoder). */
  streamDecoder(options: { skipSpecialTokens?: boolean } = {}): StreamDecoder {
    return new StreamDecoder(this, options.skipSpecialTokens ?? false);
  }

  get hasChatTemplate(): boolean {
    return this.templates.size > 0;
  }

  get chatTemplateNames(): string[] {
    return [...this.templates.keys()];
  }

  /** Renders the conversation with the model's chat template, as transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const template = this.template(options.templateName);
    const variables: Record<string, unknown> = {
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    if (options.tools !== undefined) variables.tools = options.tools;
    if (options.documents !== undefined) variables.documents = options.documents;
    for (const key of TEMPLATE_TOKEN_KEYS) {
      const value = tokenString(this.tokenizerConfig[key]);
      if (value !== null) variables[key] = value;
    }
    try {
      return renderWithBudget(template.compiled, variables);
    } catch (e) {
      throw new ModelError(`chat template from ${template.origin} failed to render: ${oneLine(e)}`);
    }
  }

  private template(name: string | undefined): { compiled: Template; origin: string } {
    if (this.templates.size === 0) {
      throw new ModelError(`${this.dir} has no chat template (no chat_template in tokenizer_config.json and no chat_template.jinja); add one or prompt without chat formatting`);
    }
    const key = name ?? (this.templates.has('default') ? 'default' : this.templates.size === 1 ? [...this.templates.keys()][0] : undefined);
    const entry = key === undefined ? undefined : this.templates.get(key);
    if (key === undefined || entry === undefined) {
      throw new ModelError(`tokenizer_config.json: no chat template named ${JSON.stringify(name ?? 'default')} (available: ${[...this.templates.keys()].join(', ')})`);
    }
    let compiled = this.compiled.get(key);
    if (!compiled) {
      try {
        compiled = new Template(entry.source);
      } catch (e) {
        throw new ModelError(`chat template from ${entry.origin} does not parse: ${oneLine(e)}`);
      }
      this.compiled.set(key, compiled);
    }
    return { compiled, origin: entry.origin };
  }
}

/**
 * Incremental detokenization for streaming generation. Decoding token by token is wrong twice over:
 * a byte-level token can hold half of a UTF-8 character (decoding it alone gives U+FFFD), and
 * SentencePiece-style decoders drop the leading space of the first token they see. So each step decodes
 * a short window that starts one token before the text already handed out, and returns only what the
 * window added, and only when it does not end in an incomplete character.
 */
export class StreamDecoder {
  private ids: number[] = [];
  private prefixOffset = 0; // window start: the token before the first unreturned one
  private readOffset = 0; // tokens before this have been returned as text
  private emitted = '';

  constructor(private readonly tokenizer: TitanTokenizer, private readonly skipSpecialTokens: boolean) {}

  /** Adds one generated id; returns the text that became final (often '', sometimes several characters). */
  push(id: number): string {
    this.ids.push(id);
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), opts);
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset), opts);
    if (fullText.length <= prefixText.length || fullText.endsWith('\uFFFD')) return '';
    const text = fullText.slice(prefixText.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    // Only the window is ever decoded again: drop what lies before it.
    this.ids = this.ids.slice(this.prefixOffset);
    this.readOffset -= this.prefixOffset;
    this.prefixOffset = 0;
    this.emitted += text;
    return text;
  }

  /** Everything still held back (at the end of generation; an incomplete character decodes as U+FFFD). */
  flush(): string {
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), opts);
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset), opts);
    const text = fullText.length > prefixText.length ? fullText.slice(prefixText.length) : '';
    this.ids = this.ids.slice(this.readOffset);
    this.ids = this.ids.length > 0 ? [this.ids[this.ids.length - 1]] : [];
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
    this.emitted += text;
    return text;
  }

  /** All text returned so far. */
  get text(): string {
    return this.emitted;
  }
}

/** Tokenizer models @huggingface/tokenizers runs. */
const TOKENIZER_MODEL_TYPES = ['BPE', 'WordPiece', 'Unigram'] as const;

/** No tokenizer in use has ids past 2^24 (the largest vocabularies hold about 2^18 tokens). */
const MAX_TOKEN_ID = 2 ** 24;
/**
 * Ids below this are always accepted, however small the vocabulary: a model's special tokens sit at
 * their real ids (128000 in Llama 3) even where the vocabulary is cut down, as in the synthetic
 * checkpoints' byte tokenizers, and an id table of this size costs a few MB.
 */
const ALWAYS_ALLOWED_IDS = 2 ** 18;

/** Loads the tokenizer of the checkpoint in `dir`; every problem is a ModelError naming the file. */
export function loadTokenizer(dir: string): TitanTokenizer {
  const root = path.resolve(dir);
  const tokenizerFile = path.join(root, 'tokenizer.json');
  if (!fs.existsSync(tokenizerFile)) {
    throw new ModelError(`tokenizer.json is missing from ${root}; copy the model's tokenizer.json (the Hugging Face fast-tokenizer file) into that folder`);
  }
  const tokenizerJson = readJson(tokenizerFile, root);
  if (typeof tokenizerJson !== 'object' || tokenizerJson === null || Array.isArray(tokenizerJson)) {
    throw new ModelError(`tokenizer.json in ${root} is not a JSON object; re-export it with save_pretrained`);
  }
  // The library guesses a model type it does not know from the fields present; a type we know it cannot
  // run (or a typo) should fail here instead.
  const modelType = (tokenizerJson as { model?: { type?: unknown } }).model?.type;
  if (modelType !== undefined && !(TOKENIZER_MODEL_TYPES as readonly unknown[]).includes(modelType)) {
    throw new ModelError(`tokenizer.json in ${root}: model type ${JSON.stringify(modelType)} is not supported (${TOKENIZER_MODEL_TYPES.join(', ')})`);
  }
  const vocab = (tokenizerJson as { model?: { vocab?: unknown } }).model?.vocab;
  if (vocab !== undefined && (typeof vocab !== 'object' || vocab === null || (modelType === 'Unigram') !== Array.isArray(vocab))) {
    throw new ModelError(`tokenizer.json in ${root}: "model.vocab" must be ${modelType === 'Unigram' ? 'a list of [piece, score]' : 'an object of token → id'}; re-export it with save_pretrained`);
  }
  // The library's reverse lookup keeps whatever value a vocabulary entry holds and hands it out as an
  // id, so a fraction, a string or a list in model.vocab would reach the embedding lookup.
  // Ids also size the library's id → token table: one far past the vocabulary (2^31) would have it
  // fill billions of slots. Real vocabularies are dense, with added tokens after them.
  const added = (tokenizerJson as { added_tokens?: unknown }).added_tokens;
  const idLimit = Math.min(MAX_TOKEN_ID, Math.max(ALWAYS_ALLOWED_IDS, 2 * (Object.keys(vocab ?? {}).length + (Array.isArray(added) ? added.length : 0)) + 1024));
  const checkId = (token: unknown, id: unknown, where: string) => {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new ModelError(`tokenizer.json in ${root}: token ${clip(String(JSON.stringify(token)))} has id ${clip(String(JSON.stringify(id)))} in "${where}", not a non-negative integer; re-export it with save_pretrained`);
    if ((id as number) >= idLimit) throw new ModelError(`tokenizer.json in ${root}: token ${clip(String(JSON.stringify(token)))} has id ${id} in "${where}", far beyond the vocabulary's size; re-export it with save_pretrained`);
  };
  if (vocab !== undefined && !Array.isArray(vocab)) {
    for (const [token, id] of Object.entries(vocab as Record<string, unknown>)) checkId(token, id, 'model.vocab');
  }
  if (Array.isArray(added)) {
    for (const t of added) if (t && typeof t === 'object') checkId((t as { content?: unknown }).content, (t as { id?: unknown }).id, 'added_tokens');
  }
  const configFile = path.join(root, 'tokenizer_config.json');
  const configValue = fs.existsSync(configFile) ? readJson(configFile, root) : {};
  if (typeof configValue !== 'object' || configValue === null || Array.isArray(configValue)) {
    throw new ModelError(`tokenizer_config.json in ${root} is not a JSON object`);
  }
  const tokenizerConfig = configValue as Record<string, unknown>;

  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    // Parts of the definition are only used on first encode/decode: exercise them now, so a broken
    // file fails at load with the file named rather than midway through a request.
    const probe = tokenizer.encode('Titan 123 héllo\n', { add_special_tokens: true }).ids;
    if (probe.length > 0) tokenizer.decode(probe);
    // Ids go straight into the model's embedding lookup: a vocabulary entry whose id is not a
    // non-negative integer (a string, a fraction) would only fail there, far from its cause.
    if (!probe.every((id) => Number.isSafeInteger(id) && id >= 0)) throw new ModelError(`tokenizer.json in ${root} gives token ids that are not non-negative integers; re-export it with save_pretrained`);
    for (const [token, id] of tokenizer.get_vocab(true)) {
      if (!Number.isSafeInteger(id) || id < 0) throw new ModelError(`tokenizer.json in ${root}: token ${clip(JSON.stringify(token))} has id ${clip(String(JSON.stringify(id)))}, not a non-negative integer; re-export it with save_pretrained`);
    }
  } catch (e) {
    if (e instanceof ModelError) throw e;
    throw new ModelError(`tokenizer.json in ${root} is not a usable Hugging Face tokenizer (${oneLine(e)}); re-export it with save_pretrained`);
  }
  return new TitanTokenizer(root, tokenizer, tokenizerConfig, readChatTemplates(root, tokenizerConfig), readGenerationEosIds(root));
}

function readJson(file: string, root: string): unknown {
  const name = path.basename(file);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelError(`${name} in ${root} cannot be read (${(e as NodeJS.ErrnoException).code ?? oneLine(e)})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelError(`${name} in ${root} is not valid JSON (${oneLine(e)}); re-download or re-export it`);
  }
}

function readChatTemplates(root: string, tokenizerConfig: Record<string, unknown>): Map<string, { source: string; origin: string }> {
  const templates = new Map<string, { source: string; origin: string }>();
  const jinjaFile = path.join(root, 'chat_template.jinja');
  if (fs.existsSync(jinjaFile)) {
    templates.set('default', { source: fs.readFileSync(jinjaFile, 'utf8'), origin: 'chat_template.jinja' });
  } else {
    const inline = tokenizerConfig.chat_template;
    if (typeof inline === 'string') {
      templates.set('default', { source: inline, origin: 'tokenizer_config.json "chat_template"' });
    } else if (Array.isArray(inline)) {
      for (const item of inline) {
        const { name, template } = (item ?? {}) as { name?: unknown; template?: unknown };
        if (typeof name !== 'string' || typeof template !== 'string') {
          throw new ModelError(`tokenizer_config.json in ${root}: "chat_template" list entries must be {"name": string, "template": string}`);
        }
        templates.set(name, { source: template, origin: `tokenizer_config.json "chat_template" ${JSON.stringify(name)}` });
      }
    } else if (inline !== undefined && inline !== null) {
      throw new ModelError(`tokenizer_config.json in ${root}: "chat_template" must be a string or a list of named templates`);
    }
  }
  // Named extra templates saved next to the main one (transformers' additional_chat_templates/).
  const extraDir = path.join(root, 'additional_chat_templates');
  if (fs.existsSync(extraDir) && fs.statSync(extraDir).isDirectory()) {
    for (const f of fs.readdirSync(extraDir).sort()) {
      if (!f.endsWith('.jinja')) continue;
      const name = f.slice(0, -'.jinja'.length);
      if (!templates.has(name)) templates.set(name, { source: fs.readFileSync(path.join(extraDir, f), 'utf8'), origin: `additional_chat_templates/${f}` });
    }
  }
  return templates;
}

/** generation_config.json's eos_token_id (int or list); without that file, config.json's, as transformers does. */
function readGenerationEosIds(root: string): number[] {
  const genFile = path.join(root, 'generation_config.json');
  if (fs.existsSync(genFile)) {
    const gen = readJson(genFile, root);
    if (typeof gen !== 'object' || gen === null || Array.isArray(gen)) throw new ModelError(`generation_config.json in ${root} is not a JSON object`);
    return integerIds((gen as Record<string, unknown>).eos_token_id);
  }
  // config.json is validated by the config loader; here a broken one just contributes nothing.
  try {
    const cfg = JSON.parse(fs.readFileSync(path.join(root, 'config.json'), 'utf8')) as Record<string, unknown> | null;
    const text = typeof cfg?.text_config === 'object' && cfg.text_config !== null ? (cfg.text_config as Record<string, unknown>) : cfg;
    return integerIds(text?.eos_token_id ?? cfg?.eos_token_id);
  } catch {
    return [];
  }
}

function integerIds(value: unknown): number[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0);
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object {content, ...}. */
function tokenString(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return null;
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}
