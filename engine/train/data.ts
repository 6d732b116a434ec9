// Training data for alignment, as token sequences with the targets that count:
//
//   workspace:<dir>  the folder's text files (discovered as workspace memory discovers them: ignore
//                    files honoured, binaries and generated files skipped), each entering as the memory
//                    stream has it (`<|file|> path` header + text); next-token loss on every token. Held-out
//                    files (not tokens) form the validation split, chosen by a hash of the path.
//   jsonl:<file>     one JSON object per line: alpaca {instruction, input?, output} or chat {messages:
//                    [{role, content}…]}, rendered with the model's chat template; loss only on the
//                    assistant's turns (the template's end-of-turn tokens included, so the model learns
//                    to stop). Held-out samples chosen by a hash of the line.
//
// A sequence holds at most T + 1 tokens (T inputs, each predicting the next); every sequence starts from
// an empty model state, as the training graph does.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { discoverWorkspace } from '../memory/discovery';
import { readWorkspaceFile } from '../memory/discovery';
import { encodeStreamText, fileStreamText } from '../memory/stream';
import { ModelError } from '../model/errors';
import type { ChatMessage, TitanTokenizer } from '../model/tokenizer';
import { throwIfCancelled } from '../runtime/generate';

/** Training data: a workspace (a folder, plus `extraDirs` for a multi-root workspace) or a JSONL file. */
export type DataSpec = { kind: 'workspace'; dir: string; extraDirs?: string[]; exclude?: string[] } | { kind: 'jsonl'; file: string };

/** Parses `workspace:<dir>` or `jsonl:<file>` (a bare path: a folder is a workspace, a .jsonl file JSONL). */
export function parseDataSpec(text: string): DataSpec {
  const m = /^(workspace|jsonl):(.+)$/.exec(text);
  if (m) return m[1] === 'workspace' ? { kind: 'workspace', dir: m[2] } : { kind: 'jsonl', file: m[2] };
  if (fs.existsSync(text) && fs.statSync(text).isDirectory()) return { kind: 'workspace', dir: text };
  if (/\.jsonl$/i.test(text)) return { kind: 'jsonl', file: text };
  throw new ModelError(`--data must be workspace:<dir> or jsonl:<file>, got "${text}"`);
}

export interface TrainingSequence {
  /** n + 1 tokens: inputs are tokens[0..n), targets tokens[1..n]. */
  tokens: Int32Array;
  /** scored[i] = 1 when target i (tokens[i + 1]) counts in the loss. */
  scored: Uint8Array;
  /** Where it came from (a file path or "line N"), for reports. */
  source: string;
}

export interface DatasetSummary {
  kind: DataSpec['kind'];
  path: string;
  /** Files or samples used for training / held out. */
  trainItems: number;
  validationItems: number;
  trainSequences: number;
  validationSequences: number;
  /** Scored target tokens. */
  trainTokens: number;
  validationTokens: number;
  /** Items cut to fit a sequence (JSONL samples longer than T + 1 tokens). */
  truncated: number;
  /** Items left out, with why (empty, unreadable, no assistant turn…), at most a few listed. */
  skipped: number;
  notes: string[];
}

export interface Dataset {
  train: TrainingSequence[];
  validation: TrainingSequence[];
  summary: DatasetSummary;
}

export interface DatasetOptions {
  /** T: inputs per sequence. */
  sequence: number;
  /** Fraction of files / samples held out (default 0.1; at least one when there are two or more). */
  validationFraction?: number;
  /** Stop reading the workspace once this many training tokens are gathered (default: everything). */
  maxTrainTokens?: number;
  /** Validation sequences kept (evenly spaced over the held-out ones; default 32). */
  maxValidationSequences?: number;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

/** A stable number in [0, 1) from a string: which split an item falls in. */
export function splitHash(key: string): number {
  return createHash('sha256').update(key).digest().readUInt32BE(0) / 2 ** 32;
}

/** Picks the held-out keys: those hashing below the fraction, at least one and never all (keys deduplicated). */
function chooseHeldOut(keys: string[], fraction: number): Set<string> {
  const unique = [...new Set(keys)];
  const scored = unique.map((k) => ({ k, h: splitHash(k) })).sort((a, b) => a.h - b.h);
  const held = new Set(scored.filter((s) => s.h < fraction).map((s) => s.k));
  if (held.size === 0 && unique.length >= 2 && fraction > 0) held.add(scored[0].k);
  if (held.size === unique.length) held.delete(scored[scored.length - 1].k);
  return held;
}

/** Cuts a token stream into sequences of T + 1 tokens that overlap by one (each target predicted once). */
function cutStream(stream: number[], T: number, source: string): TrainingSequence[] {
  const out: TrainingSequence[] = [];
  for (let start = 0; start + 1 < stream.length; start += T) {
    const tokens = Int32Array.from(stream.slice(start, start + T + 1));
    // A short tail is kept only when it is worth a run (a quarter of a sequence).
    if (tokens.length - 1 < T && out.length > 0 && tokens.length - 1 < T / 4) break;
    out.push({ tokens, scored: new Uint8Array(tokens.length - 1).fill(1), source: `${source} @${start}` });
  }
  return out;
}

function evenlySpaced<T>(items: T[], max: number): T[] {
  if (items.length <= max) return items;
  return Array.from({ length: max }, (_, i) => items[Math.floor((i * items.length) / max)]);
}

const scoredCount = (seqs: TrainingSequence[]) => seqs.reduce((s, q) => s + q.scored.reduce((a, b) => a + b, 0), 0);

export async function workspaceDataset(dir: string, tokenizer: TitanTokenizer, options: DatasetOptions & { exclude?: string[]; extraDirs?: string[] }): Promise<Dataset> {
  const folders = [dir, ...(options.extraDirs ?? [])];
  for (const f of folders) if (!fs.existsSync(f) || !fs.statSync(f).isDirectory()) throw new ModelError(`workspace folder ${f} does not exist or is not a folder`);
  const T = options.sequence;
  options.onProgress?.(`listing ${dir}`);
  // Globs relative to the folder (VS Code's files.exclude form): `**/*.test.ts`, `docs/**`.
  const exclude = options.exclude?.length ? options.exclude : undefined;
  const found = await discoverWorkspace(
    folders.map((f) => path.resolve(f)),
    { signal: options.signal, exclude },
  );
  const files = found.files;
  if (files.length < 2) {
    throw new ModelError(`${dir} has ${files.length} usable text file${files.length === 1 ? '' : 's'} (${found.counts.skipped} skipped, ${found.counts.ignored} ignored); alignment holds out whole files for validation and needs at least 2`);
  }
  const held = chooseHeldOut(
    files.map((f) => f.streamPath),
    options.validationFraction ?? 0.1,
  );
  // Files in a fixed pseudo-random order (by hash), so a token budget samples the whole workspace.
  const ordered = [...files].sort((a, b) => splitHash(a.streamPath) - splitHash(b.streamPath));
  const trainStream: number[] = [];
  const valStreams: { path: string; ids: number[] }[] = [];
  let skipped = 0;
  let trainFiles = 0;
  const budget = options.maxTrainTokens ?? Infinity;
  const maxVal = options.maxValidationSequences ?? 32;
  let valTokens = 0;
  for (const [i, file] of ordered.entries()) {
    throwIfCancelled(options.signal);
    const isVal = held.has(file.streamPath);
    if (isVal ? valTokens >= maxVal * (T + 1) * 4 : trainStream.length >= budget) continue;
    let text: string;
    try {
      text = (await readWorkspaceFile(file)).text;
    } catch {
      skipped++;
      continue;
    }
    const ids = await encodeStreamText(tokenizer, fileStreamText(file.streamPath, text));
    if (isVal) {
      valStreams.push({ path: file.streamPath, ids });
      valTokens += ids.length;
    } else {
      for (const id of ids) trainStream.push(id);
      trainFiles++;
    }
    if (i % 50 === 0) options.onProgress?.(`tokenized ${i + 1}/${files.length} files (${trainStream.length} training tokens)`);
  }
  const train = cutStream(trainStream, T, 'workspace');
  // Validation keeps files apart: each held-out file is its own stream, so no sequence mixes two files
  // with a training file in between.
  const validation = evenlySpaced(
    valStreams.flatMap((v) => cutStream(v.ids, T, v.path)),
    maxVal,
  );
  if (train.length === 0) throw new ModelError(`${dir}: the training files hold fewer than 2 tokens`);
  const notes: string[] = [];
  if (Number.isFinite(budget) && trainStream.length >= budget) notes.push(`stopped reading after ${trainStream.length} training tokens (enough for the planned steps)`);
  return {
    train,
    validation,
    summary: {
      kind: 'workspace',
      path: path.resolve(dir),
      trainItems: trainFiles,
      validationItems: valStreams.length,
      trainSequences: train.length,
      validationSequences: validation.length,
      trainTokens: scoredCount(train),
      validationTokens: scoredCount(validation),
      truncated: 0,
      skipped,
      notes,
    },
  };
}

/** The conversation a JSONL line describes. */
function sampleMessages(raw: unknown, where: string): ChatMessage[] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelError(`${where}: expected a JSON object with "instruction"/"output" or "messages"`);
  const o = raw as Record<string, unknown>;
  if (Array.isArray(o.messages)) {
    const messages = o.messages.map((m, i) => {
      if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string') {
        throw new ModelError(`${where}: messages[${i}] needs a string "role" and a string "content"`);
      }
      return { role: (m as ChatMessage).role, content: (m as ChatMessage).content };
    });
    if (!messages.some((m) => m.role === 'assistant')) throw new ModelError(`${where}: the conversation has no "assistant" message to learn`);
    return messages;
  }
  if (typeof o.instruction === 'string' && typeof o.output === 'string') {
    if (o.input !== undefined && typeof o.input !== 'string') throw new ModelError(`${where}: "input" must be a string`);
    const input = typeof o.input === 'string' && o.input.trim() ? `\n\n${o.input}` : '';
    return [
      { role: 'user', content: `${o.instruction}${input}` },
      { role: 'assistant', content: o.output },
    ];
  }
  throw new ModelError(`${where}: expected alpaca fields "instruction" and "output" (strings) or a "messages" list`);
}

/**
 * Tokens of a conversation with its assistant turns marked: the rendering is cut where each assistant
 * turn starts (the template with the generation prompt up to it) and ends (the template through it),
 * and each piece is tokenized on its own.
 */
export function renderConversation(tokenizer: TitanTokenizer, messages: ChatMessage[], where: string): { tokens: number[]; scored: number[] } {
  const pieces: { text: string; learn: boolean }[] = [];
  let done = '';
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = tokenizer.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true });
    const through = tokenizer.applyChatTemplate(messages.slice(0, i + 1));
    if (!before.startsWith(done) || !through.startsWith(before)) {
      throw new ModelError(`${where}: the chat template renders a conversation's prefix differently from the conversation (not prefix-stable), so the assistant's tokens cannot be located`);
    }
    pieces.push({ text: before.slice(done.length), learn: false }, { text: through.slice(before.length), learn: true });
    done = through;
  });
  const full = tokenizer.applyChatTemplate(messages);
  if (full.length > done.length && full.startsWith(done)) pieces.push({ text: full.slice(done.length), learn: false });
  const tokens: number[] = [];
  const learn: boolean[] = [];
  for (const p of pieces) {
    if (!p.text) continue;
    for (const id of tokenizer.encode(p.text, { addSpecialTokens: false })) {
      tokens.push(id);
      learn.push(p.learn);
    }
  }
  // Target i is tokens[i + 1]: scored when that token belongs to an assistant turn.
  return { tokens, scored: tokens.slice(1).map((_, i) => (learn[i + 1] ? 1 : 0)) };
}

export async function jsonlDataset(file: string, tokenizer: TitanTokenizer, options: DatasetOptions): Promise<Dataset> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(code === 'ENOENT' ? `${file} does not exist` : code === 'EISDIR' ? `${file} is a folder; jsonl: takes a file` : `cannot read ${file} (${code ?? String(e)})`);
  }
  if (!tokenizer.hasChatTemplate) throw new ModelError(`${tokenizer.dir} has no chat template; instruction data (jsonl:) is rendered with it — use workspace: data or add a template`);
  const T = options.sequence;
  const lines = text.split(/\r?\n/);
  const samples: { key: string; seq: TrainingSequence }[] = [];
  let truncated = 0;
  let skipped = 0;
  const notes: string[] = [];
  for (const [i, line] of lines.entries()) {
    throwIfCancelled(options.signal);
    if (!line.trim()) continue;
    const where = `${path.basename(file)}:${i + 1}`;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (e) {
      throw new ModelError(`${where}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
    }
    const { tokens, scored } = renderConversation(tokenizer, sampleMessages(raw, where), where);
    if (!scored.some((s) => s)) {
      skipped++;
      if (notes.length < 5) notes.push(`${where}: nothing to learn after tokenization (empty assistant turn)`);
      continue;
    }
    let toks = tokens;
    let sc = scored;
    if (toks.length > T + 1) {
      truncated++;
      toks = toks.slice(0, T + 1);
      sc = sc.slice(0, T);
      if (!sc.some((s) => s)) {
        skipped++;
        if (notes.length < 5) notes.push(`${where}: the prompt alone is longer than ${T} tokens; raise --seq or shorten it`);
        continue;
      }
    }
    // The split follows the sample's text, so editing other lines never moves it and duplicates stay together.
    samples.push({ key: line.trim(), seq: { tokens: Int32Array.from(toks), scored: Uint8Array.from(sc), source: where } });
  }
  const distinct = new Set(samples.map((s) => s.key)).size;
  if (distinct < 2) throw new ModelError(`${file}: ${distinct} usable distinct sample${distinct === 1 ? '' : 's'}; alignment holds out samples for validation and needs at least 2`);
  const held = chooseHeldOut(
    samples.map((s) => s.key),
    options.validationFraction ?? 0.1,
  );
  const train = samples.filter((s) => !held.has(s.key)).map((s) => s.seq);
  const validation = evenlySpaced(
    samples.filter((s) => held.has(s.key)).map((s) => s.seq),
    options.maxValidationSequences ?? 32,
  );
  return {
    train,
    validation,
    summary: {
      kind: 'jsonl',
      path: path.resolve(file),
      trainItems: train.length,
      validationItems: samples.length - train.length,
      trainSequences: train.length,
      validationSequences: validation.length,
      trainTokens: scoredCount(train),
      validationTokens: scoredCount(validation),
      truncated,
      skipped,
      notes,
    },
  };
}

/**
 * Long-context training: only targets at positions ≥ `from` of each sequence count in the loss (and in
 * validation), so the loss falls on the tokens a sliding window of `from` tokens cannot see the whole
 * prefix of. Earlier targets stay in the sequence as context. Sequences left with nothing to score are
 * dropped (a short workspace tail, a short JSONL sample).
 */
export function scoreFrom(dataset: Dataset, from: number): Dataset {
  if (from <= 0) return dataset;
  const cut = (seqs: TrainingSequence[]) =>
    seqs
      .map((s) => {
        const scored = s.scored.slice();
        scored.fill(0, 0, Math.min(from, scored.length));
        return { ...s, scored };
      })
      .filter((s) => s.scored.some((v) => v));
  const train = cut(dataset.train);
  const validation = cut(dataset.validation);
  const dropped = dataset.train.length - train.length + dataset.validation.length - validation.length;
  const notes = [...dataset.summary.notes];
  if (dropped) notes.push(`${dropped} sequence${dropped === 1 ? '' : 's'} shorter than --loss-from ${from} + 1 tokens left out (nothing to score)`);
  return {
    train,
    validation,
    summary: { ...dataset.summary, trainSequences: train.length, validationSequences: validation.length, trainTokens: scoredCount(train), validationTokens: scoredCount(validation), notes },
  };
}

export function loadDataset(spec: DataSpec, tokenizer: TitanTokenizer, options: DatasetOptions): Promise<Dataset> {
  return spec.kind === 'workspace' ? workspaceDataset(spec.dir, tokenizer, { ...options, exclude: spec.exclude, extraDirs: spec.extraDirs }) : jsonlDataset(spec.file, tokenizer, options);
}

/** Graph lengths used for sequences of up to T inputs: T, T/2, T/4 … down to 64 (short samples run in a smaller graph). */
export function bucketLengths(T: number): number[] {
  const out = [T];
  for (let b = T / 2; Number.isInteger(b) && b >= 64; b /= 2) out.push(b);
  return out.sort((a, b) => a - b);
}

/** The smallest bucket that holds `inputs` tokens. */
export function bucketFor(inputs: number, buckets: number[]): number {
  for (const b of buckets) if (b >= inputs) return b;
  return buckets[buckets.length - 1];
}
