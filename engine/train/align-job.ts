// Runs `align` in a worker thread (align-worker.ts) for the engine server: progress events stream back
// (stages, every step's loss, validations, checkpoints) and the abort signal cancels the run, which
// then keeps its checkpoint (resumable with `resume: true` and the same options).
//
//   const report = await runAlignJob(options, { signal, onEvent: (e) => … });
import { ModelError } from '../model/errors';
import { AlignCancelledError, type AlignEvent, type AlignReport } from './align';
import type { AlignJobInput, AlignWorkerMessage } from './align-worker';
import { startWorker } from '../runtime/start-worker';

export type { AlignJobInput } from './align-worker';

export function runAlignJob(input: AlignJobInput, options: { signal?: AbortSignal; onEvent?: (e: AlignEvent) => void } = {}): Promise<AlignReport> {
  const data = { role: 'titan-align', input };
  return new Promise<AlignReport>((resolve, reject) => {
    if (options.signal?.aborted) return reject(new AlignCancelledError('alignment cancelled before it started'));
    const worker = startWorker(__dirname, 'align-worker.js', ['align-worker.ts'], { workerData: data, stdout: true });
    worker.stdout.resume();
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      fn();
      void worker.terminate();
    };
    const onAbort = () => {
      worker.postMessage({ type: 'cancel' });
      // A step finishes first (seconds on a GPU, longer on a CPU); past that, stop the thread.
      killTimer = setTimeout(() => finish(() => reject(new AlignCancelledError('alignment cancelled (the worker did not stop in time; the last checkpoint is kept)'))), 120_000);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: AlignWorkerMessage) => {
      if (m.type === 'event') options.onEvent?.(m.event);
      else if (m.type === 'done') finish(() => resolve(m.report));
      else {
        finish(() => {
          if (m.name === 'CancelledError') reject(new AlignCancelledError(m.message));
          else if (m.name === 'ModelError') reject(new ModelError(m.message));
          else reject(new Error(`alignment failed: ${m.message}`));
        });
      }
    });
    worker.on('error', (e) => finish(() => reject(new Error(`alignment worker crashed: ${e.message}`))));
    worker.on('exit', (code) => finish(() => reject(new Error(`alignment worker exited (code ${code})`))));
  });
}
