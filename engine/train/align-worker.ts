// Worker-thread host of one alignment run (align-job.ts starts it): training keeps onnxruntime busy
// for minutes to hours, and session.run blocks its thread, so the engine's main thread stays free for
// messages, progress and cancellation. Cancellation arrives as a message and is seen between
// micro-steps (the run saves its checkpoint and stops).
import { parentPort, workerData } from 'node:worker_threads';
import { align, type AlignEvent, type AlignOptions, type AlignReport } from './align';

export type AlignJobInput = Omit<AlignOptions, 'signal' | 'onEvent'>;

export type AlignWorkerMessage = { type: 'event'; event: AlignEvent } | { type: 'done'; report: AlignReport } | { type: 'error'; name: string; message: string };

async function main(input: AlignJobInput): Promise<void> {
  const post = (m: AlignWorkerMessage) => parentPort!.postMessage(m);
  const controller = new AbortController();
  parentPort!.on('message', (m: { type?: string }) => {
    if (m?.type === 'cancel') controller.abort();
  });
  try {
    const report = await align({ ...input, signal: controller.signal, onEvent: (event) => post({ type: 'event', event }) });
    post({ type: 'done', report });
  } catch (e) {
    const err = e as Error;
    post({ type: 'error', name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  } finally {
    parentPort!.removeAllListeners('message');
  }
}

if (parentPort && (workerData as { role?: string } | undefined)?.role === 'titan-align') void main((workerData as { input: AlignJobInput }).input);
