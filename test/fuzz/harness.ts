// Runs one fuzz target for a bounded time in a worker thread and reports what it found.
//
// The worker counts inputs in a shared heartbeat and keeps the current input in shared memory, so
// when an input outlives its budget (a hang) or the worker dies (out of memory, an uncaught error),
// the harness still knows which input did it. Findings are written under test-output/fuzz/<target>/
// to reproduce (`TITAN_FUZZ_REPLAY=<file>`); with TITAN_FUZZ_MERGE=1, inputs that reached new
// coverage are added to the committed corpus (test/fuzz/corpus/<target>/).
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { REPO_ROOT } from '../reliability/record';
import type { Finding, WorkerInput, WorkerReport } from './worker';

export const CORPUS_ROOT = path.join(REPO_ROOT, 'test', 'fuzz', 'corpus');
export const FINDINGS_ROOT = path.join(REPO_ROOT, 'test-output', 'fuzz');

export interface FuzzOptions {
  seconds: number;
  seed: number;
  /** Per-input budget before an input counts as a hang (ms). */
  budgetMs: number;
  /** Heap limit of the worker (MiB): a blow-up past it is an out-of-memory finding. */
  heapMb?: number;
  merge?: boolean;
}

export interface FuzzResult extends Omit<WorkerReport, 'discovered'> {
  discovered: number;
  seed: number;
  findingFiles: string[];
}

/** Seconds per target: TITAN_FUZZ_SECONDS, else the suite's default. */
export function fuzzSeconds(fallback: number): number {
  const v = Number(process.env.TITAN_FUZZ_SECONDS);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

export function fuzzSeed(): number {
  const v = Number(process.env.TITAN_FUZZ_SEED);
  return Number.isSafeInteger(v) ? v : (Date.now() % 1_000_000_007) >>> 0;
}

function bootCode(file: string): string {
  // Workers do not inherit tsx's loader: register its CommonJS hook, then load the worker source.
  return `require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(file)});`;
}

export function runFuzzTarget(name: string, options: FuzzOptions): Promise<FuzzResult> {
  const targetFile = path.join(__dirname, 'targets', `${name}.ts`);
  const beat = new SharedArrayBuffer(8);
  const current = new SharedArrayBuffer(1 << 20);
  const beatView = new Int32Array(beat);
  const workerInput: WorkerInput = { targetFile, seconds: options.seconds, seed: options.seed, corpusDir: path.join(CORPUS_ROOT, name), beat, current };
  const worker = new Worker(bootCode(path.join(__dirname, 'worker.ts')), {
    eval: true,
    workerData: workerInput,
    resourceLimits: { maxOldGenerationSizeMb: options.heapMb ?? 1024 },
    stdout: true,
    stderr: true,
  });
  // Library chatter (e.g. a logger) is not ours to print.
  worker.stdout.resume();
  if (process.env.FUZZ_DEBUG) worker.stderr.pipe(process.stderr); else worker.stderr.resume();
  const currentInput = (): Uint8Array => Uint8Array.from(new Uint8Array(current).subarray(0, Atomics.load(beatView, 1)));

  return new Promise<FuzzResult>((resolve, reject) => {
    let settled = false;
    let lastCount = -1;
    let lastChange = Date.now();
    const started = Date.now();
    const extra: Finding[] = [];
    const finish = (report: WorkerReport | null, why?: string) => {
      if (settled) return;
      settled = true;
      clearInterval(watch);
      void worker.terminate();
      const base: WorkerReport = report ?? {
        target: name, description: '', execs: Atomics.load(beatView, 0), accepted: 0, rejected: 0, corpusFiles: 0, corpusBytes: 0,
        features: 0, corpusFeatures: 0, discovered: [], findings: [], seconds: (Date.now() - started) / 1000,
      };
      const findings = [...base.findings, ...extra];
      if (why && findings.length === 0) {
        reject(new Error(`fuzz worker for ${name} failed: ${why}`));
        return;
      }
      const findingFiles = findings.map((f) => saveFinding(name, f));
      if (options.merge) for (const d of base.discovered) saveCorpus(name, d);
      resolve({ ...base, findings, discovered: base.discovered.length, seed: options.seed, findingFiles });
    };
    const watch = setInterval(() => {
      const count = Atomics.load(beatView, 0);
      if (count !== lastCount) {
        lastCount = count;
        lastChange = Date.now();
        return;
      }
      // Loading the target (and the first corpus inputs) may legitimately take a while.
      const budget = count === 0 ? 60_000 : options.budgetMs;
      if (Date.now() - lastChange > budget) {
        extra.push({ kind: 'hang', signature: `no result within ${budget} ms`, detail: `input #${count} ran past its budget`, input: currentInput() });
        finish(null);
      }
    }, 100);
    worker.on('message', (m: { type: 'done'; report: WorkerReport } | { type: 'fatal'; message: string }) => {
      if (m.type === 'done') finish(m.report);
      else finish(null, m.message);
    });
    worker.on('error', (e: Error & { code?: string }) => {
      const oom = e.code === 'ERR_WORKER_OUT_OF_MEMORY';
      extra.push({ kind: oom ? 'out-of-memory' : 'crash', signature: `${oom ? 'out of memory' : 'uncaught'}: ${e.message.split('\n')[0]}`, detail: e.stack ?? e.message, input: currentInput() });
      finish(null);
    });
    worker.on('exit', (code) => {
      if (!settled) {
        extra.push({ kind: 'crash', signature: `worker exited with code ${code}`, detail: 'the target ended the thread (process.exit?)', input: currentInput() });
        finish(null);
      }
    });
  });
}

function saveFinding(target: string, f: Finding): string {
  const dir = path.join(FINDINGS_ROOT, target);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${f.kind}-${createHash('sha1').update(f.input).digest('hex').slice(0, 16)}`);
  fs.writeFileSync(file, f.input);
  fs.writeFileSync(`${file}.txt`, `${f.signature}\n\n${f.detail}\n`);
  return path.relative(REPO_ROOT, file);
}

function saveCorpus(target: string, data: Uint8Array): void {
  const dir = path.join(CORPUS_ROOT, target);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, createHash('sha1').update(data).digest('hex').slice(0, 20));
  if (!fs.existsSync(file)) fs.writeFileSync(file, data);
}
