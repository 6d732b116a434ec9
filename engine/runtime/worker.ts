// Worker-thread host of a ModelRunner: `session.run` blocks its thread for the whole run, so the
// engine keeps it off the main thread, which stays free for messages, progress and cancellation.
import { parentPort } from 'node:worker_threads';
import { forwardWithFallback, openRunner, saveStateWithFallback, stateForRunner } from './cpu-fallback';
import type { ModelRunner, RunnerOptions } from './session';
import type { WorkerReply, WorkerRequest } from './worker-protocol';

let runner: ModelRunner | null = null;
let openedWith: RunnerOptions = {};

function reply(msg: WorkerReply, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer);
}

/** The CPU runner that replaced a failed GPU one (runtime/cpu-fallback.ts). */
function swapToCpu(cpu: ModelRunner): void {
  runner = cpu;
  // Before the reply to the request in hand, so the main thread knows the provider by then.
  reply({ type: 'provider-changed', id: 0, provider: cpu.provider });
}

async function handle(msg: WorkerRequest): Promise<void> {
  try {
    switch (msg.type) {
      case 'open': {
        if (runner) await runner.release();
        openedWith = msg.options;
        runner = await openRunner(msg.packageDir, msg.options);
        reply({ type: 'opened', id: msg.id, provider: runner.provider, packageKey: runner.packageKey });
        return;
      }
      case 'forward': {
        if (!runner) throw new Error('no model is open');
        const rows = await forwardWithFallback(runner, msg.ids, msg.rows, openedWith, swapToCpu);
        reply({ type: 'logits', id: msg.id, rows, position: runner.position, stateBytesCopied: runner.stateBytesCopied }, rows.map((r) => r.buffer as ArrayBuffer));
        return;
      }
      case 'reset':
        runner?.reset();
        reply({ type: 'done', id: msg.id, position: 0 });
        return;
      case 'save-state': {
        if (!runner) throw new Error('no model is open');
        const blob = await saveStateWithFallback(runner, openedWith, swapToCpu);
        const copy = new Uint8Array(blob);
        reply({ type: 'state', id: msg.id, blob: copy, position: runner.position }, [copy.buffer]);
        return;
      }
      case 'load-state':
        if (!runner) throw new Error('no model is open');
        runner.loadState(stateForRunner(runner, msg.blob));
        reply({ type: 'done', id: msg.id, position: runner.position });
        return;
      case 'close':
        await runner?.release();
        runner = null;
        reply({ type: 'done', id: msg.id, position: 0 });
        return;
    }
  } catch (e) {
    const err = e as Error;
    reply({ type: 'error', id: msg.id, name: err.name, message: err.message });
  }
}

// Requests are handled strictly in order: each run continues the state the previous one left.
let queue = Promise.resolve();
parentPort!.on('message', (msg: WorkerRequest) => {
  queue = queue.then(() => handle(msg));
});
