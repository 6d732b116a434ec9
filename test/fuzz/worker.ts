// The fuzzing loop, inside a worker thread (the harness can terminate it when an input hangs).
//
// Coverage: V8's precise block coverage through the inspector, restricted to the target's source
// files. Every block range executed (with its hit count bucketed as libFuzzer does) is a feature; an
// input that reaches a feature no earlier input reached joins the pool that mutation draws from.
// Coverage is taken per batch of inputs and, when a batch found something new, per input of the batch.
import * as fs from 'node:fs';
import * as inspector from 'node:inspector';
import * as path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import * as fc from 'fast-check';
import { mutateBytes, mutateJson } from './mutate';
import { Rng, type FuzzTarget } from './target';

export interface WorkerInput {
  targetFile: string;
  seconds: number;
  seed: number;
  corpusDir: string;
  /** Shared with the harness: [0] inputs started, [1] length of the current input; the input's bytes. */
  beat: SharedArrayBuffer;
  current: SharedArrayBuffer;
}

export interface Finding {
  kind: 'crash' | 'hang' | 'out-of-memory';
  /** Error name and first line of its message. */
  signature: string;
  detail: string;
  input: Uint8Array;
}

export interface WorkerReport {
  target: string;
  description: string;
  execs: number;
  accepted: number;
  rejected: number;
  corpusFiles: number;
  corpusBytes: number;
  /** Coverage features (block ranges × hit-count bucket) reached. */
  features: number;
  /** Features reached by replaying the committed corpus alone. */
  corpusFeatures: number;
  /** Inputs that reached new features during this run (written to the corpus in merge mode). */
  discovered: Uint8Array[];
  findings: Finding[];
  seconds: number;
}

const BATCH = 16;
const MAX_FINDINGS = 10;

async function main(): Promise<void> {
  const input = workerData as WorkerInput;
  const beat = new Int32Array(input.beat);
  const current = new Uint8Array(input.current);
  const session = new inspector.Session();
  session.connect();
  const post = <T>(method: string, params: object = {}): Promise<T> =>
    new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res as T))));
  await post('Profiler.enable');
  // Started before the target's modules load, so their functions are all instrumented.
  // Binary block coverage (executed or not): counting every block would slow every input down.
  await post('Profiler.startPreciseCoverage', { callCount: false, detailed: true });
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded after coverage starts, through tsx's CommonJS hook
  const target = (require(input.targetFile) as { target: FuzzTarget }).target;
  await target.setup?.();

  type Range = { startOffset: number; endOffset: number; count: number };
  type Coverage = { result: { url: string; functions: { ranges: Range[] }[] }[] };
  const features = new Set<string>();
  /**
   * Per function, every block V8 ever reported as not executed. V8 leaves out a block whose count
   * equals its parent's, so the blocks an input executed are the known ones that are not inside a
   * zero-count range of its report (plus the function itself).
   */
  const knownBlocks = new Map<string, Map<string, [number, number]>>();
  /** Features of everything run since the last call (and resets V8's counters). */
  const takeFeatures = async (): Promise<Set<string>> => {
    const cov = await post<Coverage>('Profiler.takePreciseCoverage');
    const out = new Set<string>();
    for (const script of cov.result) {
      if (!target.coverage.some((c) => script.url.includes(c))) continue;
      for (const fn of script.functions) {
        const [top, ...nested] = fn.ranges;
        if (!top || top.count === 0) continue;
        const key = `${script.url}:${top.startOffset}`;
        out.add(key);
        const zeros = nested.filter((r) => r.count === 0);
        let known = knownBlocks.get(key);
        if (!known) knownBlocks.set(key, (known = new Map()));
        for (const z of zeros) known.set(`${z.startOffset}:${z.endOffset}`, [z.startOffset, z.endOffset]);
        for (const [k, [s, e]] of known) if (!zeros.some((z) => z.startOffset <= s && e <= z.endOffset)) out.add(`${key}:${k}`);
      }
    }
    return out;
  };

  let execs = 0;
  let accepted = 0;
  let rejected = 0;
  const findings: Finding[] = [];
  const signatures = new Set<string>();
  const exec = async (data: Uint8Array): Promise<void> => {
    const n = Math.min(data.length, current.length);
    current.set(data.subarray(0, n));
    Atomics.store(beat, 1, n);
    Atomics.add(beat, 0, 1);
    execs++;
    try {
      const outcome = await target.run(data);
      if (outcome === 'accepted') accepted++;
      else rejected++;
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      const signature = `${err.name}: ${err.message.split('\n')[0].slice(0, 200)}`;
      // One finding per place it was thrown from (first stack frame inside the repository).
      const frame = (err.stack ?? '').split('\n').find((l) => l.includes('/engine/') || l.includes('/protocol/')) ?? '';
      const key = `${err.name}|${frame.trim()}|${frame ? '' : signature.replace(/\d+/g, 'N')}`;
      if (!signatures.has(key) && findings.length < MAX_FINDINGS) {
        signatures.add(key);
        findings.push({ kind: 'crash', signature, detail: (err.stack ?? signature).split('\n').slice(0, 8).join('\n'), input: Uint8Array.from(data) });
      }
    }
  };

  // 1. The committed corpus: seeds and regression inputs, every one must pass.
  const pool: Uint8Array[] = [];
  let corpusBytes = 0;
  const corpusFiles = fs.existsSync(input.corpusDir) ? fs.readdirSync(input.corpusDir).filter((f) => !f.startsWith('.')).sort() : [];
  for (const f of corpusFiles) {
    const data = new Uint8Array(fs.readFileSync(path.join(input.corpusDir, f)));
    corpusBytes += data.length;
    await exec(data);
    for (const k of await takeFeatures()) features.add(k);
    pool.push(data);
  }
  const corpusFeatures = features.size;

  // 2. Generation and mutation until the deadline.
  const rnd = new Rng(input.seed);
  const discovered: Uint8Array[] = [];
  let generated: Uint8Array[] = [];
  let sampleSeed = input.seed;
  const generate = (): Uint8Array => {
    if (generated.length === 0) generated = fc.sample(target.arbitrary, { seed: sampleSeed++, numRuns: 64 });
    return generated.pop()!;
  };
  const jsonValues = (): unknown => fc.sample(fc.jsonValue({ maxDepth: 3 }), { seed: rnd.u32(), numRuns: 1 })[0];
  const next = (): Uint8Array => {
    const r = rnd.below(100);
    if (pool.length === 0 || r < 25) return generate();
    const base = rnd.pick(pool);
    if (target.mutate && r < 50) {
      const m = target.mutate(base, rnd);
      if (m) return m;
    }
    if (target.json && r < 75) {
      const m = mutateJson(base, rnd, target.dictionary, jsonValues);
      if (m) return m;
    }
    return mutateBytes(base, rnd, target.dictionary, pool, target.maxLen);
  };

  const t0 = performance.now();
  const deadline = t0 + input.seconds * 1000;
  let batch: Uint8Array[] = [];
  while (performance.now() < deadline) {
    const data = next();
    await exec(data);
    batch.push(data);
    if (batch.length < BATCH) continue;
    // When a batch reached new blocks, each of its inputs is re-run alone and kept if it reached one.
    const fresh = [...(await takeFeatures())].some((k) => !features.has(k));
    if (fresh) {
      for (const d of batch) {
        await exec(d);
        let isNew = false;
        for (const k of await takeFeatures()) {
          if (!features.has(k)) {
            features.add(k);
            isNew = true;
          }
        }
        if (isNew) {
          pool.push(d);
          discovered.push(d);
        }
      }
    }
    batch = [];
  }

  const report: WorkerReport = {
    target: target.name,
    description: target.description,
    execs,
    accepted,
    rejected,
    corpusFiles: corpusFiles.length,
    corpusBytes,
    features: features.size,
    corpusFeatures,
    discovered,
    findings,
    seconds: (performance.now() - t0) / 1000,
  };
  await post('Profiler.stopPreciseCoverage');
  session.disconnect();
  parentPort!.postMessage({ type: 'done', report });
}

main().catch((e) => {
  parentPort!.postMessage({ type: 'fatal', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
});
