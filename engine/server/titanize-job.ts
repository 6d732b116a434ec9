// Runs one conversion in a worker thread (titanize-worker.ts) with progress and cancellation.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancelledError } from '../runtime/generate';
import { ModelError } from '../model/errors';
import type { PackageDType, PackageQuantization } from '../titanize/package';
import type { TpttSettingsInput } from '../titanize/settings';
import type { TitanizeJobInput, TitanizeWorkerMessage } from './titanize-worker';
import { startWorker } from '../runtime/start-worker';

export interface TitanizeJob {
  source: string;
  out: string;
  input: TpttSettingsInput;
  dtype: PackageDType;
  /** int4 projection weights (the form's precision "int4"), or null/absent. */
  quantization?: PackageQuantization | null;
  adapter: string | null;
}

export interface TitanizeJobResult {
  packageDir: string;
  weightsBytes: number;
  seconds: number;
}

/** Removes what a terminated conversion left: the package writer's temporary sibling folders. */
function removeLeftovers(out: string): void {
  const dir = path.dirname(path.resolve(out));
  const prefix = `${path.basename(path.resolve(out))}.tmp-${process.pid}-`;
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) if (name.startsWith(prefix)) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
}

export function runTitanizeJob(
  job: TitanizeJob,
  options: { signal?: AbortSignal; onProgress?: (done: number, total: number, message: string) => void } = {},
): Promise<TitanizeJobResult> {
  const t0 = performance.now();
  const cancelFlag = new SharedArrayBuffer(4);
  const data: TitanizeJobInput = { ...job, cancelFlag };
  return new Promise<TitanizeJobResult>((resolve, reject) => {
    if (options.signal?.aborted) return reject(new CancelledError());
    // Bundled: dist/engine/titanize-worker.js beside dist/engine/server.js.
    const worker = startWorker(__dirname, 'titanize-worker.js', ['titanize-worker.ts', path.join('server', 'titanize-worker.ts')], { workerData: data, stdout: true });
    worker.stdout.resume();
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      fn();
    };
    const onAbort = () => {
      Atomics.store(new Int32Array(cancelFlag), 0, 1);
      // A tensor can take a while on a big model; give it a few seconds, then stop the thread.
      killTimer = setTimeout(() => void worker.terminate(), 5000);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: TitanizeWorkerMessage) => {
      if (m.type === 'progress') options.onProgress?.(m.done, m.total, m.message);
      else if (m.type === 'done') finish(() => resolve({ packageDir: m.packageDir, weightsBytes: m.weightsBytes, seconds: (performance.now() - t0) / 1000 }));
      else if (m.type === 'error') {
        finish(() => {
          if (m.name === 'CancelledError') reject(new CancelledError());
          else if (m.name === 'ModelError') reject(new ModelError(m.message));
          else reject(new Error(`conversion failed: ${m.message}`));
        });
      }
    });
    worker.on('error', (e) => finish(() => reject(new Error(`conversion worker crashed: ${e.message}`))));
    worker.on('exit', (code) => {
      if (options.signal?.aborted) removeLeftovers(job.out);
      finish(() => (options.signal?.aborted ? reject(new CancelledError()) : reject(new Error(`conversion worker exited (code ${code})`))));
    });
  });
}
