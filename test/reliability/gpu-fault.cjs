// Preloaded (`node --require`) into an engine process by the GPU fault test, and inherited by its
// worker threads, where the model runs: wraps onnxruntime-node's InferenceSession.create so that
// sessions on a GPU provider fail the way a broken driver or a lost device makes them fail.
//   TITAN_FAULT_GPU=create    creating a session on a non-CPU provider throws
//   TITAN_FAULT_GPU=trigger   runs of non-CPU sessions throw once the file TITAN_FAULT_GPU_TRIGGER
//                             exists (the test creates it mid-answer or mid-ingestion), and keep
//                             throwing after that, as a lost device does
// CPU sessions are never touched. Each injected failure is appended to TITAN_FAULT_LOG.
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { threadId } = require('node:worker_threads');

const mode = process.env.TITAN_FAULT_GPU;
const trigger = process.env.TITAN_FAULT_GPU_TRIGGER;
const log = process.env.TITAN_FAULT_LOG;
const note = (entry) => {
  if (log) fs.appendFileSync(log, JSON.stringify({ pid: process.pid, threadId, ...entry }) + '\n');
};

if (mode) {
  // The engine's own copy of onnxruntime-node (the bundles keep it external), found from the repository.
  const ort = require(require.resolve('onnxruntime-node', { paths: [path.resolve(__dirname, '..', '..')] }));
  const create = ort.InferenceSession.create;
  const onGpu = (options) => (options?.executionProviders ?? []).some((ep) => (typeof ep === 'string' ? ep : ep?.name) !== 'cpu');
  let lost = false;
  ort.InferenceSession.create = async function createWithFaults(...args) {
    const options = args.find((a) => a && typeof a === 'object' && !ArrayBuffer.isView(a) && !(a instanceof ArrayBuffer));
    if (!onGpu(options)) return create.apply(this, args);
    if (mode === 'create') {
      note({ injected: 'create' });
      throw new Error('injected GPU fault: the device was lost while the session was created');
    }
    const session = await create.apply(this, args);
    const run = session.run.bind(session);
    session.run = async (...runArgs) => {
      if (!lost && trigger && fs.existsSync(trigger)) lost = true;
      if (lost) {
        note({ injected: 'run' });
        throw new Error('injected GPU fault: the device was lost during the run');
      }
      return run(...runArgs);
    };
    return session;
  };
  note({ loaded: true, mode });
}
