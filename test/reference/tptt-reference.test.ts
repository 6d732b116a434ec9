// Checks the plain-TypeScript TPTT reference (test/reference/tptt-reference.ts) against what the
// reference library computed: logits of tptt 0.12.1 on code-llama-19m for `base` and ten operator
// configs at two input lengths, and two greedy decodes made with its cached decoding
// (shared/reference/tptt-0.12.1-goldens/README.md). Also checks the 'exact' semantics' promises.
//
// Run from the repository root: node --import tsx --test test/reference/tptt-reference.test.ts
// The golden forwards are slow in plain JS, so they run on a small pool of worker threads (this
// same file, started as a worker), one job per (case, input); the tests then only compare.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  argmax,
  loadLlamaWeights,
  referenceForward,
  referenceGreedy,
  ReferenceSession,
  tpttConfig,
  type LlamaWeights,
  type OperatorMode,
  type TpttConfig,
} from './tptt-reference';

const ROOT = path.resolve(__dirname, '../..');
const SHARED = fs.existsSync(path.join(ROOT, 'shared')) ? path.join(ROOT, 'shared') : path.resolve(ROOT, '../shared');
const MODEL_DIR = path.join(SHARED, 'models/code-llama-19m');
const GOLDEN_DIR = path.join(SHARED, 'reference/tptt-0.12.1-goldens');
const TOLERANCE = 2e-3; // max |logit difference| at every recorded position

// --- goldens.json -------------------------------------------------------------------------------

interface GoldenCase {
  case: string;
  config: { operator_mode: OperatorMode; mag_weight: number; cross_gate?: boolean; base_scale_attn?: boolean } | null;
  logits: Record<string, { positions: number[]; offset: number; shape: [number, number]; argmax: number[] }>;
  greedy_from_32?: number[];
}
interface Goldens {
  inputs: Record<string, number[]>;
  cases: GoldenCase[];
}

function caseConfig(c: GoldenCase): TpttConfig | null {
  if (!c.config) return null;
  return tpttConfig(c.config.operator_mode, {
    magWeight: c.config.mag_weight,
    crossGate: c.config.cross_gate ?? false,
    baseScaleAttn: c.config.base_scale_attn ?? false,
  });
}

/** One golden logits block: rows [positions][vocab] of little-endian float32. */
function goldenRows(file: Buffer, block: GoldenCase['logits'][string]): Float32Array[] {
  const [rows, vocab] = block.shape;
  const bytes = file.subarray(block.offset, block.offset + rows * vocab * 4);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return Array.from({ length: rows }, (_, r) => all.subarray(r * vocab, (r + 1) * vocab));
}

// --- jobs: what the workers compute ---------------------------------------------------------------

type Job =
  | { kind: 'logits'; caseName: string; input: string }
  | { kind: 'greedy'; caseName: string };
type JobResult = { key: string; rows?: Float64Array[]; tokens?: number[] };

const jobKey = (j: Job): string => (j.kind === 'logits' ? `${j.caseName}/${j.input}` : `${j.caseName}/greedy`);

function runJob(weights: LlamaWeights, goldens: Goldens, job: Job): JobResult {
  const c = goldens.cases.find((x) => x.case === job.caseName)!;
  if (job.kind === 'logits') {
    const rows = referenceForward(weights, caseConfig(c), goldens.inputs[job.input], 'tptt-0.12', c.logits[job.input].positions);
    return { key: jobKey(job), rows };
  }
  const prompt = goldens.inputs.len96.slice(0, 32);
  return { key: jobKey(job), tokens: referenceGreedy(weights, caseConfig(c), prompt, c.greedy_from_32!.length, 'tptt-0.12') };
}

const WORKER_ROLE = 'tptt-reference-golden-worker';

if (!isMainThread && workerData?.role === WORKER_ROLE) {
  // Worker: load once, then answer jobs until told to stop (a null job).
  void (async () => {
    const weights = await loadLlamaWeights(MODEL_DIR);
    const goldens = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'goldens.json'), 'utf8')) as Goldens;
    parentPort!.on('message', (job: Job | null) => {
      if (job === null) return parentPort!.close();
      parentPort!.postMessage(runJob(weights, goldens, job));
    });
    parentPort!.postMessage({ key: 'ready' });
  })();
} else {
  defineTests();
}

/** Runs the jobs on up to two worker threads (one per spare core), longest first; falls back to this thread. */
async function runJobs(jobs: Job[], weights: () => Promise<LlamaWeights>, goldens: Goldens): Promise<Map<string, JobResult>> {
  const results = new Map<string, JobResult>();
  const poolSize = Math.min(2, os.availableParallelism?.() ?? os.cpus().length);
  if (poolSize < 2) {
    const w = await weights();
    for (const job of jobs) results.set(jobKey(job), runJob(w, goldens, job));
    return results;
  }
  const queue = [...jobs];
  await Promise.all(
    Array.from({ length: poolSize }, () =>
      new Promise<void>((resolve, reject) => {
        // Workers do not inherit tsx's loader: register its CommonJS hook, then load this file.
        const boot = `require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(__filename)});`;
        const worker = new Worker(boot, { eval: true, workerData: { role: WORKER_ROLE } });
        const next = (): void => {
          const job = queue.shift();
          worker.postMessage(job ?? null);
          if (!job) resolve();
        };
        worker.on('message', (msg: JobResult) => {
          if (msg.key !== 'ready') results.set(msg.key, msg);
          next();
        });
        worker.on('error', reject);
        worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`golden worker exited with code ${code}`))));
      }),
    ),
  );
  return results;
}

// --- the tests -----------------------------------------------------------------------------------

function defineTests(): void {
  const goldens = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, 'goldens.json'), 'utf8')) as Goldens;
  const logitsFile = fs.readFileSync(path.join(GOLDEN_DIR, 'logits.f32'));
  let weightsPromise: Promise<LlamaWeights> | null = null;
  const weights = (): Promise<LlamaWeights> => (weightsPromise ??= loadLlamaWeights(MODEL_DIR));

  describe('tptt-0.12 semantics against the tptt 0.12.1 goldens', () => {
    let results = new Map<string, JobResult>();
    before(async () => {
      // Longest first: order-2 cases and the 130-token input cost the most.
      const jobs: Job[] = [];
      for (const c of goldens.cases) {
        for (const input of Object.keys(c.logits)) jobs.push({ kind: 'logits', caseName: c.case, input });
        if (c.greedy_from_32) jobs.push({ kind: 'greedy', caseName: c.case });
      }
      const cost = (j: Job): number => {
        const c = goldens.cases.find((x) => x.case === j.caseName)!;
        const order = c.config ? tpttConfig(c.config.operator_mode).recurrent.order : 0;
        return (j.kind === 'logits' ? goldens.inputs[j.input].length : 48) * (1 + order);
      };
      jobs.sort((a, b) => cost(b) - cost(a));
      results = await runJobs(jobs, weights, goldens);
    });

    for (const c of goldens.cases) {
      for (const [input, block] of Object.entries(c.logits)) {
        test(`${c.case} ${input}: logits within ${TOLERANCE} at positions ${block.positions.join(',')}, same argmax`, (t) => {
          const ours = results.get(`${c.case}/${input}`)?.rows;
          assert.ok(ours, 'no result computed');
          const gold = goldenRows(logitsFile, block);
          let worst = 0;
          block.positions.forEach((pos, r) => {
            let maxDiff = 0;
            for (let i = 0; i < gold[r].length; i++) maxDiff = Math.max(maxDiff, Math.abs(gold[r][i] - ours[r][i]));
            worst = Math.max(worst, maxDiff);
            assert.ok(maxDiff <= TOLERANCE, `${c.case} ${input} position ${pos}: max |diff| ${maxDiff.toExponential(3)} > ${TOLERANCE}`);
            assert.equal(argmax(ours[r]), block.argmax[pos], `${c.case} ${input} position ${pos}: argmax`);
          });
          t.diagnostic(`max |diff| ${worst.toExponential(2)}`);
        });
      }
      if (c.greedy_from_32) {
        test(`${c.case}: greedy decode of 16 tokens from the first 32 of len96 (cached decoding)`, () => {
          assert.deepEqual(results.get(`${c.case}/greedy`)?.tokens, c.greedy_from_32);
        });
      }
    }
  });

  describe('exact semantics', () => {
    const ids = goldens.inputs.len96.slice(0, 24);
    // Everything at once: order 2, rdt trick, gated alpha, kv beta, GELU squash every 8 tokens.
    const busy: TpttConfig = {
      ...tpttConfig('delta_product_c', { magWeight: 0.5, crossGate: true, baseScaleAttn: true, maxChunkSize: 8 }),
      recurrent: { order: 2, alphaGate: 'k', betaGate: 'kv', linear: false, trick: 'rdt' },
    };

    test('splitting a stream into calls does not change its logits', async () => {
      const w = await weights();
      const rows = [0, 7, 8, 16, 17, 23];
      const whole = referenceForward(w, busy, ids, 'exact', rows);
      const session = new ReferenceSession(w, busy, 'exact');
      const cuts = [0, 5, 8, 9, 17, 18, 24];
      const split: Float64Array[] = [];
      for (let i = 0; i + 1 < cuts.length; i++) {
        const part = ids.slice(cuts[i], cuts[i + 1]);
        const want = rows.filter((r) => r >= cuts[i] && r < cuts[i + 1]).map((r) => r - cuts[i]);
        split.push(...session.call(part, want));
      }
      rows.forEach((pos, r) => {
        let maxDiff = 0;
        for (let i = 0; i < whole[r].length; i++) maxDiff = Math.max(maxDiff, Math.abs(whole[r][i] - split[r][i]));
        assert.ok(maxDiff < 1e-9, `position ${pos}: max |diff| ${maxDiff}`);
      });
    });

    test('with mag_weight 0 both semantics are the base model', async () => {
      const w = await weights();
      const rows = [0, 12, 23];
      const base = referenceForward(w, null, ids, 'exact', rows);
      for (const semantics of ['exact', 'tptt-0.12'] as const) {
        const mixed = referenceForward(w, { ...busy, magWeight: 0, crossGate: false, baseScaleAttn: false }, ids, semantics, rows);
        rows.forEach((pos, r) => {
          for (let i = 0; i < base[r].length; i++) assert.ok(Math.abs(base[r][i] - mixed[r][i]) < 1e-9, `${semantics} position ${pos}`);
        });
      }
    });

    test('the linear branch changes the logits, and differently from tptt-0.12', async () => {
      const w = await weights();
      const cfg = tpttConfig('delta_rule');
      const [base] = referenceForward(w, null, ids, 'exact', [23]);
      const [exact] = referenceForward(w, cfg, ids, 'exact', [23]);
      const [tptt] = referenceForward(w, cfg, ids, 'tptt-0.12', [23]);
      const dist = (a: Float64Array, b: Float64Array): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
      assert.ok(dist(base, exact) > 1e-2 && dist(exact, tptt) > 1e-2);
    });
  });
}
