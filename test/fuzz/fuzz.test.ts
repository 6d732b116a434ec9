// Coverage-guided fuzzing of every parser and message handler that reads untrusted input, bounded
// in time (TITAN_FUZZ_SECONDS per target, default 30; TITAN_FUZZ_SEED to replay a run's choices).
// Each target first replays its committed corpus (seeds and the regression inputs of fixed bugs),
// then generates and mutates inputs until its time is up. A finding fails the test and is written
// under test-output/fuzz/<target>/ with the error that it raised.
//
// Jazzer.js (@jazzer.js/core) cannot run on this platform: its 4.x native fuzzer is prebuilt for
// glibc ≥ 2.38 and libstdc++ GLIBCXX_3.4.32 (Debian 12 has 2.36 and 3.4.30) and ships no sources, and
// 1.x/2.x download their binary from GitHub at install (only the npm registry is reachable) or build
// it with cmake-js, which downloads Node's headers. So the loop here is our own: fast-check generates
// structured inputs, libFuzzer-style mutations edit the pool, and V8's block coverage decides which
// inputs join the pool.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fuzzSeconds, fuzzSeed, runFuzzTarget, type FuzzResult } from './harness';
import { record } from '../reliability/record';

const TARGETS: { name: string; budgetMs?: number }[] = [
  { name: 'safetensors' },
  { name: 'safetensors-index' },
  { name: 'model-config' },
  { name: 'tokenizer' , budgetMs: 10_000 },
  { name: 'state-blob' },
  { name: 'jsonrpc', budgetMs: 10_000 },
  { name: 'webview-messages' },
];

const only = process.env.TITAN_FUZZ_TARGETS?.split(',').filter(Boolean);
const seconds = fuzzSeconds(30);
const seed = fuzzSeed();
const merge = process.env.TITAN_FUZZ_MERGE === '1';

// Two targets at a time: CI has two cores and each target is single-threaded.
const queue = TARGETS.filter((t) => !only || only.includes(t.name));
const running = new Map<string, Promise<FuzzResult>>();
let started = 0;
function start(): void {
  while (running.size < 2 && started < queue.length) {
    const t = queue[started++];
    running.set(t.name, runFuzzTarget(t.name, { seconds, seed, budgetMs: t.budgetMs ?? 5_000, merge }));
  }
}

for (const t of queue) {
  test(`fuzz ${t.name} (${seconds} s, seed ${seed})`, { timeout: (seconds + 240) * 1000 }, async () => {
    start();
    const pending = running.get(t.name)!;
    let result: FuzzResult;
    try {
      result = await pending;
    } finally {
      running.delete(t.name);
      start();
    }
    const figures = {
      seconds: Number(result.seconds.toFixed(1)),
      executions: result.execs,
      'executions/s': Math.round(result.execs / Math.max(result.seconds, 1e-3)),
      'corpus files': result.corpusFiles,
      'corpus bytes': result.corpusBytes,
      'coverage features': result.features,
      'features from corpus': result.corpusFeatures,
      'new inputs': result.discovered,
      accepted: result.accepted,
      'rejected (ModelError)': result.rejected,
      seed: result.seed,
    };
    const problems = result.findings.map((f, i) => `${f.kind}: ${f.signature} (${result.findingFiles[i]})`);
    record('fuzz', {
      section: 'fuzz',
      name: t.name,
      injected: result.description,
      expected: 'every input accepted or refused with a one-line ModelError; no other exception, hang or blow-up',
      outcome: problems.length ? 'fail' : 'pass',
      figures,
      ...(problems.length ? { error: problems.join('; ').slice(0, 500) } : {}),
    });
    process.stdout.write(`# ${t.name}: ${JSON.stringify(figures)}\n`);
    assert.equal(problems.length, 0, `fuzzing ${t.name} found:\n${result.findings.map((f, i) => `${f.kind}: ${f.signature}\n  saved as ${result.findingFiles[i]}\n${f.detail}`).join('\n')}`);
    assert.ok(result.execs > result.corpusFiles, `${t.name}: only the corpus ran (${result.execs} executions)`);
  });
}
