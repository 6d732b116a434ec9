// Prefill in segments, then token-by-token decoding with sampling, streaming and cancellation.
import { ModelError } from '../model/errors';
import type { TitanTokenizer } from '../model/tokenizer';
import type { ForwardModel } from './worker-client';
import { seededRandom } from '../util/random';

export { seededRandom };

export class CancelledError extends Error {
  override readonly name = 'CancelledError';
  constructor() {
    super('cancelled');
  }
}

export function throwIfCancelled(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CancelledError();
}

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Picks the next token from logits: greedy at temperature 0, else softmax sampling with top-k / top-p. */
export function sampleToken(logits: Float32Array, options: SamplingOptions, random: () => number): number {
  const temperature = options.temperature ?? 0;
  if (!(temperature > 0)) return argmax(logits);
  let order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  if (options.topK && options.topK > 0) order = order.slice(0, options.topK);
  const maxLogit = logits[order[0]];
  let probs = order.map((i) => Math.exp((logits[i] - maxLogit) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  if (options.topP !== undefined && options.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < options.topP * total) acc += probs[keep++];
    order = order.slice(0, Math.max(1, keep));
    probs = probs.slice(0, Math.max(1, keep));
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = random() * total;
  for (let i = 0; i < order.length; i++) {
    r -= probs[i];
    if (r <= 0) return order[i];
  }
  return order[order.length - 1];
}

export interface PrefillOptions {
  /** Tokens per run; runs are additionally bounded by what the package's graph accepts. */
  segmentSize?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Feeds `ids` after the model's current state; returns the logits after the last token. */
export async function prefill(model: ForwardModel, ids: readonly number[], options: PrefillOptions = {}): Promise<Float32Array> {
  if (ids.length === 0) throw new ModelError('nothing to feed: the prompt encodes to no tokens');
  const size = Math.max(1, options.segmentSize ?? 512);
  let last: Float32Array | null = null;
  for (let start = 0; start < ids.length; start += size) {
    throwIfCancelled(options.signal);
    const seg = ids.slice(start, start + size);
    [last] = await model.forward(seg, [seg.length - 1]);
    options.onProgress?.(Math.min(start + size, ids.length), ids.length);
  }
  return last!;
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Token ids that end generation (from generation_config and the tokenizer by default). */
  stopIds?: number[];
  signal?: AbortSignal;
  segmentSize?: number;
  /** Receives decoded text as it becomes stable. */
  onText?: (text: string) => void;
  /**
   * Puts the model back in the state the prompt continues from. With it, a GPU that fails mid-answer
   * and takes the state with it (device-resident state; the worker has moved to the CPU) does not
   * end the answer: the state is restored, the prompt and the tokens generated so far are fed again
   * on the CPU, and decoding goes on where it stopped, the streamed text unbroken.
   */
  restart?: () => Promise<void>;
}

export interface GenerateResult {
  tokens: number[];
  text: string;
  stopReason: 'eos' | 'length' | 'cancelled';
  promptTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
}

export async function generate(model: ForwardModel, tokenizer: TitanTokenizer, promptIds: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
  const stop = new Set(options.stopIds ?? tokenizer.eosTokenIds);
  const random = seededRandom(options.seed ?? 0);
  const decoder = tokenizer.streamDecoder({ skipSpecialTokens: true });
  const tokens: number[] = [];
  const t0 = performance.now();
  let stopReason: GenerateResult['stopReason'] = 'length';
  const startedOn = model.provider.provider;
  let replayed = false;
  /** After a failed run: the replay described at `restart`, when the failure was the GPU's; else the error again. */
  const recover = async (e: unknown): Promise<Float32Array> => {
    if (replayed || !options.restart || startedOn === 'cpu' || model.provider.provider !== 'cpu' || e instanceof CancelledError) throw e;
    replayed = true;
    await options.restart();
    return prefill(model, [...promptIds, ...tokens], { segmentSize: options.segmentSize, signal: options.signal });
  };
  let logits: Float32Array;
  try {
    logits = await prefill(model, promptIds, { segmentSize: options.segmentSize, signal: options.signal }).catch(recover);
  } catch (e) {
    if (e instanceof CancelledError) return { tokens, text: '', stopReason: 'cancelled', promptTokens: promptIds.length, prefillSeconds: (performance.now() - t0) / 1000, decodeSeconds: 0 };
    throw e;
  }
  const t1 = performance.now();
  while (tokens.length < options.maxNewTokens) {
    if (options.signal?.aborted) {
      stopReason = 'cancelled';
      break;
    }
    const next = sampleToken(logits, options, random);
    if (stop.has(next)) {
      stopReason = 'eos';
      break;
    }
    tokens.push(next);
    const piece = decoder.push(next);
    if (piece) options.onText?.(piece);
    if (tokens.length >= options.maxNewTokens) break;
    try {
      [logits] = await model.forward([next], [0]);
    } catch (e) {
      try {
        logits = await recover(e);
      } catch (again) {
        if (!(again instanceof CancelledError)) throw again;
        stopReason = 'cancelled';
        break;
      }
    }
  }
  const rest = decoder.flush();
  if (rest) options.onText?.(rest);
  return { tokens, text: decoder.text, stopReason, promptTokens: promptIds.length, prefillSeconds: (t1 - t0) / 1000, decodeSeconds: (performance.now() - t1) / 1000 };
}
