// `titan bench --quick` end to end on the demo model (every contender, two tiny contexts): the JSON
// report, report.md and an SVG that parses as XML with one series per contender and metric. Only
// structure is asserted, never timings. Plus the synthetic checkpoint generator and the bench's
// command-line errors.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { defaultContenders, parsePackage, parseVariant, prepareContenders } from '../../engine/bench/contenders';
import type { BenchReport } from '../../engine/bench/run';
import { computeChecks, computeRatios, parseContext } from '../../engine/bench/run';
import { renderPlot } from '../../engine/bench/svg';
import { SYNTHETIC_SHAPES, parameterCount, writeByteTokenizer, writeSyntheticCheckpoint } from '../../engine/bench/synthetic';
import { loadModelConfig } from '../../engine/model/config';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ModelRunner } from '../../engine/runtime/session';
import { writePackage } from '../../engine/titanize/package';
import { REPO_ROOT, SHARED_MODEL_DIR } from '../helpers/paths';

const ROOT = REPO_ROOT;
const DEMO = SHARED_MODEL_DIR;
const TIMEOUT = { timeout: 900_000 };

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-bench-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function titan(args: string[], timeout = 900_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'engine', 'cli.ts'), ...args], { encoding: 'utf8', timeout, cwd: ROOT });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

type SvgNode = Record<string, unknown>;

/** Every element named `tag` in a parsed XML tree (fast-xml-parser's preserveOrder form). */
function elements(nodes: SvgNode[], tag: string): SvgNode[] {
  const out: SvgNode[] = [];
  for (const n of nodes) {
    for (const [k, v] of Object.entries(n)) {
      if (k === ':@' || k === '#text') continue;
      if (k === tag) out.push(n);
      if (Array.isArray(v)) out.push(...elements(v as SvgNode[], tag));
    }
  }
  return out;
}
const attr = (n: SvgNode, name: string) => (n[':@'] as Record<string, string> | undefined)?.[`@_${name}`];

describe('titan bench --quick', () => {
  let report: BenchReport;
  const out = () => path.join(tmp, 'out');
  const cache = () => path.join(tmp, 'cache');
  const ids = ['titan-w32', 'base', 'transformers-js', 'titan-fp16'];

  before(() => {
    const text = path.join(tmp, 'held-out.ts');
    fs.writeFileSync(text, fs.readFileSync(path.join(ROOT, 'engine', 'model', 'safetensors.ts'), 'utf8').slice(0, 3000));
    const r = titan(['bench', '--quick', '--json', '--provider', 'cpu', '--model', DEMO, '--out', out(), '--cache', cache(), '--variant', 'titan-fp16=titanize --window 32 --dtype fp16', '--note', 'test run', '--perplexity', text, '--perplexity-context', '128', '--perplexity-tokens', '200']);
    assert.equal(r.status, 0, r.stderr);
    report = JSON.parse(r.stdout) as BenchReport;
    process.stdout.write(`# quick bench: ${report.results.map((c) => `${c.contender}@${c.context}: ${c.prefillTokensPerSecond?.toFixed(0)} tok/s prefill, ${c.decodeMsPerToken?.toFixed(1)} ms/token`).join('; ')}\n`);
  });

  it('reports every contender at every context, in one run, on the CPU', TIMEOUT, () => {
    assert.equal(report.version, 1);
    assert.equal(report.provider, 'cpu');
    assert.deepEqual(report.settings, { contexts: [64, 256], decodeTokens: 4, prefillChunk: 64 });
    assert.deepEqual(report.contenders.map((c) => c.id), ids);
    assert.deepEqual(report.contenders.map((c) => c.role), ['titan', 'full-attention', 'transformers-js', 'titan']);
    assert.ok(report.contenders.find((c) => c.id === 'titan-fp16')!.command!.includes('--dtype fp16'));
    assert.equal(report.model.layers, 8);
    assert.ok(report.machine.cores >= 1 && report.machine.memoryBytes > 0 && report.machine.onnxruntime === '1.30.0');
    assert.ok(report.command.startsWith('titan bench --quick'));
    assert.deepEqual(report.notes, ['test run']);
    assert.equal(report.results.length, 8);
    for (const context of [64, 256]) {
      for (const id of ids) {
        const cell = report.results.find((r) => r.contender === id && r.context === context);
        assert.ok(cell, `${id} at ${context}`);
        assert.equal(cell.error, undefined, `${id} at ${context}: ${cell.error}`);
        for (const k of ['prefillTokensPerSecond', 'decodeMsPerToken', 'decodeTokensPerSecond', 'prefillCpuMsPerToken', 'decodeCpuMsPerToken', 'peakRssBytes', 'loadSeconds'] as const) assert.ok(Number.isFinite(cell[k]) && cell[k]! > 0, `${id} at ${context}: ${k} = ${cell[k]}`);
        assert.ok(cell.peakRssBytes! >= cell.rssAfterLoadBytes!);
        assert.equal(cell.generated!.length, 4);
        assert.equal(cell.deviceMemoryBytes, null);
      }
      // Both full-attention contenders run the same model: their greedy tokens agree.
      const base = report.results.find((r) => r.contender === 'base' && r.context === context)!;
      const tjs = report.results.find((r) => r.contender === 'transformers-js' && r.context === context)!;
      assert.deepEqual(tjs.generated, base.generated);
    }
    // Each Titan contender against each of the others, at each context.
    assert.equal(report.ratios.length, 2 * 2 * 2);
    for (const r of report.ratios) assert.ok([r.decode, r.prefill, r.memory, r.decodeCpu, r.prefillCpu].every((v) => v !== null && v > 0));
    assert.equal(report.complete, true);
    assert.deepEqual(report.measurements, { done: 8, planned: 8 });
    assert.ok(report.checks.every((c) => c.pass === null), 'the acceptance contexts (4k and up) were not measured');
    // Quality next to speed: every package contender scored on the same text.
    assert.deepEqual(report.quality.map((q) => q.contender), ['titan-w32', 'base', 'titan-fp16']);
    for (const q of report.quality) {
      assert.equal(q.error, undefined, q.error);
      assert.equal(q.tokens, 200 - Math.ceil(200 / 128));
      assert.ok(Number.isFinite(q.nll) && q.nll! > 0 && q.nll! < 10, `${q.contender}: ${q.nll}`);
    }
  });

  it('writes report.json, report.md and a plot.svg that parses, with every series', TIMEOUT, () => {
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out(), 'report.json'), 'utf8')), report);
    const md = fs.readFileSync(path.join(out(), 'report.md'), 'utf8');
    for (const s of ['## Machine', 'onnxruntime-node', '## Results', '## Ratios', '## Quality (same packages)', '![tokens/s and memory against context length](plot.svg)', report.command, 'titan titanize', '> test run']) assert.ok(md.includes(s), s);

    const svg = fs.readFileSync(path.join(out(), 'plot.svg'), 'utf8');
    assert.equal(XMLValidator.validate(svg), true);
    const tree = new XMLParser({ ignoreAttributes: false, preserveOrder: true }).parse(svg) as SvgNode[];
    const root = elements(tree, 'svg');
    assert.equal(root.length, 1);
    const groups = elements(tree, 'g');
    const panels = groups.filter((g) => attr(g, 'class') === 'panel').map((g) => attr(g, 'data-metric'));
    assert.deepEqual(panels, ['prefill', 'decode', 'decode-cpu', 'memory']);
    const series = groups.filter((g) => attr(g, 'class') === 'series');
    for (const metric of ['prefill', 'decode', 'decode-cpu', 'memory']) {
      for (const id of ids) {
        const s = series.find((g) => attr(g, 'data-metric') === metric && attr(g, 'data-contender') === id);
        assert.ok(s, `${metric} series of ${id}`);
        assert.equal(attr(s, 'data-points'), '2');
        assert.equal(elements([s], 'polyline').length, 1);
        assert.equal(elements([s], 'circle').length, 2);
      }
    }
    const legend = groups.filter((g) => attr(g, 'class') === 'legend-item').map((g) => attr(g, 'data-contender'));
    assert.deepEqual(legend, ids);

    // --render writes the same report.md and plot.svg again from report.json, measuring nothing.
    const again = path.join(tmp, 'rendered');
    const r = titan(['bench', '--render', path.join(out(), 'report.json'), '--out', again], 120_000);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(again, 'plot.svg'), 'utf8'), svg);
    assert.equal(fs.readFileSync(path.join(again, 'report.md'), 'utf8'), md);
    const bad = titan(['bench', '--render', path.join(out(), 'plot.svg')], 120_000);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr.trim(), /^titan bench: --render .*plot\.svg: not a readable report\.json/);
  });

  it('a second preparation reuses the cached packages', TIMEOUT, async () => {
    const specs = [...defaultContenders([32]), parseVariant('titan-fp16=titanize --window 32 --dtype fp16')];
    // (The cache key follows the engine's code: in a tree being edited, the first call may remake.)
    const first = await prepareContenders(specs, { source: DEMO, cacheDir: cache(), dtype: 'fp32', log: () => undefined });
    const prepared = await prepareContenders(specs, { source: DEMO, cacheDir: cache(), dtype: 'fp32', log: () => undefined });
    assert.deepEqual(prepared.map((p) => p.reused), [true, true, true, true]);
    assert.deepEqual(prepared.map((p) => p.dir), first.map((p) => p.dir));
    assert.deepEqual(prepared.map((p) => path.basename(p.dir).replace(/-[0-9a-f]{12}$/, '')), ids);
    // A remade contender (here: another dtype) replaces its older builds in the cache, and only those.
    const fake = path.join(cache(), 'base-0123456789ab');
    fs.mkdirSync(fake);
    const [fp16] = await prepareContenders([defaultContenders([32])[1]], { source: DEMO, cacheDir: cache(), dtype: 'fp16', log: () => undefined });
    assert.equal(fp16.reused, false);
    assert.ok(fs.existsSync(fp16.dir) && !fs.existsSync(fake) && !fs.existsSync(prepared[1].dir));
    assert.ok(fs.existsSync(prepared[0].dir) && fs.existsSync(prepared[2].dir));
    // A prebuilt package joins as a contender of its own kind.
    const pkg = parsePackage(`mine=${fp16.dir}`);
    assert.equal(pkg.role, 'full-attention');
    assert.equal(pkg.window, null);
  });
});

describe('bench pieces', () => {
  it('parses contexts, variants and packages, refusing bad ones with one-line errors', () => {
    assert.deepEqual(['1k', '4K', '300', '64k'].map(parseContext), [1024, 4096, 300, 65536]);
    for (const bad of ['1m', '', 'k', '1'] as const) assert.throws(() => parseContext(bad), ModelError);
    const v = parseVariant('titan-int4=titanize --window 512 --quantize int4');
    assert.deepEqual([v.id, v.role, v.window, v.engine], ['titan-int4', 'titan', 512, 'package']);
    assert.deepEqual((v.make as { cli: string[] }).cli, ['titanize', '--window', '512', '--quantize', 'int4']);
    assert.throws(() => parseVariant('x=generate --prompt hi'), /must be titanize or convert/);
    assert.throws(() => parseVariant('x=titanize --out /tmp/x'), /leave out --out/);
    assert.throws(() => parseVariant('no id'), /takes id=/);
    assert.throws(() => parseVariant('bad id!=convert'), /must be letters/);
    assert.throws(() => parsePackage(`p=${tmp}`), /is not a Titan model package/);
  });

  it('ratios and acceptance checks come from the same run', () => {
    const contenders = [
      { id: 't', role: 'titan', window: 512 },
      { id: 'b', role: 'full-attention', window: null },
      { id: 'j', role: 'transformers-js', window: null },
    ];
    const cell = (contender: string, context: number, decodeMsPerToken: number, prefillTokensPerSecond: number, peakRssBytes: number) => ({ contender, context, decodeMsPerToken, prefillTokensPerSecond, peakRssBytes });
    const results = [cell('t', 1024, 10, 1000, 100), cell('b', 1024, 12, 1500, 90), cell('j', 1024, 11, 1400, 95), cell('t', 4096, 10, 1000, 100), cell('b', 4096, 30, 900, 120), cell('j', 4096, 20, 800, 130), cell('t', 16384, 10, 1000, 104), { contender: 'b', context: 16384, error: 'timed out' }];
    const ratios = computeRatios(contenders, results, [1024, 4096, 16384]);
    assert.equal(ratios.length, 4, 'no ratio against a failed measurement');
    const r4k = ratios.find((r) => r.context === 4096 && r.against === 'b')!;
    assert.deepEqual([r4k.decode, r4k.prefill], [3, 1000 / 900]);
    const checks = computeChecks(contenders, results, ratios);
    const tjs4k = checks.find((c) => c.criterion.includes('over j at 4k'))!;
    assert.deepEqual([tjs4k.measured, tjs4k.pass], [2, true]);
    assert.equal(checks.find((c) => c.criterion.includes('at 16k'))!.pass, null);
  });

  it('the plot writer survives an empty or one-point run', () => {
    const svg = renderPlot('t <&>', 's', [{ metric: 'm', title: 'T', yLabel: 'y', logY: true, series: [{ id: 'a', label: 'A', points: [] }, { id: 'b', label: 'B', points: [[64, 5]] }] }], [64]);
    assert.equal(XMLValidator.validate(svg), true);
    assert.ok(svg.includes('t &lt;&amp;&gt;'));
  });
});

describe('synthetic checkpoints', () => {
  it('llama-1b has Llama-3.2-1B\'s shapes and parameter count', () => {
    const s = SYNTHETIC_SHAPES['llama-1b'];
    assert.deepEqual([s.numLayers, s.hiddenSize, s.numHeads, s.numKvHeads, s.headDim, s.intermediateSize, s.vocabSize, s.tieWordEmbeddings], [16, 2048, 32, 8, 64, 8192, 128256, true]);
    assert.equal(parameterCount(s), 1_235_814_400);
  });

  it('writes a loadable, convertible checkpoint with a byte tokenizer', TIMEOUT, async () => {
    const dir = path.join(tmp, 'synthetic-tiny');
    const made = await writeSyntheticCheckpoint(dir, 'llama-tiny', { seed: 3 });
    assert.equal(made.parameters, parameterCount(SYNTHETIC_SHAPES['llama-tiny']));
    assert.equal(made.bytes, made.parameters * 2);
    const config = loadModelConfig(dir);
    assert.deepEqual([config.numLayers, config.hiddenSize, config.numHeads, config.numKvHeads, config.headDim, config.vocabSize, config.tieWordEmbeddings], [2, 64, 4, 2, 16, 512, true]);
    const tokenizer = loadTokenizer(dir);
    const ids = tokenizer.encode('héllo <|end_of_text|>');
    assert.deepEqual(ids, [104, 195, 169, 108, 108, 111, 32, 501]);
    assert.equal(tokenizer.decode(ids), 'héllo <|end_of_text|>');
    const pkg = path.join(tmp, 'synthetic-tiny-pkg');
    writePackage(dir, pkg, { dtype: 'fp32', window: null, kind: 'base' });
    const model = await ModelRunner.open(pkg, { provider: 'cpu' });
    try {
      const [row] = await model.forward(ids, [ids.length - 1]);
      assert.equal(row.length, 512);
      assert.ok(row.every(Number.isFinite));
    } finally {
      await model.release();
    }
    await assert.rejects(writeSyntheticCheckpoint(path.join(tmp, 'x'), 'gpt-5'), ModelError);
  });

  it('llama-1b\'s byte tokenizer loads: special tokens at 128000, far past its 256 byte tokens', () => {
    // The loader refuses ids far past a vocabulary's size (a 2^31 id hung the library); Llama 3's
    // special ids are not far in that sense, and the GPU benchmarks read this tokenizer.
    const dir = path.join(tmp, 'synthetic-1b-tokenizer');
    fs.mkdirSync(dir, { recursive: true });
    writeByteTokenizer(dir, SYNTHETIC_SHAPES['llama-1b']);
    const tokenizer = loadTokenizer(dir);
    const ids = tokenizer.encode('ok<|end_of_text|>');
    assert.deepEqual(ids, [111, 107, 128001]);
    assert.equal(tokenizer.decode(ids), 'ok<|end_of_text|>');
  });

  it('the bench command writes one with --synthetic … --model-only, and refuses bad options in one line', TIMEOUT, () => {
    const dir = path.join(tmp, 'synthetic-cli');
    const r = titan(['bench', '--synthetic', 'llama-tiny', '--out-model', dir, '--model-only', '--json'], 60_000);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { model: dir, shape: 'llama-tiny' });
    assert.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
    for (const [args, message] of [
      [['bench', '--synthetic', 'gpt-5'], '--synthetic must be one of llama-1b, llama-tiny'],
      [['bench', '--model', DEMO, '--contexts', '1m'], 'context "1m" must be a number of tokens'],
      [['bench', '--model', DEMO, '--only', 'nobody'], '--only: no contender "nobody"'],
    ] as [string[], string][]) {
      const bad = titan(args, 60_000);
      assert.notEqual(bad.status, 0);
      const lines = bad.stderr.trim().split('\n');
      assert.equal(lines.length, 1, bad.stderr);
      assert.ok(lines[0].includes(message), lines[0]);
    }
  });
});
