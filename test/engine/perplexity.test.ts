// `titan perplexity`: held-out NLL of the real demo model, by position bucket; a Titan package whose
// linear branch has weight 0 scores exactly like the base package; bad files give one-line errors.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { POSITION_BUCKETS, streamPerplexity, tokenNll, tokenizeTextFile } from '../../engine/bench/perplexity';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ModelRunner } from '../../engine/runtime/session';
import { titanize } from '../../engine/titanize/titanize';
import { writePackage } from '../../engine/titanize/package';
import { REPO_ROOT, SHARED_MODEL_DIR } from '../helpers/paths';

const DEMO = SHARED_MODEL_DIR;
const ROOT = REPO_ROOT;
const TIMEOUT = { timeout: 180_000 };

let tmp: string;
let basePkg: string;
let heldOut: string;

/**
 * Held-out-like text: npm JavaScript like the demo model's training corpus (source files of npm
 * packages, each prefixed `<|file|> path`), taken from a dependency whose version package-lock.json pins.
 */
function writeHeldOut(file: string): void {
  const rel = 'src/generation/logits_process.js';
  const text = fs.readFileSync(path.join(ROOT, 'node_modules', '@huggingface', 'transformers', rel), 'utf8').slice(0, 8000);
  fs.writeFileSync(file, `<|file|> ${rel}\n${text}`);
}

function titan(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'engine', 'cli.ts'), ...args], { encoding: 'utf8', timeout: 120_000, cwd: ROOT });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-perplexity-'));
  basePkg = path.join(tmp, 'base');
  writePackage(DEMO, basePkg, { dtype: 'fp32', window: null, kind: 'base' });
  heldOut = path.join(tmp, 'held-out.js');
  writeHeldOut(heldOut);
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('token NLL', () => {
  it('is −log softmax in float64, stable for large logits', () => {
    const row = Float32Array.from([1, 2, 3]);
    const expected = -Math.log(Math.exp(3) / (Math.exp(1) + Math.exp(2) + Math.exp(3)));
    assert.ok(Math.abs(tokenNll(row, 2) - expected) < 1e-12);
    const big = Float32Array.from([1000, 1000]);
    assert.ok(Math.abs(tokenNll(big, 0) - Math.LN2) < 1e-12);
  });
});

describe('perplexity of the demo model', () => {
  it('is finite and near its recorded held-out loss (1.40 nats/token at 1024 context), by bucket', TIMEOUT, async () => {
    const tokenizer = loadTokenizer(basePkg);
    const { ids, bytes } = tokenizeTextFile(heldOut, tokenizer);
    assert.ok(ids.length > 1100, `held-out text is ${ids.length} tokens`);
    const model = await ModelRunner.open(basePkg, { provider: 'cpu' });
    try {
      const r = await streamPerplexity(model, ids, { context: 1024, textBytes: bytes });
      // Every token but the first of each 1024-token context is scored.
      assert.equal(r.tokens, ids.length - Math.ceil(ids.length / 1024));
      assert.equal(r.streamTokens, ids.length);
      assert.ok(r.nll !== null && Number.isFinite(r.nll));
      // Its README: 1.40 nats/token on held-out npm files at 1024 context.
      assert.ok(r.nll! > 0.8 && r.nll! < 2.0, `NLL ${r.nll} nats/token`);
      assert.ok(Math.abs(r.perplexity! - Math.exp(r.nll!)) < 1e-9);
      assert.ok(r.bitsPerByte! > 0 && r.bitsPerByte! < r.nll! / Math.LN2);
      // Buckets partition the scored tokens; with a 1024 context nothing reaches 4k.
      assert.deepEqual(r.buckets.map((b) => b.name), POSITION_BUCKETS.map((b) => b.name));
      assert.equal(r.buckets.reduce((a, b) => a + b.tokens, 0), r.tokens);
      const weighted = r.buckets.reduce((a, b) => a + (b.nll ?? 0) * b.tokens, 0) / r.tokens;
      assert.ok(Math.abs(weighted - r.nll!) < 1e-9);
      assert.equal(r.buckets[2].tokens, 0);
      assert.equal(r.buckets[2].nll, null);
      // It uses its context: later positions are predicted better than the first 512.
      assert.ok(r.buckets[1].nll! < r.buckets[0].nll!, `0-512 ${r.buckets[0].nll}, 512-4k ${r.buckets[1].nll}`);

      // A short context resets often: every token sits in the first bucket, and the loss is higher.
      const short = await streamPerplexity(model, ids, { context: 128 });
      assert.equal(short.buckets[0].tokens, short.tokens);
      assert.ok(short.nll! > r.nll!, `context 128: ${short.nll}, 1024: ${r.nll}`);
      process.stdout.write(`# held-out NLL ${r.nll!.toFixed(4)} nats/token (0-512: ${r.buckets[0].nll!.toFixed(4)}, 512-4k: ${r.buckets[1].nll!.toFixed(4)}) over ${r.tokens} tokens; context 128: ${short.nll!.toFixed(4)}\n`);
    } finally {
      await model.release();
    }
  });

  it('a Titan package with μ = 0 (the linear branch off) gives the base NLL within 1e-4', TIMEOUT, async () => {
    const titanPkg = path.join(tmp, 'titan-mu0');
    titanize(DEMO, titanPkg, { mag_weight: 0 });
    const tokenizer = loadTokenizer(basePkg);
    const ids = tokenizeTextFile(heldOut, tokenizer).ids.slice(0, 700);
    const results = [];
    for (const dir of [basePkg, titanPkg]) {
      const model = await ModelRunner.open(dir, { provider: 'cpu' });
      try {
        results.push(await streamPerplexity(model, ids, { segment: 256 }));
      } finally {
        await model.release();
      }
    }
    const [base, titanR] = results;
    assert.equal(base.tokens, titanR.tokens);
    assert.ok(Math.abs(base.nll! - titanR.nll!) < 1e-4, `base ${base.nll}, Titan μ=0 ${titanR.nll}`);
    for (let i = 0; i < base.buckets.length; i++) if (base.buckets[i].tokens) assert.ok(Math.abs(base.buckets[i].nll! - titanR.buckets[i].nll!) < 1e-4);
  });

  it('the segment size does not change the result', TIMEOUT, async () => {
    const ids = tokenizeTextFile(heldOut, loadTokenizer(basePkg)).ids.slice(0, 300);
    const model = await ModelRunner.open(basePkg, { provider: 'cpu' });
    try {
      const a = await streamPerplexity(model, ids, { segment: 300 });
      const b = await streamPerplexity(model, ids, { segment: 37 });
      assert.ok(Math.abs(a.nll! - b.nll!) < 1e-4, `${a.nll} vs ${b.nll}`);
    } finally {
      await model.release();
    }
  });
});

describe('titan perplexity (CLI)', () => {
  it('prints JSON with the overall and bucketed NLL', TIMEOUT, () => {
    const small = path.join(tmp, 'small.js');
    fs.writeFileSync(small, fs.readFileSync(heldOut, 'utf8').slice(0, 1500));
    const r = titan(['perplexity', basePkg, '--file', small, '--context', '256', '--provider', 'cpu', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { nll: number; perplexity: number; tokens: number; context: number; buckets: { name: string; tokens: number }[]; provider: string };
    assert.equal(out.context, 256);
    assert.equal(out.provider, 'cpu');
    assert.ok(out.tokens > 100 && Number.isFinite(out.nll) && out.nll > 0);
    assert.deepEqual(out.buckets.map((b) => b.name), ['0-512', '512-4k', '4k+']);
  });

  it('bad inputs are one-line errors', TIMEOUT, () => {
    const empty = path.join(tmp, 'empty.txt');
    fs.writeFileSync(empty, '');
    const binary = path.join(tmp, 'blob.bin');
    fs.writeFileSync(binary, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)));
    const latin1 = path.join(tmp, 'latin1.txt');
    fs.writeFileSync(latin1, Buffer.from('caf\xe9 cr\xe8me br\xfbl\xe9e, plain text otherwise\n', 'latin1'));
    const tokenizer = loadTokenizer(basePkg);
    const cases: [string, string][] = [
      [path.join(tmp, 'nope.txt'), 'does not exist'],
      [empty, 'is empty'],
      [binary, 'is a binary file'],
      [tmp, 'is a folder'],
      [latin1, 'is not valid UTF-8'],
    ];
    for (const [file, message] of cases) {
      assert.throws(
        () => tokenizeTextFile(file, tokenizer),
        (e: Error) => e instanceof ModelError && e.message.includes(message) && !e.message.includes('\n'),
        `${file}: expected a one-line ModelError with "${message}"`,
      );
    }
    // Through the CLI: exit status 1 (2 for a wrong command line) and exactly one line on stderr.
    const cli: [string[], number, string][] = [
      [['perplexity', basePkg, '--file', binary], 1, 'is a binary file'],
      [['perplexity', basePkg, '--file', empty, '--context', '1'], 2, '--context must be an integer ≥ 2'],
      [['perplexity', path.join(tmp, 'no-package'), '--file', heldOut], 1, 'is not a Titan model package'],
    ];
    for (const [args, status, message] of cli) {
      const r = titan(args);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(lines[0].includes(message), `${args.join(' ')}: expected "${message}" in "${lines[0]}"`);
    }
  });

  it('a file that encodes to a single token is refused', () => {
    const one = path.join(tmp, 'one.txt');
    fs.writeFileSync(one, 'a');
    assert.throws(() => tokenizeTextFile(one, loadTokenizer(basePkg)), (e: Error) => e instanceof ModelError && /encodes to 1 token/.test(e.message));
  });
});
