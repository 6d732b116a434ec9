// Held-out negative log-likelihood of a token stream under a model package, overall and by position
// in the context, so quality is reported next to speed (Titanized vs base, quantized vs full precision).
//
// The stream is fed segment by segment through the model's ordinary forward call (the same path
// generation and ingestion use), asking for the logits of every position; each row's log-softmax is
// taken in float64. With a context limit N the model is reset every N tokens: the first token of each
// context is only conditioned on, every later one is scored at its position p (1 ≤ p < N) in it.
import * as fs from 'node:fs';
import { isBinaryFileSync } from 'isbinaryfile';
import { ModelError } from '../model/errors';
import type { TitanTokenizer } from '../model/tokenizer';
import { throwIfCancelled } from '../runtime/generate';
import type { ForwardModel } from '../runtime/worker-client';

/** Position buckets (position of the predicted token in its context): [from, to). */
export const POSITION_BUCKETS: readonly { name: string; from: number; to: number | null }[] = [
  { name: '0-512', from: 0, to: 512 },
  { name: '512-4k', from: 512, to: 4096 },
  { name: '4k+', from: 4096, to: null },
];

export interface NllSummary {
  /** Tokens scored. */
  tokens: number;
  /** Mean negative log-likelihood, nats per token (null when nothing was scored). */
  nll: number | null;
  /** exp(nll). */
  perplexity: number | null;
}

export interface PerplexityResult extends NllSummary {
  /** Tokens in the stream (scored or conditioned on). */
  streamTokens: number;
  /** Context limit (tokens between resets); null = the whole stream is one context. */
  context: number | null;
  /** Bits per byte of the text, when the byte length is known (tokenizer-independent). */
  bitsPerByte: number | null;
  buckets: (NllSummary & { name: string; from: number; to: number | null })[];
  seconds: number;
  tokensPerSecond: number;
}

export interface PerplexityOptions {
  /** Reset the model every `context` tokens (default: never). */
  context?: number | null;
  /** Tokens per forward call (default: as many as keep one call's logits under ~64 MiB, at most 512). */
  segment?: number;
  /** UTF-8 byte length of the text, for bits per byte. */
  textBytes?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** −log softmax(row)[target], in float64. */
export function tokenNll(row: Float32Array, target: number): number {
  let max = -Infinity;
  for (let j = 0; j < row.length; j++) if (row[j] > max) max = row[j];
  let sum = 0;
  for (let j = 0; j < row.length; j++) sum += Math.exp(row[j] - max);
  return Math.log(sum) + max - row[target];
}

/** Default segment: one call's logits rows (K × V float32) stay under about 64 MiB. */
export function defaultSegment(vocabSize: number): number {
  return Math.max(16, Math.min(512, Math.floor((64 * 2 ** 20) / (4 * vocabSize))));
}

function summary(sum: number, count: number): NllSummary {
  const nll = count ? sum / count : null;
  return { tokens: count, nll, perplexity: nll === null ? null : Math.exp(nll) };
}

/** Streams `ids` through `model` (reset first) and scores every token that has context before it. */
export async function streamPerplexity(model: ForwardModel, ids: readonly number[], options: PerplexityOptions = {}): Promise<PerplexityResult> {
  if (ids.length < 2) throw new ModelError(`perplexity needs at least 2 tokens, the text has ${ids.length}`);
  const context = options.context ?? null;
  if (context !== null && (!Number.isInteger(context) || context < 2)) throw new ModelError(`context must be an integer ≥ 2, got ${context}`);
  const segment = options.segment ?? defaultSegment(model.pkg.config.vocabSize);
  const sums = POSITION_BUCKETS.map(() => 0);
  const counts = POSITION_BUCKETS.map(() => 0);
  let total = 0;
  let scored = 0;
  const t0 = performance.now();
  for (let ctxStart = 0; ctxStart < ids.length; ctxStart += context ?? ids.length) {
    const ctxEnd = Math.min(ids.length, ctxStart + (context ?? ids.length));
    await model.reset();
    for (let start = ctxStart; start < ctxEnd; start += segment) {
      throwIfCancelled(options.signal);
      const seg = ids.slice(start, Math.min(ctxEnd, start + segment));
      // Row r predicts the token after seg[r]; the context's last token predicts nothing inside it.
      const rows = seg.map((_, r) => r).filter((r) => start + r + 1 < ctxEnd);
      const logits = await model.forward(seg, rows);
      rows.forEach((r, k) => {
        const position = start + r + 1 - ctxStart; // of the predicted token in its context
        const nll = tokenNll(logits[k], ids[start + r + 1]);
        if (!Number.isFinite(nll)) throw new ModelError(`the model gave a non-finite log-likelihood at token ${start + r + 1} (logits contain NaN or ±Inf)`);
        const b = POSITION_BUCKETS.findIndex((bk) => position >= bk.from && (bk.to === null || position < bk.to));
        sums[b] += nll;
        counts[b] += 1;
        total += nll;
        scored += 1;
      });
      options.onProgress?.(start + seg.length, ids.length);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    ...summary(total, scored),
    streamTokens: ids.length,
    context,
    bitsPerByte: options.textBytes ? total / Math.LN2 / options.textBytes : null,
    buckets: POSITION_BUCKETS.map((b, i) => ({ ...b, ...summary(sums[i], counts[i]) })),
    seconds,
    tokensPerSecond: ids.length / Math.max(seconds, 1e-9),
  };
}

/** Reads a text file for scoring: missing, empty, binary or non-UTF-8 files are one-line errors. */
export function readTextFile(file: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file} (${code ?? String(e)})`);
  }
  if (stat.isDirectory()) throw new ModelError(`${file} is a folder; --file takes a text file`);
  if (stat.size === 0) throw new ModelError(`${file} is empty; perplexity needs text`);
  const bytes = fs.readFileSync(file);
  if (isBinaryFileSync(bytes, bytes.length)) throw new ModelError(`${file} is a binary file; perplexity needs text`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ModelError(`${file} is not valid UTF-8 text`);
  }
}

/** Tokens of a text file as the model reads it (the tokenizer's own special tokens included). */
export function tokenizeTextFile(file: string, tokenizer: TitanTokenizer): { ids: number[]; bytes: number } {
  const text = readTextFile(file);
  const ids = tokenizer.encode(text);
  if (ids.length < 2) throw new ModelError(`${file} encodes to ${ids.length} token${ids.length === 1 ? '' : 's'}; perplexity needs at least 2`);
  return { ids, bytes: Buffer.byteLength(text, 'utf8') };
}
