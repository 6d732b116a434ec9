// Prompt release of the host buffers that graph runs leave behind.
//
// Every run returns a new copy of the run state (the softmax window and the recurrent state, a few MB
// for small models, far more for large ones) and the previous copy becomes garbage. V8 frees those
// buffers only when its own heap heuristics decide to collect, so between collections the process
// holds tens of MB of dead state and its resident memory creeps up with the number of runs — it
// looked as if memory grew with the context. Collecting once a bounded amount of state has been
// dropped keeps the footprint flat at a small cost (a full collection of the engine's small heap
// takes a few milliseconds, next to runs that take tens to thousands).
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

type Gc = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;
let collect: Gc | null | undefined;

/**
 * Runs a garbage collection; false where the runtime does not allow it. TITAN_GC_TYPE=minor|off
 * changes the kind, for measuring what the collections cost (scripts/decode-ab.ts): on the 2-core
 * machine a collection took under 1 ms and interleaved decode rounds showed no difference beyond noise.
 */
export function collectGarbage(): boolean {
  const type = process.env.TITAN_GC_TYPE === 'minor' ? 'minor' : 'major';
  if (process.env.TITAN_GC_TYPE === 'off') return false;
  if (collect === undefined) {
    try {
      // The documented way to reach gc() without starting Node with --expose-gc.
      v8.setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as Gc;
    } catch {
      collect = null;
    }
  }
  collect?.({ type, execution: 'sync' });
  return collect !== null;
}

/** Counts bytes of dropped buffers and collects once they pass `thresholdBytes`. */
export class GarbageBudget {
  private dropped = 0;
  collections = 0;

  constructor(private readonly thresholdBytes: number) {}

  drop(bytes: number): void {
    this.dropped += bytes;
    if (this.dropped < this.thresholdBytes) return;
    this.dropped = 0;
    if (collectGarbage()) this.collections++;
  }
}
