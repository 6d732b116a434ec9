// Runs `align` in a worker thread (align-worker.ts) for the engine server: progress events stream back
// (stages, every step's loss, validations, checkpoints) and the abort signal cancels the run, which
// then keeps its checkpoint (resumable with `resume: true` and the same options).
//
//   const report = await runAlignJob(options, { signal, onEvent: (e) => … });
import { ModelError } from '../model/errors';
import { AlignCancelledError, type AlignEvent, type AlignReport } from './align';
import type { AlignJobInput, AlignWorkerMessage } from './align-worker';
import { startWorker, superviseWorker } from '../runtime/start-worker';

export type { AlignJobInput } from './align-worker';

export function runAlignJob(input: AlignJobInput, options: { signal?: AbortSignal; onEvent?: (e: AlignEvent) => void } = {}): Promise<AlignReport> {
  const data = { role: 'titan-align', input };
  if (options.signal?.aborted) return Promise.reject(new AlignCancelledError('alignment cancelled before it started'));
  const worker = startWorker(__dirname, 'align-worker.js', ['align-worker.ts'], { workerData: data, stdout: true });
  worker.stdout.resume();
  return superviseWorker<AlignWorkerMessage, AlignReport>(worker, options.signal, {
    read: (m) => {
      if (m.type === 'event') {
        options.onEvent?.(m.event);
        return undefined;
      }
      if (m.type === 'done') return { result: m.report };
      if (m.name === 'CancelledError') return { error: new AlignCancelledError(m.message) };
      return { error: m.name === 'ModelError' ? new ModelError(m.message) : new Error(`alignment failed: ${m.message}`) };
    },
    // The worker stops after the current step (seconds on a GPU, longer on a CPU) and saves a checkpoint.
    requestStop: () => worker.postMessage({ type: 'cancel' }),
    stopGraceMs: 120_000,
    cancelled: () => new AlignCancelledError('alignment cancelled (the worker did not stop in time; the last checkpoint is kept)'),
    crashed: (e) => new Error(`alignment worker crashed: ${e.message}`),
    exited: (code) => new Error(`alignment worker exited (code ${code})`),
  });
}
