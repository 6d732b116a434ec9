// The `titan` CLI as a user meets it (the built bin/titan.js in a child process): help for every
// command, usage errors (exit 2, one line), bad TPTT settings refused before any work, bad logits
// requests, streaming generation that stops where asked, seeded sampling that repeats.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMMANDS } from '../../engine/commands/index';
import { CPU, runTitan, titanOk, type CliResult } from '../helpers/cli';
import { DEMO_MODEL_DIR } from '../helpers/goldens';

const PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n';

let tmp: string;
let basePkg: string;
let titanPkg: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-cli-'));
  basePkg = path.join(tmp, 'base');
  titanPkg = path.join(tmp, 'titan');
  await titanOk(['convert', DEMO_MODEL_DIR, '--out', basePkg]);
  await titanOk(['titanize', DEMO_MODEL_DIR, '--out', titanPkg, '--operator', 'delta_rule', '--window', '128', '--chunk', '32']);
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Exit code `code`, nothing on stdout, exactly one line on stderr matching every pattern. */
function assertOneLineError(r: CliResult, code: number, ...patterns: RegExp[]): void {
  const shown = `exit ${r.code ?? r.signal}; stderr ${JSON.stringify(r.stderr)}`;
  assert.equal(r.code, code, shown);
  assert.equal(r.stdout, '', `stdout should be empty: ${JSON.stringify(r.stdout.slice(0, 200))}`);
  assert.match(r.stderr, /^[^\n]+\n$/, `not exactly one line: ${shown}`);
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, shown);
  for (const p of patterns) assert.match(r.stderr, p, shown);
}

describe('help', () => {
  test('titan --help lists every command and exits 0; titan with no command prints it and exits 2', async () => {
    const r = await runTitan(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`^  ${c.name} `, 'm'), `${c.name} missing from titan --help`);
    const bare = await runTitan([]);
    assert.equal(bare.code, 2);
    assert.match(bare.stdout, /^usage: titan <command>/);
  });

  for (const c of COMMANDS) {
    test(`titan ${c.name} --help describes every option and exits 0`, async () => {
      const r = await runTitan([c.name, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, new RegExp(`^usage: titan ${c.name}`));
      for (const option of Object.keys(c.options)) assert.match(r.stdout, new RegExp(`--${option}\\b`), `--${option} missing from titan ${c.name} --help`);
    });
  }
});

describe('usage errors: exit 2, one line', () => {
  const cases: [string, () => string[], RegExp][] = [
    ['unknown command', () => ['frobnicate'], /unknown command "frobnicate"/],
    ['unknown option', () => ['logits', basePkg, '--ids', '1,2', '--bogus'], /--bogus/],
    ['option missing its value', () => ['generate', basePkg, '--prompt'], /--prompt/],
    ['missing positional', () => ['convert', '--out', path.join(tmp, 'never')], /missing <hf-dir>/],
    ['extra positional', () => ['logits', basePkg, 'extra', '--ids', '1'], /unexpected argument "extra"/],
    ['convert without --out', () => ['convert', DEMO_MODEL_DIR], /missing --out/],
    ['bad --dtype', () => ['convert', DEMO_MODEL_DIR, '--out', path.join(tmp, 'never'), '--dtype', 'int8'], /--dtype must be one of fp32, fp16/],
    ['generate without --prompt', () => ['generate', basePkg], /missing --prompt/],
    ['--max-new-tokens 0', () => ['generate', basePkg, '--prompt', 'x', '--max-new-tokens', '0'], /--max-new-tokens must be an integer ≥ 1/],
    ['--temperature abc', () => ['generate', basePkg, '--prompt', 'x', '--temperature', 'abc'], /--temperature must be a number/],
    ['--top-p 0', () => ['generate', basePkg, '--prompt', 'x', '--top-p', '0'], /--top-p must be a number/],
    ['--seed -1', () => ['generate', basePkg, '--prompt', 'x', '--seed=-1'], /--seed must be an integer/],
    ['--provider tpu', () => ['generate', basePkg, '--prompt', 'x', '--provider', 'tpu'], /--provider must be one of/],
    ['logits without --ids', () => ['logits', basePkg], /missing --ids/],
    ['--ids with a word', () => ['logits', basePkg, '--ids', '1,two,3'], /--ids must be a comma-separated list/],
    ['--ids with a negative id', () => ['logits', basePkg, '--ids', '1,-2'], /--ids must be a comma-separated list/],
    ['--segments 0', () => ['logits', basePkg, '--ids', '1,2,3', '--segments', '2,0'], /--segments values must be integers ≥ 1/],
    ['--segments with --stepwise', () => ['logits', basePkg, '--ids', '1,2,3', '--segments', '2', '--stepwise'], /--segments and --stepwise exclude each other/],
    ['--semantics other', () => ['titanize', DEMO_MODEL_DIR, '--out', path.join(tmp, 'never'), '--semantics', 'tptt-0.13'], /--semantics must be one of exact, tptt-0.12/],
    ['--chunk abc', () => ['titanize', DEMO_MODEL_DIR, '--out', path.join(tmp, 'never'), '--chunk', 'abc'], /--chunk must be an integer/],
  ];
  for (const [what, args, pattern] of cases) {
    test(what, async () => {
      const r = await runTitan(args());
      assertOneLineError(r, 2, pattern);
    });
  }

  test('no usage error wrote a package', () => {
    assert.ok(!fs.existsSync(path.join(tmp, 'never')));
  });
});

describe('bad TPTT settings fail with a clear message before any work', () => {
  const cases: [string, string[], RegExp][] = [
    ['unknown operator', ['--operator', 'delta_rool'], /operator_mode "delta_rool" is unknown/],
    ['window 0', ['--window', '0'], /max_self_attn_length \(window\) must be an integer ≥ 1/],
    ['negative window', ['--window=-4'], /max_self_attn_length \(window\) must be an integer ≥ 1/],
    ['μ 1.5', ['--mag-weight', '1.5'], /mag_weight must be a number in \[0, 1\]/],
    ['μ -0.1', ['--mag-weight=-0.1'], /mag_weight must be a number in \[0, 1\]/],
    ['chunk 0', ['--chunk', '0'], /max_chunk_size \(chunk\) must be a positive integer/],
    ['chunk 4096', ['--chunk', '4096'], /max_chunk_size 4096 is too large/],
    ['bad recurrent config', ['--recurrent-config', '{"order":9}'], /recurrent_config\.order must be an integer in \[1, 4\]/],
    ['two problems at once', ['--operator', 'nope', '--mag-weight', '2'], /operator_mode "nope" is unknown.*mag_weight must be/],
  ];
  for (const [what, flags, pattern] of cases) {
    test(what, async () => {
      const out = path.join(tmp, `bad-${what.replace(/\W+/g, '-')}`);
      const r = await runTitan(['titanize', DEMO_MODEL_DIR, '--out', out, ...flags]);
      assert.ok(r.code === 1 || r.code === 2, `exit ${r.code}`);
      assertOneLineError(r, r.code!, pattern);
      // Nothing written: neither the package nor a temporary sibling.
      assert.ok(!fs.existsSync(out), `${out} was created`);
      assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith(path.basename(out))), []);
    });
  }

  test('a refused conversion leaves an existing package untouched', async () => {
    const manifest = fs.readFileSync(path.join(titanPkg, 'titan-package.json'), 'utf8');
    const r = await runTitan(['titanize', DEMO_MODEL_DIR, '--out', titanPkg, '--mag-weight', '1.5']);
    assertOneLineError(r, r.code!, /mag_weight/);
    assert.equal(fs.readFileSync(path.join(titanPkg, 'titan-package.json'), 'utf8'), manifest);
  });
});

describe('titan logits: bad requests are one-line errors', () => {
  test('--positions beyond the sequence', async () => {
    assertOneLineError(await runTitan(['logits', basePkg, '--ids', '10,11,12', '--positions', '0,3', '--json']), 2, /--positions 3 is beyond the sequence \(length 3\)/);
  });
  test('an id outside the vocabulary', async () => {
    assertOneLineError(await runTitan(['logits', basePkg, '--ids', '10,16384,12', '--json', ...CPU]), 2, /--ids 16384 is outside the vocabulary \(0\.\.16383\)/);
  });
  test('a folder that is not a package', async () => {
    assertOneLineError(await runTitan(['logits', DEMO_MODEL_DIR, '--ids', '1,2', '--json']), 1, /is not a Titan model package/);
  });
  test('a package folder that does not exist', async () => {
    assertOneLineError(await runTitan(['generate', path.join(tmp, 'missing'), '--prompt', 'x']), 1, /is not a Titan model package/);
  });
  test('a valid request prints the positions asked for, in order', async () => {
    const r = await runTitan(['logits', basePkg, '--ids', '10,11,12,13', '--positions', '3,1', '--json', ...CPU]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { positions: number[]; logits: number[][] };
    assert.deepEqual(out.positions, [3, 1]);
    assert.deepEqual(out.logits.map((row) => row.length), [16384, 16384]);
  });
});

describe('titan generate', () => {
  test('streams text and stops at --max-new-tokens; the streamed text is the --json text', async (t) => {
    const chunks: string[] = [];
    const r = await runTitan(['generate', basePkg, '--prompt', PROMPT, '--max-new-tokens', '12', ...CPU], { onStdout: (c) => void chunks.push(c) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^\[12 tokens, [\d.]+ tokens\/s on cpu, stop: length\]\n$/);
    const json = JSON.parse(await titanOk(['generate', basePkg, '--prompt', PROMPT, '--max-new-tokens', '12', '--json', ...CPU])) as { text: string; tokens: number[]; stopReason: string };
    assert.equal(json.tokens.length, 12);
    assert.equal(json.stopReason, 'length');
    assert.equal(r.stdout, json.text + '\n');
    assert.ok(json.text.length > 0);
    t.diagnostic(`${chunks.length} stdout chunks: ${JSON.stringify(json.text)}`);
  });

  test('text arrives while it is generated: interrupted after the first piece, it stops early as cancelled', async () => {
    let pieces = 0;
    // Ask for far more than it will get to: the first piece of text triggers Ctrl-C.
    const r = await runTitan(['generate', basePkg, '--prompt', PROMPT, '--max-new-tokens', '2000', ...CPU], { onStdout: () => (++pieces === 1 ? 'interrupt' : undefined), timeoutMs: 300_000 });
    const summary = /\[(\d+) tokens, .* stop: (\w+)\]/.exec(r.stderr);
    assert.ok(summary, `no summary line: ${JSON.stringify(r.stderr)}`);
    assert.equal(summary[2], 'cancelled', r.stderr);
    assert.ok(Number(summary[1]) < 2000);
    assert.equal(r.code, 130, `a cancelled generation should exit 130, got ${r.code}`);
  });

  test('a Titan package generates too (exact semantics, window 128, chunk 32)', async () => {
    const json = JSON.parse(await titanOk(['generate', titanPkg, '--prompt', PROMPT, '--max-new-tokens', '40', '--json', ...CPU])) as { tokens: number[]; stopReason: string; promptTokens: number };
    assert.ok(json.tokens.length === 40 || json.stopReason === 'eos', `${json.tokens.length} tokens, stop ${json.stopReason}`);
    assert.ok(json.promptTokens > 0);
  });

  test('--temperature 0.8 --seed 3 gives the same text every run; another seed gives another', async (t) => {
    const sample = async (seed: string): Promise<number[]> =>
      (JSON.parse(await titanOk(['generate', basePkg, '--prompt', PROMPT, '--max-new-tokens', '24', '--temperature', '0.8', '--seed', seed, '--json', ...CPU])) as { tokens: number[] }).tokens;
    const first = await sample('3');
    const second = await sample('3');
    const other = await sample('4');
    assert.deepEqual(second, first);
    assert.notDeepEqual(other, first, 'seeds 3 and 4 sampled the same 24 tokens');
    const greedy = (JSON.parse(await titanOk(['generate', basePkg, '--prompt', PROMPT, '--max-new-tokens', '24', '--json', ...CPU])) as { tokens: number[] }).tokens;
    assert.notDeepEqual(first, greedy, 'temperature 0.8 gave the greedy tokens');
    t.diagnostic(`seed 3: ${first.slice(0, 8).join(',')}…; seed 4: ${other.slice(0, 8).join(',')}…`);
  });
});
