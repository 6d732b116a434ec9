// Workspace memory: the whole workspace streamed into a Titan model's recurrent state, kept current
// by re-reading only the tail of the stream after a change, and questions answered from that state
// together with lexically retrieved files.
//
//   const memory = await WorkspaceMemory.open({ packageDir, workspaces: [root], storageDir });
//   await memory.update({ onProgress });                // build, or bring up to date
//   const { answer, sources } = await memory.ask('where is the retry policy configured?');
//   await memory.close();
//
// The stream (stream.ts) is every discovered file, oldest modification first, as its header line and
// text. Checkpoints (checkpoint-store.ts) hold the state at points along it, each valid while the files
// before it are unchanged; an update resumes from the newest valid one and feeds the rest (ingest.ts).
// Questions run on a copy of the memory state, so they never change what is stored.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';
import { ModelError } from '../model/errors';
import { loadTokenizer, type TitanTokenizer } from '../model/tokenizer';
import { CancelledError, generate } from '../runtime/generate';
import type { ProviderChoice, ProviderReport } from '../runtime/session';
import { DEFAULT_MEMORY_LIMITS, positiveLimit } from '../limits';
import { WorkerModel } from '../runtime/worker-client';
import { readPackage } from '../titanize/package';
import { CheckpointStore, sharedPrefix, type CheckpointEntry } from './checkpoint-store';
import {
  DEFAULT_FILE_HEADER, discoverWorkspace, orderForStream, readWorkspaceFile, WorkspaceFileSkippedError,
  type ContentLimits, type ExcludeGlobs, type WorkspaceDiscovery, type WorkspaceFile, type WorkspaceFolderSpec,
} from './discovery';
import { ingest, ResumeInvalidated, type IngestStart } from './ingest';
import { bestExcerpt, identifierPattern, indexTerms, questionIdentifiers, RetrievalIndex } from './retrieval';
import { encodeStreamText, fileStreamText, segmentSizeFor, streamKey, tokenizerHash } from './stream';

export interface MemoryOptions {
  /** A Titan package (titan titanize … --window W): the recurrent state must stay a fixed size. */
  packageDir: string;
  /** Workspace folders, in order (a multi-root workspace prefixes stream paths with folder names). */
  workspaces: string[];
  /** The engine's storage folder; each (package, workspace folders) pair gets a folder inside it. */
  storageDir: string;
  /** VS Code's files.exclude / search.exclude style globs, on top of .gitignore and .ignore. */
  exclude?: string[] | Record<string, boolean | { when: string }>;
  provider?: ProviderChoice;
  threads?: number;
  /** Tokens between checkpoints (default: engine/limits.ts, as the caps below). */
  checkpointEveryTokens?: number;
  /** Files larger than this are skipped. */
  maxFileBytes?: number;
  /** Bytes of checkpoints kept for this memory; old ones are thinned first. */
  storageCapBytes?: number;
  /** Files of all workspace folders together; discovery stops at the cap. */
  maxFiles?: number;
  /** Tokens of the memory stream; files past the cap are left out. */
  maxStreamTokens?: number;
  /** Told of each notice as it arises (a cap reached, the storage folder re-created); also in MemoryStats.notices. */
  onNotice?: (message: string) => void;
}

export interface IngestProgress {
  phase: 'discover' | 'restore' | 'ingest' | 'checkpoint' | 'done';
  /** Files (and tokens) this update feeds: the tail after the checkpoint it resumed from. */
  filesTotal: number;
  filesDone: number;
  /** An estimate from file sizes until the files are tokenized. */
  tokensTotal: number;
  tokensDone: number;
  tokensPerSecond: number;
  etaSeconds: number | null;
  currentFile?: string;
  /** Absolute stream position (tokens in the memory). */
  position?: number;
}

export interface MemoryStats {
  /** Files in the memory's stream. */
  filesRead: number;
  filesSkipped: { path: string; reason: string; detail: string }[];
  /** Tokens the memory holds (the stream's length). */
  tokensIngested: number;
  /** Tokens this update fed through the model: the tail after the checkpoint it resumed from (all, on a first build). */
  tokensReread: number;
  /** Bytes of one saved state. */
  stateBytes: number;
  /** Bytes of all checkpoints kept. */
  checkpointBytes: number;
  seconds: number;
  /** Ingestion speed of this update (tokens fed / seconds spent feeding and checkpointing). */
  tokensPerSecond: number;
  restoredFromCheckpoint: boolean;
  position: number;
  /** Stream position of the checkpoint this update resumed from (0: from the start). */
  resumedFrom: number;
  /** Files this update fed. */
  filesFed: number;
  checkpoints: number;
  discoverySeconds: number;
  /** The memory's folder inside the storage folder. */
  storage: string;
  /** What the user should know about this update: caps reached, the storage folder re-created after a deletion. */
  notices: string[];
}

export interface AskOptions {
  /** Place the best-matching files verbatim before the question (default true). */
  retrieval?: boolean;
  /** Start from the memory state (default true); false starts from an empty state. */
  memory?: boolean;
  maxNewTokens?: number;
  temperature?: number;
  seed?: number;
  signal?: AbortSignal;
  onText?: (text: string) => void;
  /** Tokens of retrieved files before the question (default: the softmax window less the question and 64, at least half the window). */
  contextBudgetTokens?: number;
}

export interface Source {
  path: string;
  line?: number;
  reason: 'retrieved' | 'identifier';
  snippet?: string;
}

export interface AnswerResult {
  answer: string;
  sources: Source[];
  stats: {
    promptTokens: number;
    answerTokens: number;
    seconds: number;
    /** Answer tokens per second of decoding. */
    tokensPerSecond: number;
    /** Tokens of workspace the state carried (0 with memory: false). */
    memoryTokens: number;
    /** Tokens of retrieved files placed before the question. */
    contextTokens: number;
    prefillSeconds: number;
    stopReason: 'eos' | 'length' | 'cancelled';
  };
}

/** update() was cancelled; the memory keeps (and the next update resumes from) what was checkpointed. */
export class UpdateCancelledError extends CancelledError {
  constructor(readonly stats: MemoryStats) {
    super();
    this.message = `cancelled; the memory keeps ${stats.position} tokens and the next update resumes from there`;
  }
}

const RETRIEVED_FILES = 5;
const IDENTIFIER_SOURCES = 30;
const INDEX_FILE = 'retrieval-index.json';

function hashOf(...parts: string[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}


/** Relative POSIX path of `inner` under `outer`, or null if it is not inside. */
function inside(outer: string, inner: string): string | null {
  const rel = path.relative(outer, inner);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
  return rel.split(path.sep).join('/');
}

export class WorkspaceMemory {
  private discovery: WorkspaceDiscovery | null = null;
  /** The state at the newest checkpoint: what questions start from. */
  private memoryBlob: Uint8Array | null = null;
  private memoryPosition = 0;
  private fresh = false;
  /** When an update last confirmed the memory (an update without changes writes nothing). */
  private lastUpdate: string | null = null;
  private ingesting = false;
  /** Whether the model holds an update's state between its segments (set and read in model turns). */
  private modelHoldsIngestion = false;
  private closed = false;
  private readonly closing = new AbortController();
  private modelQueue: Promise<unknown> = Promise.resolve();
  private updateQueue: Promise<unknown> = Promise.resolve();
  private index: Promise<RetrievalIndex> | null = null;
  /** The last finished update's notices. */
  private lastNotices: string[] = [];

  private constructor(
    private readonly options: MemoryOptions,
    private readonly folders: WorkspaceFolderSpec[],
    private readonly model: WorkerModel,
    private readonly tokenizer: TitanTokenizer,
    private readonly store: CheckpointStore,
    private readonly segmentSize: number,
    private readonly window: number,
    private readonly tptt: { chunk: number; semantics: string | undefined },
    /** The storage folder and the package folder. */
    private readonly ownDirs: string[],
  ) {}

  static async open(options: MemoryOptions): Promise<WorkspaceMemory> {
    if (!Array.isArray(options.workspaces) || options.workspaces.length === 0) throw new ModelError('workspace memory needs at least one workspace folder');
    const roots = options.workspaces.map((w) => path.resolve(w));
    for (const root of roots) {
      let st: fs.Stats;
      try {
        st = fs.statSync(root);
      } catch {
        throw new ModelError(`workspace folder ${root} does not exist`);
      }
      if (!st.isDirectory()) throw new ModelError(`workspace folder ${root} is not a folder`);
    }
    if (!options.storageDir) throw new ModelError('workspace memory needs a storage folder');
    const checkpointEvery = positiveLimit(options.checkpointEveryTokens, 'checkpointEveryTokens', DEFAULT_MEMORY_LIMITS.checkpointEveryTokens);
    const capBytes = positiveLimit(options.storageCapBytes, 'storageCapBytes', DEFAULT_MEMORY_LIMITS.storageCapBytes);
    const limits = {
      maxFileBytes: positiveLimit(options.maxFileBytes, 'maxFileBytes', DEFAULT_MEMORY_LIMITS.maxFileBytes),
      maxFiles: positiveLimit(options.maxFiles, 'maxFiles', DEFAULT_MEMORY_LIMITS.maxFiles),
      maxStreamTokens: positiveLimit(options.maxStreamTokens, 'maxStreamTokens', DEFAULT_MEMORY_LIMITS.maxStreamTokens),
    };

    const packageDir = path.resolve(options.packageDir);
    const pkg = readPackage(packageDir);
    if (pkg.manifest.kind !== 'titan') {
      throw new ModelError(`${packageDir} is a base-model package; workspace memory needs a Titan package (titan titanize <hf-dir> --out <dir> --window 512)`);
    }
    if (pkg.manifest.window === null) {
      throw new ModelError(`${packageDir} has an unbounded softmax window, so its state would grow with the workspace; titanize it again with --window (e.g. --window 512)`);
    }
    const tokenizer = loadTokenizer(packageDir);
    const tptt = pkg.manifest.tptt as { max_chunk_size?: number; semantics?: string } | undefined;
    const chunk = tptt?.max_chunk_size ?? 64;
    const segmentSize = segmentSizeFor(chunk);

    // The storage folder and the package never enter the stream, even when they sit in a workspace.
    const storageDir = path.resolve(options.storageDir);
    const folders: WorkspaceFolderSpec[] = roots.map((root) => {
      const own = [inside(root, storageDir), inside(root, packageDir)].filter((r): r is string => r !== null);
      return own.length ? { path: root, exclude: own.flatMap((r) => [r, `${r}/**`]) } : { path: root };
    });

    // A failing GPU leaves the memory working on the CPU (status().providerReport.fallback says why).
    const model = await WorkerModel.open(packageDir, { provider: options.provider ?? 'auto', threads: options.threads, cpuFallback: true });
    let store: CheckpointStore | null = null;
    try {
      const key = streamKey({ packageKey: model.packageKey, tokenizerHash: tokenizerHash(packageDir), header: DEFAULT_FILE_HEADER, segmentSize });
      const slug = path.basename(roots[0]).replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 40) || 'workspace';
      const memoryDir = path.join(storageDir, `${slug}-${hashOf(model.packageKey, ...roots).slice(0, 12)}`);
      await prepareStorage(storageDir);
      store = await CheckpointStore.open(memoryDir, { streamKey: key, packageKey: model.packageKey, workspaces: roots, minSpacing: checkpointEvery, capBytes, beforeCreate: () => prepareStorage(storageDir) });
      const memory = new WorkspaceMemory({ ...options, ...limits, checkpointEveryTokens: checkpointEvery, storageCapBytes: capBytes }, folders, model, tokenizer, store, segmentSize, pkg.manifest.window, { chunk, semantics: tptt?.semantics }, [storageDir, packageDir]);
      // Reopening restores the newest checkpoint at once; update() then checks it against the files.
      const newest = await store.newestLoadable();
      if (newest) {
        memory.memoryBlob = newest.blob;
        memory.memoryPosition = newest.entry.position;
      }
      await evictOtherMemories(storageDir, memoryDir, capBytes);
      return memory;
    } catch (e) {
      await store?.close();
      await model.release();
      throw e;
    }
  }

  /** Builds the memory, or brings it up to date re-reading only the stream's tail after the first change. */
  update(opts: { signal?: AbortSignal; onProgress?: (p: IngestProgress) => void; changedPaths?: string[] } = {}): Promise<MemoryStats> {
    if (this.closed) return Promise.reject(new ModelError('workspace memory is closed'));
    const run = this.updateQueue.then(() => this.runUpdate(opts));
    this.updateQueue = run.catch(() => undefined);
    return run;
  }

  private async runUpdate(opts: { signal?: AbortSignal; onProgress?: (p: IngestProgress) => void; changedPaths?: string[] }): Promise<MemoryStats> {
    const t0 = performance.now();
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.closing.signal]) : this.closing.signal;
    const progress = opts.onProgress;
    if (signal.aborted) throw new CancelledError();
    this.fresh = false;
    const notices = new Set<string>();
    const notice = (message: string): void => {
      if (notices.has(message)) return;
      notices.add(message);
      this.options.onNotice?.(message);
    };
    await this.recoverStorage(notice);
    const discovery = await this.discover(signal, progress, opts.changedPaths);
    if (discovery.limitReached) notice(discovery.limitReached);
    const discoverySeconds = (performance.now() - t0) / 1000;
    const current = discovery.files.map((f) => ({ path: f.streamPath, sha256: f.sha256 }));

    let limitFiles = Infinity;
    const providerAtStart = this.model.provider.provider;
    let resumedAfterFallback = false;
    for (let attempt = 0; ; attempt++) {
      progress?.({ phase: 'restore', filesTotal: discovery.files.length, filesDone: 0, tokensTotal: 0, tokensDone: 0, tokensPerSecond: 0, etaSeconds: null, position: this.memoryPosition });
      const shared = Math.min(sharedPrefix(this.store.manifest.files, current), limitFiles);
      const resume = await this.store.newestLoadable((c) => c.files + (c.offset > 0 ? 1 : 0) <= shared);
      const needsTruncate = this.store.checkpoints.some((c) => c.position > (resume?.entry.position ?? 0))
        || this.store.manifest.files.length > shared || !this.store.manifest.complete;
      if (needsTruncate) await this.store.truncate(resume?.entry ?? null);
      const start: IngestStart = resume
        ? { file: resume.entry.files, offset: resume.entry.offset, position: resume.entry.position, chain: this.store.manifest.files.slice(0, resume.entry.files + (resume.entry.offset > 0 ? 1 : 0)) }
        : { file: 0, offset: 0, position: 0, chain: [] };
      this.ingesting = true;
      try {
        await this.withModel(async () => {
          if (resume) await this.model.loadState(resume.blob);
          else await this.model.reset();
          this.modelHoldsIngestion = true;
        });
        this.setMemory(resume?.entry ?? null, resume?.blob ?? null);
        const outcome = await ingest({
          model: this.model,
          tokenizer: this.tokenizer,
          store: this.store,
          header: DEFAULT_FILE_HEADER,
          segmentSize: this.segmentSize,
          chunk: this.tptt.chunk,
          semantics: this.tptt.semantics,
          checkpointEvery: this.options.checkpointEveryTokens!,
          maxStreamTokens: this.options.maxStreamTokens!,
          limits: this.limits(),
          signal,
          onProgress: progress ? (p) => progress({ ...p }) : undefined,
          withModel: (fn) => this.withModel(fn),
          onCheckpoint: (entry, blob) => {
            this.setMemory(entry, blob);
            for (const n of this.store.takeNotices()) notice(n);
          },
        }, discovery.files, start);
        if (outcome.limitReached) notice(outcome.limitReached);
        for (const n of this.store.takeNotices()) notice(n);
        // Deleted after the update's last write: the state it ends in goes back on disk now.
        if (!outcome.cancelled) await this.recoverStorage(notice);
        const seconds = (performance.now() - t0) / 1000;
        const stats: MemoryStats = {
          filesRead: outcome.chain.length,
          filesSkipped: [
            ...discovery.skipped.map((s) => ({ path: s.path, reason: s.reason, detail: s.detail })),
            ...outcome.skipped,
          ],
          tokensIngested: outcome.position,
          tokensReread: outcome.tokensFed,
          stateBytes: this.memoryBlob?.byteLength ?? 0,
          checkpointBytes: this.store.checkpointBytes,
          seconds,
          tokensPerSecond: outcome.seconds > 0 ? outcome.tokensFed / outcome.seconds : 0,
          restoredFromCheckpoint: resume !== null,
          position: outcome.position,
          resumedFrom: start.position,
          filesFed: outcome.filesFed,
          checkpoints: this.store.checkpoints.length,
          discoverySeconds,
          storage: this.store.dir,
          notices: [...notices],
        };
        this.lastNotices = [...notices];
        if (outcome.cancelled) throw new UpdateCancelledError(stats);
        this.fresh = true;
        this.lastUpdate = new Date().toISOString();
        progress?.({ phase: 'done', filesTotal: outcome.filesFed, filesDone: outcome.filesFed, tokensTotal: outcome.tokensFed, tokensDone: outcome.tokensFed, tokensPerSecond: stats.tokensPerSecond, etaSeconds: 0, position: outcome.position });
        return stats;
      } catch (e) {
        // The file a mid-file checkpoint sits in changed after discovery: resume before that file.
        if (e instanceof ResumeInvalidated && attempt === 0) {
          limitFiles = e.fileIndex;
          continue;
        }
        // The GPU failed and took the ingestion's state with it; the model now runs on the CPU:
        // resume from the newest checkpoint there (once).
        if (providerAtStart !== 'cpu' && this.model.provider.provider === 'cpu' && !resumedAfterFallback && !signal.aborted) {
          resumedAfterFallback = true;
          notice(`execution provider: ${this.model.provider.fallback ?? 'the GPU failed'}; the update resumes on the CPU from the last checkpoint`);
          continue;
        }
        throw e;
      } finally {
        this.ingesting = false;
        await this.withModel(async () => {
          this.modelHoldsIngestion = false;
        });
      }
    }
  }

  /**
   * The storage folder deleted since the last operation: it is created again, and the state this
   * memory holds (the newest checkpoint's, in memory) is saved into it again, so the update that
   * follows resumes from there instead of reading the workspace from the start.
   */
  private async recoverStorage(notice: (message: string) => void): Promise<void> {
    const recovered = await this.store.recoverIfDeleted();
    if (!recovered) return;
    const { checkpoints, files, complete } = recovered.lost;
    const held = checkpoints.find((c) => c.position === this.memoryPosition);
    if (this.memoryBlob && held && this.memoryPosition > 0) {
      const last = held === checkpoints[checkpoints.length - 1];
      const chain = last && complete ? files : files.slice(0, held.files + (held.offset > 0 ? 1 : 0));
      await this.store.save(this.memoryBlob, { position: held.position, files: held.files, offset: held.offset }, chain, last && complete);
      this.store.takeNotices();
      notice(`${recovered.notice}; the memory's state at token ${held.position} was saved into it again`);
    } else {
      this.setMemory(null, null);
      notice(`${recovered.notice}; the workspace is read again from the start`);
    }
  }

  private setMemory(entry: CheckpointEntry | null, blob: Uint8Array | null): void {
    this.memoryBlob = blob;
    this.memoryPosition = entry?.position ?? 0;
  }

  private limits(): Partial<ContentLimits> {
    return { maxFileSize: this.options.maxFileBytes };
  }

  /** Full discovery, or with changedPaths that all name known files, a re-check of just those. */
  private async discover(signal: AbortSignal, progress: ((p: IngestProgress) => void) | undefined, changedPaths?: string[]): Promise<WorkspaceDiscovery> {
    if (changedPaths && this.discovery) {
      const quick = await this.rediscover(this.discovery, changedPaths);
      if (quick) return (this.discovery = quick);
    }
    try {
      const found = await discoverWorkspace(this.folders, {
        ...this.limits(),
        maxFiles: this.options.maxFiles,
        exclude: this.options.exclude as ExcludeGlobs | undefined,
        signal,
        onProgress: (p) => progress?.({ phase: 'discover', filesTotal: p.seen, filesDone: p.accepted + p.skipped, tokensTotal: 0, tokensDone: 0, tokensPerSecond: 0, etaSeconds: null }),
      });
      return (this.discovery = found);
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw new CancelledError();
      throw e;
    }
  }

  private async rediscover(prev: WorkspaceDiscovery, changedPaths: string[]): Promise<WorkspaceDiscovery | null> {
    const byPath = new Map(prev.files.map((f) => [path.resolve(f.absolutePath), f]));
    const files = new Map(byPath);
    const skipped = [...prev.skipped];
    for (const p of changedPaths) {
      const abs = path.resolve(this.folders[0].path, p);
      // The storage folder and the package are never in the stream (our own checkpoint writes, seen by a watcher).
      if (this.ownDirs.some((d) => inside(d, abs) !== null || d === abs)) continue;
      const base = path.basename(abs);
      if (base === '.gitignore' || base === '.ignore' || abs.split(path.sep).includes('.git')) return null;
      const known = byPath.get(abs);
      if (!known) return null; // a new file, a folder, or a file skipped before: walk again
      try {
        await fsp.lstat(abs);
      } catch {
        files.delete(abs);
        continue;
      }
      try {
        files.set(abs, (await readWorkspaceFile(known, this.limits())).file);
      } catch (e) {
        if (!(e instanceof WorkspaceFileSkippedError)) throw e;
        files.delete(abs);
        skipped.push(e.skip);
      }
    }
    return { ...prev, files: orderForStream([...files.values()]), skipped };
  }

  /** Runs `fn` with the model to itself (ingestion takes it segment by segment, a question for its whole run). */
  private withModel<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.modelQueue.then(fn, fn);
    this.modelQueue = run.catch(() => undefined);
    return run;
  }

  /** Answers from the memory state plus retrieved files; the stored memory is left as it was. */
  async ask(question: string, opts: AskOptions = {}): Promise<AnswerResult> {
    if (this.closed) throw new ModelError('workspace memory is closed');
    if (typeof question !== 'string' || question.trim() === '') throw new ModelError('ask needs a non-empty question');
    const t0 = performance.now();
    const maxNewTokens = opts.maxNewTokens ?? 256;
    if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1) throw new ModelError(`maxNewTokens must be a positive integer, got ${String(opts.maxNewTokens)}`);
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.closing.signal]) : this.closing.signal;
    const tk = this.tokenizer;

    const turn = tk.hasChatTemplate
      ? tk.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true })
      : `\nQuestion: ${question}\nAnswer:`;
    const questionIds = tk.encode(turn, { addSpecialTokens: false });
    // Retrieved files go where the softmax window still sees them when the answer starts.
    const budget = opts.contextBudgetTokens ?? Math.max(this.window - questionIds.length - 64, Math.floor(this.window / 2));

    const discovery = this.discovery ?? (await this.discover(signal, undefined));
    const index = await this.retrievalIndex(discovery);
    const byPath = new Map(discovery.files.map((f) => [f.streamPath, f]));
    const sources: Source[] = [];
    const contextIds: number[] = [];
    // Excerpt weights: identifiers the question names outweigh the other words it shares with a file.
    const terms = new Map<string, number>();
    for (const ident of questionIdentifiers(question)) {
      for (const t of indexTerms(ident.text)) if (!terms.has(t.toLowerCase())) terms.set(t.toLowerCase(), 1);
      terms.set(ident.text.toLowerCase(), ident.strong ? 4 : 1);
    }

    if (opts.retrieval !== false && budget > 0) {
      for (const hit of index.search(question, RETRIEVED_FILES * 3)) {
        const left = budget - contextIds.length;
        if (left < 32 || sources.length >= RETRIEVED_FILES) break;
        const file = byPath.get(hit.path);
        if (!file) continue;
        const text = await readText(file, this.limits());
        if (text === null) continue;
        for (const t of hit.terms) if (!terms.has(t)) terms.set(t, 1);
        let ids = await encodeStreamText(tk, fileStreamText(file.streamPath, text));
        let line = 1;
        if (ids.length > left) {
          // Too long for what is left: the stretch of lines that mentions the question's terms most.
          let maxChars = Math.floor((left * text.length) / ids.length);
          for (let tries = 0; tries < 6 && maxChars >= 64; tries++, maxChars = Math.floor(maxChars * 0.8)) {
            const excerpt = bestExcerpt(text, terms, maxChars);
            ids = await encodeStreamText(tk, fileStreamText(file.streamPath, excerpt.text));
            line = excerpt.startLine;
            if (ids.length <= left) break;
          }
          if (ids.length > left) continue;
        }
        contextIds.push(...ids);
        sources.push({ path: file.streamPath, line, reason: 'retrieved', snippet: snippetAt(text, line) });
      }
    }

    // Where the question's identifiers occur (reported whether or not retrieval placed files).
    // Plain words count only when the question names nothing shaped like code.
    let found = 0;
    const named = questionIdentifiers(question);
    const idents = named.some((i) => i.strong) ? named.filter((i) => i.strong) : named;
    for (const ident of idents) {
      if (found >= IDENTIFIER_SOURCES) break;
      const candidates = index.candidates(ident.text);
      // A plain word found in many files is not an identifier worth pointing at.
      if (!ident.strong && (candidates.length === 0 || candidates.length > Math.max(3, index.documentCount * 0.05))) continue;
      const pattern = identifierPattern(ident.text);
      for (const p of candidates.slice(0, 50)) {
        const file = byPath.get(p);
        const text = file ? await readText(file, this.limits()) : null;
        if (text === null) continue;
        let perFile = 0;
        const lines = text.split('\n');
        for (let i = 0; i < lines.length && perFile < 3 && found < IDENTIFIER_SOURCES; i++) {
          if (!pattern.test(lines[i])) continue;
          sources.push({ path: p, line: i + 1, reason: 'identifier', snippet: lines[i].trim().slice(0, 200) });
          perFile++;
          found++;
        }
        if (found >= IDENTIFIER_SOURCES) break;
      }
    }

    const promptIds = [...contextIds, ...questionIds];
    const specialIds = [...tk.specialTokens.all.values()];
    const { result, memoryTokens } = await this.withModel(async () => {
      // During an update the model holds the ingestion's state: answer from it and put it back.
      const during = this.modelHoldsIngestion ? await this.model.saveState() : null;
      try {
        if (opts.memory === false) await this.model.reset();
        else if (!during) {
          if (this.memoryBlob) await this.model.loadState(this.memoryBlob);
          else await this.model.reset();
        }
        const memoryTokens = this.model.position;
        const result = await generate(this.model, tk, promptIds, {
          maxNewTokens,
          temperature: opts.temperature ?? 0,
          seed: opts.seed,
          signal,
          onText: opts.onText,
          segmentSize: this.segmentSize,
          stopIds: [...new Set([...tk.eosTokenIds, ...specialIds])],
          // A GPU lost mid-answer: the same starting state again, now on the CPU.
          restart: async () => {
            if (opts.memory === false) await this.model.reset();
            else if (during) await this.model.loadState(during);
            else if (this.memoryBlob) await this.model.loadState(this.memoryBlob);
            else await this.model.reset();
          },
        });
        return { result, memoryTokens };
      } finally {
        if (during) await this.model.loadState(during);
      }
    });
    return {
      answer: result.text,
      sources,
      stats: {
        promptTokens: promptIds.length,
        answerTokens: result.tokens.length,
        seconds: (performance.now() - t0) / 1000,
        tokensPerSecond: result.decodeSeconds > 0 ? result.tokens.length / result.decodeSeconds : 0,
        memoryTokens,
        contextTokens: contextIds.length,
        prefillSeconds: result.prefillSeconds,
        stopReason: result.stopReason,
      },
    };
  }

  /** The lexical index, loaded or built at the first question and refreshed from the file hashes. */
  private retrievalIndex(discovery: WorkspaceDiscovery): Promise<RetrievalIndex> {
    const file = path.join(this.store.dir, INDEX_FILE);
    const previous = this.index ?? RetrievalIndex.load(file).then((loaded) => loaded ?? RetrievalIndex.empty());
    const next = previous.then(async (index) => {
      await index.refresh(discovery.files, async (f) => {
        try {
          const read = await readWorkspaceFile(f, this.limits());
          return { text: read.text, sha256: read.file.sha256 };
        } catch (e) {
          if (e instanceof WorkspaceFileSkippedError) return null;
          throw e;
        }
      });
      // A lost index is rebuilt at the next question: failing to save it must not fail this one.
      await index.save(file).catch((e: unknown) => this.options.onNotice?.(`the retrieval index was not saved (${(e as Error).message}); it is rebuilt when needed`));
      return index;
    });
    this.index = next.catch(() => RetrievalIndex.empty());
    return next;
  }

  status(): { position: number; files: number; fresh: boolean; lastUpdate: string | null; packageKey: string; provider: string; providerReport: ProviderReport; updating: boolean; checkpoints: number; checkpointBytes: number; storage: string; notices: string[] } {
    const last = this.store.last;
    const filesInState = last ? last.files + (last.offset > 0 ? 1 : 0) : 0;
    return {
      position: this.memoryPosition,
      files: filesInState,
      fresh: this.fresh,
      lastUpdate: this.lastUpdate ?? this.store.manifest.lastUpdate,
      packageKey: this.model.packageKey,
      provider: this.model.provider.provider,
      providerReport: { ...this.model.provider },
      updating: this.ingesting,
      checkpoints: this.store.checkpoints.length,
      checkpointBytes: this.store.checkpointBytes,
      storage: this.store.dir,
      notices: [...this.lastNotices],
    };
  }

  /** Cancels a running update (its progress is checkpointed), then releases the model and the storage lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    await this.updateQueue;
    await this.modelQueue;
    await this.model.release();
    await this.store.close();
  }
}

async function readText(file: WorkspaceFile, limits: Partial<ContentLimits>): Promise<string | null> {
  try {
    return (await readWorkspaceFile(file, limits)).text;
  } catch (e) {
    if (e instanceof WorkspaceFileSkippedError) return null;
    throw e;
  }
}

function snippetAt(text: string, line: number): string {
  const lines = text.split('\n');
  for (let i = line - 1; i < lines.length; i++) if (lines[i].trim()) return lines[i].trim().slice(0, 200);
  return '';
}

/** Creates the storage folder, with a .gitignore so it never shows up in a repository it sits in. */
async function prepareStorage(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true });
    const ignore = path.join(dir, '.gitignore');
    if (!fs.existsSync(ignore)) await fsp.writeFile(ignore, '# Titan workspace memory (model states); safe to delete.\n*\n');
  } catch (e) {
    throw new ModelError(`cannot create the memory storage folder ${dir}: ${(e as Error).message}`);
  }
}

/**
 * Other memories in the same storage folder (other models, other folder sets) are deleted, least
 * recently updated first, while all of them together exceed the cap; ones in use are left alone.
 */
async function evictOtherMemories(storageDir: string, own: string, capBytes: number): Promise<void> {
  const dirs: { dir: string; bytes: number; mtime: number }[] = [];
  let total = 0;
  for (const name of await fsp.readdir(storageDir).catch(() => [] as string[])) {
    const dir = path.join(storageDir, name);
    const manifest = path.join(dir, 'manifest.json');
    let mtime: number;
    try {
      mtime = (await fsp.stat(manifest)).mtimeMs;
    } catch {
      continue;
    }
    let bytes = 0;
    for (const f of await fsp.readdir(dir).catch(() => [] as string[])) bytes += (await fsp.stat(path.join(dir, f)).catch(() => null))?.size ?? 0;
    total += bytes;
    if (path.resolve(dir) !== path.resolve(own)) dirs.push({ dir, bytes, mtime });
  }
  dirs.sort((a, b) => a.mtime - b.mtime);
  for (const d of dirs) {
    if (total <= capBytes) break;
    if (await lockfile.check(d.dir, { lockfilePath: path.join(d.dir, '.lock'), realpath: false }).catch(() => true)) continue;
    await fsp.rm(d.dir, { recursive: true, force: true });
    total -= d.bytes;
  }
}
