// Schedules the workspace memory's updates around questions.
//
// Updates run one at a time in the background: file changes accumulate and the next update takes
// them all. A question never waits for an update to finish (the memory answers from the state as it
// is); one that preempts an update has it queued again with the same paths. Explicit update requests
// wait until an update that covers them has completed, whatever preemptions happen in between.
import type { MemoryProgress, MemoryStatsInfo, MemoryStatusInfo } from '../../protocol/engine';
import { CancelledError } from '../runtime/generate';
import type { MemoryBackend } from './memory-backend';
import { errorText, log } from './log';

interface Waiter {
  gen: number;
  resolve: (stats: MemoryStatsInfo) => void;
  reject: (e: Error) => void;
  onProgress?: (p: MemoryProgress) => void;
}

interface Run {
  ctrl: AbortController;
  coversGen: number;
  paths: string[] | undefined;
  done: Promise<void>;
}

const PREEMPT = 'preempt';

export class MemoryHost {
  private pending = new Set<string>();
  private fullPending = false;
  private gen = 0;
  private running: Run | null = null;
  private askChain: Promise<unknown> = Promise.resolve();
  private waiters: Waiter[] = [];
  private debounce: NodeJS.Timeout | null = null;
  private closed = false;
  progress: MemoryProgress | null = null;
  lastError: string | null = null;
  lastStats: MemoryStatsInfo | null = null;

  constructor(
    readonly backend: MemoryBackend,
    private readonly onChange: () => void,
  ) {}

  get updating(): boolean {
    return this.running !== null;
  }

  /** Queues an update (all files when `changedPaths` is absent); returns its generation for waitFor. */
  schedule(changedPaths?: readonly string[], options: { debounceMs?: number } = {}): number {
    if (changedPaths === undefined) this.fullPending = true;
    else for (const p of changedPaths) this.pending.add(p);
    const gen = ++this.gen;
    if (this.debounce) clearTimeout(this.debounce);
    if (options.debounceMs) this.debounce = setTimeout(() => ((this.debounce = null), this.pump()), options.debounceMs);
    else {
      this.debounce = null;
      queueMicrotask(() => this.pump());
    }
    return gen;
  }

  /** Resolves when an update covering generation `gen` completes; `signal` cancels the running update. */
  waitFor(gen: number, options: { signal?: AbortSignal; onProgress?: (p: MemoryProgress) => void } = {}): Promise<MemoryStatsInfo> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { gen, resolve, reject, onProgress: options.onProgress };
      this.waiters.push(waiter);
      options.signal?.addEventListener(
        'abort',
        () => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          // The caller gave up on this update: stop it rather than let it run unobserved.
          if (this.running && this.running.coversGen >= gen) this.running.ctrl.abort('cancel');
          this.pending.clear();
          this.fullPending = false;
          reject(new CancelledError());
        },
        { once: true },
      );
    });
  }

  /**
   * Runs `fn` (a question); questions run one at a time. A running update is not interrupted: the
   * memory answers from the ingestion's state between two of its segments, and ingestion goes on.
   * With `preempt`, the update is stopped first and queued again (for a model too slow to share).
   */
  async exclusive<R>(fn: () => Promise<R>, options: { preempt?: boolean } = {}): Promise<R> {
    try {
      const turn = this.askChain.then(async () => {
        const run = this.running;
        if (run && options.preempt) {
          run.ctrl.abort(PREEMPT);
          await run.done;
        }
        return fn();
      });
      this.askChain = turn.catch(() => undefined);
      return await turn;
    } finally {
      queueMicrotask(() => this.pump());
    }
  }

  /** Stops the running update and drops queued ones; their waiters are rejected as cancelled. */
  cancelAll(): number {
    const n = this.running ? 1 : 0;
    this.pending.clear();
    this.fullPending = false;
    this.running?.ctrl.abort('cancel');
    return n;
  }

  status(): MemoryStatusInfo {
    const s = this.backend.status();
    return {
      position: s.position,
      files: s.files,
      fresh: s.fresh && !this.running && !this.fullPending && this.pending.size === 0,
      lastUpdate: s.lastUpdate,
      ...(s.notices?.length ? { notices: s.notices } : {}),
      updating: this.progress ?? (this.running ? { phase: 'discover', filesDone: 0, filesTotal: 0, tokens: 0, tokensTotal: 0, position: null, tokensPerSecond: 0, etaSeconds: null, currentFile: null, message: 'starting' } : null),
      error: this.lastError,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    const run = this.running;
    run?.ctrl.abort('cancel');
    await run?.done;
    for (const w of this.waiters.splice(0)) w.reject(new CancelledError());
    await this.backend.close();
  }

  private pump(): void {
    if (this.closed || this.running || this.debounce) return;
    if (!this.fullPending && this.pending.size === 0) return;
    const paths = this.fullPending ? undefined : [...this.pending];
    this.fullPending = false;
    this.pending.clear();
    const ctrl = new AbortController();
    const run: Run = { ctrl, coversGen: this.gen, paths, done: Promise.resolve() };
    this.running = run;
    this.onChange();
    run.done = this.execute(run).finally(() => {
      this.running = null;
      this.progress = null;
      this.onChange();
      queueMicrotask(() => this.pump());
    });
  }

  private async execute(run: Run): Promise<void> {
    const { ctrl } = run;
    const settle = (fn: (w: Waiter) => void) => {
      const ready = this.waiters.filter((w) => w.gen <= run.coversGen);
      this.waiters = this.waiters.filter((w) => w.gen > run.coversGen);
      ready.forEach(fn);
    };
    const requeue = () => {
      if (run.paths === undefined) this.fullPending = true;
      else for (const p of run.paths) this.pending.add(p);
      // Waiters of this run now wait for the next one.
      for (const w of this.waiters) if (w.gen <= run.coversGen) w.gen = this.gen;
    };
    try {
      log.debug(`memory update: ${run.paths ? `${run.paths.length} changed path(s)` : 'whole workspace'}`);
      const stats = await this.backend.update({
        signal: ctrl.signal,
        changedPaths: run.paths,
        onProgress: (p) => {
          this.progress = p;
          for (const w of this.waiters) if (w.gen <= run.coversGen) w.onProgress?.(p);
          this.onChange();
        },
      });
      if (ctrl.signal.aborted) {
        if (ctrl.signal.reason === PREEMPT) requeue();
        else settle((w) => w.reject(new CancelledError()));
        return;
      }
      this.lastStats = stats;
      this.lastError = null;
      log.info(`memory updated: ${stats.filesRead} files read, ${stats.tokensIngested} tokens (${stats.tokensReread} re-read) in ${stats.seconds.toFixed(1)} s`);
      settle((w) => w.resolve(stats));
    } catch (e) {
      if (ctrl.signal.aborted) {
        if (ctrl.signal.reason === PREEMPT) requeue();
        else settle((w) => w.reject(new CancelledError()));
        return;
      }
      this.lastError = errorText(e);
      log.error(`memory update failed: ${this.lastError}`);
      settle((w) => w.reject(e instanceof Error ? e : new Error(String(e))));
    }
  }
}
