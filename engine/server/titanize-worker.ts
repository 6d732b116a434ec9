// Worker-thread host of one conversion: titanize() is synchronous and runs for seconds to minutes,
// so the engine runs it here and its main thread stays free for messages, progress and cancellation.
// Cancellation is cooperative (a shared flag checked between tensors, so the package writer removes
// its temporary folder); the parent terminates the worker if it does not stop in time.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import type { PackageDType, PackageQuantization } from '../titanize/package';
import type { TpttSettingsInput } from '../titanize/settings';
import { titanize } from '../titanize/titanize';

export interface TitanizeJobInput {
  source: string;
  out: string;
  input: TpttSettingsInput;
  dtype: PackageDType;
  /** int4 projection weights, or null/absent for the package dtype. */
  quantization?: PackageQuantization | null;
  adapter: string | null;
  /** Int32Array over a SharedArrayBuffer: [0] becomes 1 to cancel. */
  cancelFlag: SharedArrayBuffer;
}

export type TitanizeWorkerMessage =
  | { type: 'progress'; done: number; total: number; message: string }
  | { type: 'done'; packageDir: string; weightsBytes: number }
  | { type: 'error'; name: string; message: string };

class ConversionCancelled extends Error {
  override readonly name = 'CancelledError';
}

async function main(job: TitanizeJobInput): Promise<void> {
  const cancel = new Int32Array(job.cancelFlag);
  const post = (m: TitanizeWorkerMessage) => parentPort!.postMessage(m);
  try {
    let transformTensor: ((name: string, data: Float32Array, shape: number[]) => Float32Array) | undefined;
    const input = { ...job.input };
    let adapterIdentity: { sha256: string } | undefined;
    if (job.adapter) {
      post({ type: 'progress', done: 0, total: 1, message: 'reading the adapter' });
      const { adapterTrainedSettings, loadLoraAdapter, withTrainedSettings } = await import('../titanize/adapter');
      const adapter = loadLoraAdapter(job.adapter, job.source);
      transformTensor = adapter.transformTensor;
      input.lora_config = adapter.loraConfig;
      adapterIdentity = { sha256: adapter.sha256 };
      // What the form leaves blank comes from the settings the adapter was trained under (the form's
      // validation has refused values that contradict them).
      const trained = adapterTrainedSettings(job.adapter);
      if (trained) Object.assign(input, withTrainedSettings(input, trained, (key) => input[key] !== undefined).input);
    }
    let last = 0;
    const { pkg } = titanize(job.source, job.out, input, {
      dtype: job.dtype,
      quantization: job.quantization ?? null,
      transformTensor,
      adapter: adapterIdentity,
      onProgress: (done, total) => {
        if (Atomics.load(cancel, 0) === 1) throw new ConversionCancelled('conversion cancelled');
        const now = Date.now();
        if (now - last > 100 || done === total) {
          last = now;
          post({ type: 'progress', done, total, message: `writing weights ${done}/${total}` });
        }
      },
    });
    const weightsBytes = fs.statSync(path.join(pkg.dir, pkg.manifest.weights.file)).size;
    post({ type: 'done', packageDir: pkg.dir, weightsBytes });
  } catch (e) {
    const err = e as Error;
    post({ type: 'error', name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  }
}

if (parentPort) void main(workerData as TitanizeJobInput);
