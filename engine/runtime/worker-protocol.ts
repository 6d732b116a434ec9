// Messages between the engine's main thread and the worker thread that runs the model.
import type { ProviderReport, RunnerOptions } from './session';

export type WorkerRequest =
  | { type: 'open'; id: number; packageDir: string; options: RunnerOptions }
  | { type: 'forward'; id: number; ids: number[]; rows: number[] }
  | { type: 'reset'; id: number }
  | { type: 'save-state'; id: number }
  | { type: 'load-state'; id: number; blob: Uint8Array }
  | { type: 'close'; id: number };

export type WorkerReply =
  | { type: 'opened'; id: number; provider: ProviderReport; packageKey: string }
  | { type: 'logits'; id: number; rows: Float32Array[]; position: number; stateBytesCopied: number }
  | { type: 'state'; id: number; blob: Uint8Array; position: number }
  | { type: 'done'; id: number; position: number }
  | { type: 'error'; id: number; name: string; message: string }
  /** Unasked (id 0): the worker moved to the CPU after a GPU failure (runtime/cpu-fallback.ts). */
  | { type: 'provider-changed'; id: 0; provider: ProviderReport };
