// Starting one of the engine's worker threads, bundled or from source, and seeing a job in one through
// to a single outcome (result, error, cancellation, crash).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts `<bundledName>` from `dir` (the bundles sit side by side in dist/engine/), or else the first
 * existing TypeScript source among `sources` (tests run from source). Workers do not inherit tsx's
 * loader, nor honour `--import` in execArgv on Node 20, so a source worker starts from a small boot
 * script that registers tsx's CommonJS hook and then loads the file.
 */
export function startWorker(dir: string, bundledName: string, sources: string[], options: WorkerOptions = {}): Worker {
  const bundled = path.join(dir, bundledName);
  if (fs.existsSync(bundled)) return new Worker(bundled, options);
  const source = sources.map((s) => path.join(dir, s)).find((s) => fs.existsSync(s));
  if (!source) throw new Error(`worker script ${bundledName} not found beside ${dir}; run npm run build`);
  return new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(source)});`, { ...options, eval: true });
}

/** What a job's messages mean and how its worker is asked to stop (superviseWorker). */
export interface WorkerJob<M, R> {
  /** Reads one message from the worker: the job's result or error when the message ends it, else undefined. */
  read(message: M): { result: R } | { error: Error } | undefined;
  /** Asks the worker to stop at its next safe point (a shared flag, a message). */
  requestStop(): void;
  /** How long the worker may take to stop before its thread is terminated. */
  stopGraceMs: number;
  /** The error a cancelled job rejects with. */
  cancelled(): Error;
  /** The errors for a thread that crashed or exited without a result. */
  crashed(e: Error): Error;
  exited(code: number): Error;
  /** Called when the thread has exited after a cancellation (e.g. to remove partial output). */
  afterCancelledExit?(): void;
}

/**
 * Settles once with the worker's result, its error, a cancellation (the signal, then `stopGraceMs`
 * for the worker to stop before the thread is terminated) or the thread's crash or exit; the thread
 * is terminated once the job is settled. A cancelled job settles when its thread has exited (after
 * `afterCancelledExit`), or 5 s after it was terminated if a native call keeps it from exiting.
 */
export function superviseWorker<M, R>(worker: Worker, signal: AbortSignal | undefined, job: WorkerJob<M, R>): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const settle = (outcome: { result: R } | { error: Error }) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      timers.forEach(clearTimeout);
      if ('result' in outcome) resolve(outcome.result);
      else reject(outcome.error);
      void worker.terminate();
    };
    const onAbort = () => {
      job.requestStop();
      timers.push(
        setTimeout(() => {
          void worker.terminate();
          timers.push(setTimeout(() => settle({ error: job.cancelled() }), 5000));
        }, job.stopGraceMs),
      );
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: M) => {
      const outcome = job.read(m);
      if (outcome) settle(outcome);
    });
    worker.on('error', (e) => settle({ error: job.crashed(e) }));
    worker.on('exit', (code) => {
      if (signal?.aborted) job.afterCancelledExit?.();
      settle({ error: signal?.aborted ? job.cancelled() : job.exited(code) });
    });
  });
}
