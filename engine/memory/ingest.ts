// Feeding the stream's tail through the model: file by file (the next file is read and tokenized
// while the model runs the current one), in segments cut where stream.ts says, with checkpoints
// every `checkpointEvery` tokens and at the end, progress after each segment, and cancellation
// between segments (the position reached is checkpointed first, so no finished work is lost).
import type { TitanTokenizer } from '../model/tokenizer';
import type { ForwardModel } from '../runtime/worker-client';
import type { CheckpointEntry, CheckpointStore, ChainFile } from './checkpoint-store';
import { readWorkspaceFile, WorkspaceFileSkippedError, type ContentLimits, type WorkspaceFile } from './discovery';
import { encodeStreamText, fileStreamText, segmentCalls, segmentEnd } from './stream';

export interface IngestProgressEvent {
  phase: 'ingest' | 'checkpoint';
  filesTotal: number;
  filesDone: number;
  tokensTotal: number;
  tokensDone: number;
  tokensPerSecond: number;
  etaSeconds: number | null;
  currentFile?: string;
  /** Absolute stream position. */
  position: number;
}

export interface ReadSkip {
  path: string;
  reason: string;
  detail: string;
}

export interface IngestContext {
  model: ForwardModel;
  tokenizer: TitanTokenizer;
  store: CheckpointStore;
  header: string;
  segmentSize: number;
  /** The package's max_chunk_size and semantics (how a segment is cut into forward calls). */
  chunk: number;
  semantics: string | undefined;
  checkpointEvery: number;
  /** The stream stops before a file that would take it past this many tokens (engine/limits.ts). */
  maxStreamTokens: number;
  limits: Partial<ContentLimits>;
  signal?: AbortSignal;
  onProgress?: (p: IngestProgressEvent) => void;
  /** Runs `fn` while holding the model (questions may use it between segments and restore its state). */
  withModel<T>(fn: () => Promise<T>): Promise<T>;
  /** Told of every checkpoint written, with its state. */
  onCheckpoint(entry: CheckpointEntry, blob: Uint8Array): void;
}

export interface IngestStart {
  /** Index into `files` of the first file to feed. */
  file: number;
  /** Tokens of that file already in the state (a checkpoint inside it). */
  offset: number;
  position: number;
  /** The stream before the start (including the partly fed file when offset > 0). */
  chain: ChainFile[];
}

export interface IngestOutcome {
  position: number;
  chain: ChainFile[];
  filesFed: number;
  tokensFed: number;
  skipped: ReadSkip[];
  /** Set when files were left out at the stream's token cap: the notice for the user. */
  limitReached: string | null;
  cancelled: boolean;
  /** Seconds spent in forward runs and checkpoint writes. */
  seconds: number;
}

/** Thrown when the file a checkpoint sits inside changed after discovery: restart from its start. */
export class ResumeInvalidated extends Error {
  constructor(readonly fileIndex: number) {
    super('the file a checkpoint sits inside changed while the update ran');
  }
}

type Prepared =
  | { ok: true; file: WorkspaceFile; ids: number[] }
  | { ok: false; skip: ReadSkip };

async function prepare(ctx: IngestContext, file: WorkspaceFile): Promise<Prepared> {
  try {
    const read = await readWorkspaceFile(file, ctx.limits);
    const ids = await encodeStreamText(ctx.tokenizer, fileStreamText(file.streamPath, read.text, ctx.header));
    return { ok: true, file: read.file, ids };
  } catch (e) {
    if (e instanceof WorkspaceFileSkippedError) return { ok: false, skip: { path: e.skip.path, reason: e.skip.reason, detail: `${e.skip.detail} (when read for ingestion)` } };
    throw e;
  }
}

export async function ingest(ctx: IngestContext, files: readonly WorkspaceFile[], start: IngestStart): Promise<IngestOutcome> {
  const { model, store, segmentSize } = ctx;
  const chain = start.chain.map((f) => ({ ...f }));
  let position = start.position;
  let lastSaved = store.last?.position ?? 0;
  const skipped: ReadSkip[] = [];
  let filesFed = 0;
  let tokensFed = 0;
  let leftOut = 0;
  let busySeconds = 0;
  const began = performance.now();

  // Progress: totals are estimates from file sizes until the files are tokenized.
  let bytesLeft = files.slice(start.file).reduce((a, f) => a + f.size, 0);
  let tokensPerByte = 0.3;
  let bytesSeen = 0;
  let tokensSeen = 0;
  let lastEmit = 0;
  let currentFile: string | undefined;
  let currentLeft = 0;
  const emit = (phase: IngestProgressEvent['phase'], force = false): void => {
    if (!ctx.onProgress) return;
    const now = performance.now();
    if (!force && now - lastEmit < 100) return;
    lastEmit = now;
    const elapsed = (now - began) / 1000;
    const rate = elapsed > 0 ? tokensFed / elapsed : 0;
    const tokensTotal = tokensFed + currentLeft + Math.round(bytesLeft * tokensPerByte);
    ctx.onProgress({
      phase,
      filesTotal: files.length - start.file,
      filesDone: filesFed + skipped.length,
      tokensTotal,
      tokensDone: tokensFed,
      tokensPerSecond: rate,
      etaSeconds: rate > 0 ? (tokensTotal - tokensFed) / rate : null,
      currentFile,
      position,
    });
  };

  const checkpoint = async (at: { files: number; offset: number }, complete: boolean): Promise<void> => {
    emit('checkpoint', true);
    const t0 = performance.now();
    const blob = await ctx.withModel(async () => model.saveState());
    const entry = await store.save(blob, { position, ...at }, chain, complete);
    busySeconds += (performance.now() - t0) / 1000;
    lastSaved = position;
    ctx.onCheckpoint(entry, blob);
  };
  /** Where the state stands: after `chain.length` files, or inside the last one. */
  const here = (fileDone: boolean, offset: number): { files: number; offset: number } => (fileDone ? { files: chain.length, offset: 0 } : { files: chain.length - 1, offset });

  let next: Promise<Prepared> | null = files.length > start.file ? prepare(ctx, files[start.file]) : null;
  for (let i = start.file; i < files.length; i++) {
    if (leftOut > 0) {
      // Past the token cap: the rest is not even read.
      leftOut++;
      bytesLeft -= files[i].size;
      skipped.push({ path: files[i].streamPath, reason: 'token-limit', detail: `the stream is at its cap of ${ctx.maxStreamTokens} tokens` });
      continue;
    }
    const prepared = await next!;
    next = i + 1 < files.length ? prepare(ctx, files[i + 1]) : null;
    next?.catch(() => undefined); // awaited on the next turn; a failure is reported there
    bytesLeft -= files[i].size;
    if (!prepared.ok) {
      if (i === start.file && start.offset > 0) throw new ResumeInvalidated(i);
      skipped.push(prepared.skip);
      continue;
    }
    const { file, ids } = prepared;
    // The token cap: this file and every later one stay out (a resumed file was in before).
    if (!(i === start.file && start.offset > 0) && position + ids.length > ctx.maxStreamTokens) {
      leftOut++;
      next = null;
      skipped.push({ path: file.streamPath, reason: 'token-limit', detail: `${ids.length} tokens would take the stream past its cap of ${ctx.maxStreamTokens} tokens` });
      continue;
    }
    bytesSeen += file.size;
    tokensSeen += ids.length;
    tokensPerByte = tokensSeen / Math.max(1, bytesSeen);
    let offset = 0;
    if (i === start.file && start.offset > 0) {
      const resumed = chain[chain.length - 1];
      if (!resumed || resumed.path !== file.streamPath || resumed.sha256 !== file.sha256 || resumed.tokens !== ids.length) throw new ResumeInvalidated(i);
      offset = start.offset;
    } else {
      chain.push({ path: file.streamPath, sha256: file.sha256, tokens: ids.length });
    }
    currentFile = file.streamPath;
    const fileStart = position - offset;
    while (offset < ids.length) {
      currentLeft = ids.length - offset;
      if (ctx.signal?.aborted) {
        if (position > lastSaved) await checkpoint(here(false, offset), false);
        return { position, chain, filesFed, tokensFed, skipped, limitReached: null, cancelled: true, seconds: busySeconds };
      }
      const end = segmentEnd(position, fileStart + ids.length, segmentSize) - fileStart;
      const t0 = performance.now();
      await ctx.withModel(async () => {
        let at = offset;
        for (const size of segmentCalls(end - offset, ctx.chunk, ctx.semantics)) {
          await model.forward(ids.slice(at, at + size), [size - 1]);
          at += size;
        }
      });
      busySeconds += (performance.now() - t0) / 1000;
      tokensFed += end - offset;
      position += end - offset;
      offset = end;
      currentLeft = ids.length - offset;
      if (offset < ids.length && position - lastSaved >= ctx.checkpointEvery) await checkpoint(here(false, offset), false);
      emit('ingest');
    }
    filesFed++;
    if (position - lastSaved >= ctx.checkpointEvery && i + 1 < files.length) await checkpoint(here(true, 0), false);
  }
  currentFile = undefined;
  if (position > lastSaved || store.last?.position !== position) await checkpoint(here(true, 0), true);
  else await store.markComplete(chain);
  emit('ingest', true);
  const limitReached = leftOut > 0
    ? `the memory stream reached its cap of ${ctx.maxStreamTokens} tokens (titan.memory.maxTokens, --max-tokens): ${leftOut === 1 ? 'the newest file is' : `the ${leftOut} newest files are`} left out of the memory (retrieval still finds them)`
    : null;
  return { position, chain, filesFed, tokensFed, skipped, limitReached, cancelled: false, seconds: busySeconds };
}
