// The main-thread side of the model worker: the same forward/reset/state calls as ModelRunner,
// answered by a worker thread so the event loop never blocks on a run.
import type { Worker } from 'node:worker_threads';
import { ModelError } from '../model/errors';
import { readPackage, type LoadedPackage } from '../titanize/package';
import type { ProviderReport, RunnerOptions } from './session';
import type { WorkerReply, WorkerRequest } from './worker-protocol';
import { startWorker } from './start-worker';

/** What generation, ingestion and the CLI need from a running model. */
export interface ForwardModel {
  readonly pkg: LoadedPackage;
  readonly provider: ProviderReport;
  readonly packageKey: string;
  position: number;
  forward(ids: readonly number[], rows: readonly number[]): Promise<Float32Array[]>;
  reset(): Promise<void> | void;
  saveState(): Promise<Uint8Array> | Uint8Array;
  loadState(blob: Uint8Array): Promise<void> | void;
  release(): Promise<void>;
}

type Distribute<T> = T extends unknown ? Omit<T, 'id'> : never;

export class WorkerModel implements ForwardModel {
  position = 0;
  /** See ModelRunner.stateBytesCopied (as of the last forward). */
  stateBytesCopied = 0;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();
  private exited: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly pkg: LoadedPackage,
    public provider: ProviderReport,
    public packageKey: string,
  ) {}

  static async open(packageDir: string, options: RunnerOptions = {}): Promise<WorkerModel> {
    const pkg = readPackage(packageDir);
    const worker = startWorker(__dirname, 'worker.js', ['worker.ts']);
    const model = new WorkerModel(worker, pkg, { provider: 'cpu', reason: '' }, '');
    worker.on('message', (msg: WorkerReply) => {
      if (msg.type === 'provider-changed') {
        model.provider = msg.provider;
        return;
      }
      const p = model.pending.get(msg.id);
      if (!p) return;
      model.pending.delete(msg.id);
      if (msg.type === 'error') {
        const err = msg.name === 'ModelError' ? new ModelError(msg.message) : new Error(msg.message);
        p.reject(err);
      } else p.resolve(msg);
    });
    const fail = (err: Error) => {
      model.exited = err;
      for (const p of model.pending.values()) p.reject(err);
      model.pending.clear();
    };
    worker.on('error', (e) => fail(new Error(`model worker crashed: ${e.message}`)));
    worker.on('exit', (code) => fail(new Error(`model worker exited (code ${code})`)));
    try {
      const opened = await model.request({ type: 'open', packageDir: pkg.dir, options });
      if (opened.type !== 'opened') throw new Error('unexpected reply to open');
      model.provider = opened.provider;
      model.packageKey = opened.packageKey;
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    return model;
  }

  private request(msg: Distribute<WorkerRequest>, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id } as WorkerRequest, transfer);
    });
  }

  async forward(ids: readonly number[], rows: readonly number[]): Promise<Float32Array[]> {
    const r = await this.request({ type: 'forward', ids: [...ids], rows: [...rows] });
    if (r.type !== 'logits') throw new Error('unexpected reply to forward');
    this.position = r.position;
    this.stateBytesCopied = r.stateBytesCopied;
    return r.rows;
  }

  async reset(): Promise<void> {
    await this.request({ type: 'reset' });
    this.position = 0;
  }

  async saveState(): Promise<Uint8Array> {
    const r = await this.request({ type: 'save-state' });
    if (r.type !== 'state') throw new Error('unexpected reply to save-state');
    return r.blob;
  }

  async loadState(blob: Uint8Array): Promise<void> {
    const r = await this.request({ type: 'load-state', blob });
    if (r.type !== 'done') throw new Error('unexpected reply to load-state');
    this.position = r.position;
  }

  async release(): Promise<void> {
    if (!this.exited) {
      await this.request({ type: 'close' }).catch(() => undefined);
      await this.worker.terminate();
    }
  }
}
