// Runs one conversion in a worker thread (titanize-worker.ts) with progress and cancellation.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CancelledError } from '../runtime/generate';
import { ModelError } from '../model/errors';
import type { PackageDType, PackageQuantization } from '../titanize/package';
import type { TpttSettingsInput } from '../titanize/settings';
import type { TitanizeJobInput, TitanizeWorkerMessage } from './titanize-worker';
import { startWorker, superviseWorker } from '../runtime/start-worker';

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
  if (options.signal?.aborted) return Promise.reject(new CancelledError());
  // Bundled: dist/engine/titanize-worker.js beside dist/engine/server.js.
  const worker = startWorker(__dirname, 'titanize-worker.js', ['titanize-worker.ts', path.join('server', 'titanize-worker.ts')], { workerData: data, stdout: true });
  worker.stdout.resume();
  return superviseWorker<TitanizeWorkerMessage, TitanizeJobResult>(worker, options.signal, {
    read: (m) => {
      if (m.type === 'progress') options.onProgress?.(m.done, m.total, m.message);
      else if (m.type === 'done') return { result: { packageDir: m.packageDir, weightsBytes: m.weightsBytes, seconds: (performance.now() - t0) / 1000 } };
      else if (m.type === 'error') {
        if (m.name === 'CancelledError') return { error: new CancelledError() };
        return { error: m.name === 'ModelError' ? new ModelError(m.message) : new Error(`conversion failed: ${m.message}`) };
      }
      return undefined;
    },
    // The writer checks the flag between tensors; one tensor can take a while on a big model.
    requestStop: () => Atomics.store(new Int32Array(cancelFlag), 0, 1),
    stopGraceMs: 5000,
    cancelled: () => new CancelledError(),
    crashed: (e) => new Error(`conversion worker crashed: ${e.message}`),
    exited: (code) => new Error(`conversion worker exited (code ${code})`),
    afterCancelledExit: () => removeLeftovers(job.out),
  });
}
