// titan perplexity · titan bench
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultContenders, int4Twins, parsePackage, parseVariant, type ContenderSpec } from '../bench/contenders';
import { readTextFile, streamPerplexity, tokenizeTextFile, type PerplexityResult } from '../bench/perplexity';
import { formatTable, writeReports } from '../bench/report';
import { formatContext, parseContext, REPORT_VERSION, runBench, type BenchReport } from '../bench/run';
import { SYNTHETIC_SHAPES, writeSyntheticCheckpoint } from '../bench/synthetic';
import { ModelError } from '../model/errors';
import { loadTokenizer } from '../model/tokenizer';
import { ModelRunner, type ProviderChoice } from '../runtime/session';
import { readPackage } from '../titanize/package';
import { choice, flag, int, noExtraPositionals, positional, str } from './args';
import { providerOption, threadsOption } from './model-commands';
import { UsageError, type Command, type CommandContext } from './types';

const fmt = (v: number | null, digits = 4) => (v === null ? '–' : v.toFixed(digits));

function perplexityText(file: string, r: PerplexityResult): string {
  const head = `${file}: ${fmt(r.nll)} nats/token (perplexity ${fmt(r.perplexity, 3)}${r.bitsPerByte === null ? '' : `, ${fmt(r.bitsPerByte, 3)} bits/byte`}) over ${r.tokens} tokens, context ${r.context ?? 'unbounded'}`;
  const buckets = r.buckets.map((b) => `  positions ${b.name.padEnd(7)} ${b.tokens ? `${fmt(b.nll)} nats/token over ${b.tokens} tokens` : 'no tokens'}`);
  return [head, ...buckets, `  ${r.streamTokens} tokens in ${r.seconds.toFixed(1)} s (${r.tokensPerSecond.toFixed(0)} tokens/s)`].join('\n') + '\n';
}

export const perplexityCommand: Command = {
  name: 'perplexity',
  usage: 'perplexity <package-dir> --file F [--context N] [--segment N] [--json]',
  summary: 'Held-out negative log-likelihood of a text file under a package, overall and by position in the context.',
  options: {
    file: { type: 'string', help: 'the text file to score' },
    context: { type: 'string', help: 'reset the model every N tokens (default: the whole file is one context)' },
    segment: { type: 'string', help: 'tokens per forward call (default: up to 512, fewer for large vocabularies)' },
    provider: providerOption,
    threads: threadsOption,
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    noExtraPositionals(ctx, 1);
    const file = str(ctx, 'file');
    if (!file) throw new UsageError('missing --file F');
    const context = str(ctx, 'context') === undefined ? null : int(ctx, 'context', 0, 2);
    const segment = str(ctx, 'segment') === undefined ? undefined : int(ctx, 'segment', 0, 1);
    readPackage(dir);
    const tokenizer = loadTokenizer(dir);
    const { ids, bytes } = tokenizeTextFile(file, tokenizer);
    // A one-shot command: the runner may block this thread (cancellation is checked between calls).
    const model = await ModelRunner.open(dir, { provider: choice<ProviderChoice>(ctx, 'provider', ['auto', 'webgpu', 'cuda', 'cpu'], 'auto'), threads: int(ctx, 'threads', 0, 0) || undefined });
    try {
      const result = await streamPerplexity(model, ids, { context, segment, textBytes: bytes, signal: ctx.signal });
      if (flag(ctx, 'json')) process.stdout.write(JSON.stringify({ package: path.resolve(dir), file: path.resolve(file), provider: model.provider.provider, ...result }) + '\n');
      else process.stdout.write(perplexityText(file, result));
    } finally {
      await model.release();
    }
  },
};

/** The demo model: the bundled copy beside the engine, found from this file (source or bundle). */
function demoModel(): string {
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, 'media', 'models', 'code-llama-19m');
    if (fs.existsSync(path.join(candidate, 'config.json'))) return candidate;
    if (dir === path.dirname(dir)) throw new ModelError('the bundled demo model (media/models/code-llama-19m) was not found; pass --model <hf-dir>');
    dir = path.dirname(dir);
  }
}

function list(ctx: CommandContext, name: string): string[] {
  const v = ctx.values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

/** The command line as typed (reconstructed from the parsed options), for the report. */
function commandLine(ctx: CommandContext): string {
  const quote = (a: string) => (/^[\w./=,:+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  const parts = ['titan', 'bench', ...ctx.positionals.map(quote)];
  for (const [k, v] of Object.entries(ctx.values)) {
    if (v === undefined || v === false) continue;
    if (v === true) parts.push(`--${k}`);
    else for (const one of Array.isArray(v) ? v : [v]) parts.push(`--${k}`, quote(one));
  }
  return parts.join(' ');
}

export const benchCommand: Command = {
  name: 'bench',
  usage: 'bench [--model <hf-dir> | --synthetic llama-1b --out-model DIR] [--contexts 1k,4k,16k,64k] [--window 512,1024] [--provider P] [--dtype fp32|fp16] [--int4] [--only ids] [--quick] [--json] [--out DIR]',
  summary: 'Benchmark Titan packages against full attention and transformers.js: prefill, decode and memory against context length.',
  options: {
    model: { type: 'string', help: 'Hugging Face checkpoint to make every contender from (default: the bundled demo model)' },
    synthetic: { type: 'string', help: `write a random-weight checkpoint of this shape and bench it (${Object.keys(SYNTHETIC_SHAPES).join(', ')})` },
    'out-model': { type: 'string', help: 'where --synthetic writes its checkpoint (default: in the cache folder); kept and reused' },
    'model-only': { type: 'boolean', help: 'with --synthetic: write the checkpoint and stop' },
    contexts: { type: 'string', help: 'context lengths, comma-separated, k = ×1024 (default 1k,4k,16k,64k; --quick: 64,256)' },
    window: { type: 'string', help: 'Titan softmax windows, one contender each (default 512,1024; --quick: 32)' },
    only: { type: 'string', help: 'run only these contender ids, comma-separated (e.g. titan-w512,base)' },
    variant: { type: 'string', multiple: true, help: 'another contender made by a titan command, e.g. "titan-int4=titanize --window 512 --quantize int4" (repeatable)' },
    package: { type: 'string', multiple: true, help: 'another contender from a prebuilt package: id=DIR (repeatable)' },
    int4: { type: 'boolean', help: 'also an int4-weight twin of every package contender the bench makes (id-int4: its command + --quantize int4)' },
    provider: providerOption,
    threads: threadsOption,
    dtype: { type: 'string', help: 'weight precision of the packages and the export: fp32 (default) or fp16' },
    'decode-tokens': { type: 'string', help: 'tokens decoded after each context (default 32; --quick: 4)' },
    'prefill-chunk': { type: 'string', help: 'tokens per prefill call (default 512; --quick: 64)' },
    text: { type: 'string', help: 'text file whose tokens form the stream (default: the engine sources, repeated)' },
    cache: { type: 'string', help: 'folder for the packages and exports the bench makes (default .titan/bench)' },
    out: { type: 'string', help: 'folder for report.json, report.md and plot.svg (default bench)' },
    timeout: { type: 'string', help: 'seconds one measurement may take before it is stopped (default 3600)' },
    perplexity: { type: 'string', help: 'also score every package contender on this text file (held-out NLL next to speed)' },
    'perplexity-context': { type: 'string', help: 'context of that scoring, in tokens (default 1024)' },
    'perplexity-tokens': { type: 'string', help: 'score at most this many tokens of the file (default 4096)' },
    note: { type: 'string', multiple: true, help: 'a line for the report, e.g. that the machine was shared (repeatable)' },
    quick: { type: 'boolean', help: 'tiny contexts and few tokens: checks the harness end to end in seconds' },
    render: { type: 'string', help: 'measure nothing: write report.md and plot.svg again from this report.json (into --out)' },
    json: { type: 'boolean', help: 'print the report as JSON (the table goes to stderr)' },
  },
  async run(ctx) {
    noExtraPositionals(ctx, 0);
    const render = str(ctx, 'render');
    if (render !== undefined) {
      let report: BenchReport;
      try {
        report = JSON.parse(fs.readFileSync(render, 'utf8')) as BenchReport;
      } catch (e) {
        throw new ModelError(`--render ${render}: not a readable report.json (${(e as Error).message.split('\n')[0]})`);
      }
      if (report?.version !== REPORT_VERSION || !Array.isArray(report.results)) throw new ModelError(`--render ${render}: not a titan bench report (version ${REPORT_VERSION})`);
      const files = writeReports(report, path.resolve(str(ctx, 'out') ?? path.dirname(render)));
      process.stdout.write(`wrote ${files.markdown}, ${files.plot}\n`);
      return;
    }
    const quick = flag(ctx, 'quick');
    const cacheDir = path.resolve(str(ctx, 'cache') ?? path.join('.titan', 'bench'));
    const json = flag(ctx, 'json');
    const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

    let source = str(ctx, 'model');
    const synthetic = str(ctx, 'synthetic');
    if (synthetic !== undefined) {
      if (source !== undefined) throw new UsageError('--model and --synthetic exclude each other');
      if (!SYNTHETIC_SHAPES[synthetic]) throw new UsageError(`--synthetic must be one of ${Object.keys(SYNTHETIC_SHAPES).join(', ')}, got "${synthetic}"`);
      source = path.resolve(str(ctx, 'out-model') ?? path.join(cacheDir, `synthetic-${synthetic}`));
      if (fs.existsSync(path.join(source, 'model.safetensors.index.json'))) log(`using the synthetic ${synthetic} checkpoint in ${source}`);
      else {
        log(`writing a synthetic ${synthetic} checkpoint (random weights) to ${source} …`);
        const made = await writeSyntheticCheckpoint(source, synthetic);
        log(`wrote ${(made.parameters / 1e6).toFixed(0)}M parameters (${(made.bytes / 2 ** 30).toFixed(2)} GiB) in ${made.seconds.toFixed(0)} s`);
      }
      if (flag(ctx, 'model-only')) {
        process.stdout.write(json ? JSON.stringify({ model: source, shape: synthetic }) + '\n' : `${source}\n`);
        return;
      }
    } else if (flag(ctx, 'model-only') || str(ctx, 'out-model') !== undefined) throw new UsageError('--out-model and --model-only go with --synthetic');
    source = source ?? demoModel();
    if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new ModelError(`${source} is not a folder`);

    const contexts = (str(ctx, 'contexts') ?? (quick ? '64,256' : '1k,4k,16k,64k')).split(',').map(parseContext);
    const windows = (str(ctx, 'window') ?? (quick ? '32' : '512,1024')).split(',').map((w) => {
      if (!/^\d+$/.test(w.trim()) || Number(w) < 1) throw new UsageError(`--window must be a comma-separated list of positive integers, got "${w}"`);
      return Number(w);
    });
    let contenders: ContenderSpec[] = [...defaultContenders(windows), ...list(ctx, 'variant').map(parseVariant), ...list(ctx, 'package').map(parsePackage)];
    if (flag(ctx, 'int4')) contenders = int4Twins(contenders);
    const only = str(ctx, 'only');
    if (only !== undefined) {
      const wanted = only.split(',').map((s) => s.trim());
      for (const w of wanted) if (!contenders.some((c) => c.id === w)) throw new UsageError(`--only: no contender "${w}" (contenders: ${contenders.map((c) => c.id).join(', ')})`);
      contenders = contenders.filter((c) => wanted.includes(c.id));
    }
    const outDir = path.resolve(str(ctx, 'out') ?? 'bench');
    const textFile = str(ctx, 'text');
    if (textFile !== undefined && !fs.existsSync(textFile)) throw new ModelError(`--text ${textFile} does not exist`);
    const scored = str(ctx, 'perplexity');
    if (scored !== undefined) readTextFile(scored);

    const report = await runBench({
      source,
      contenders,
      contexts,
      provider: choice<ProviderChoice>(ctx, 'provider', ['auto', 'webgpu', 'cuda', 'cpu'], 'auto'),
      threads: int(ctx, 'threads', 0, 0) || undefined,
      dtype: choice(ctx, 'dtype', ['fp32', 'fp16'] as const, 'fp32'),
      decodeTokens: int(ctx, 'decode-tokens', quick ? 4 : 32, 1),
      prefillChunk: int(ctx, 'prefill-chunk', quick ? 64 : 512, 1),
      cacheDir,
      textFile,
      timeoutSeconds: int(ctx, 'timeout', 3600, 1),
      command: commandLine(ctx),
      notes: list(ctx, 'note'),
      perplexity: str(ctx, 'perplexity') === undefined ? undefined : { file: str(ctx, 'perplexity')!, context: int(ctx, 'perplexity-context', 1024, 2), maxTokens: int(ctx, 'perplexity-tokens', 4096, 2) },
      log,
      signal: ctx.signal,
      onProgress: (partial) => writeReports(partial, outDir),
    });
    const files = writeReports(report, outDir);
    const summary = `contexts ${report.settings.contexts.map(formatContext).join(', ')} on ${report.provider}; wrote ${files.json}, ${files.markdown}, ${files.plot}\n`;
    if (json) {
      process.stderr.write(formatTable(report) + summary);
      process.stdout.write(JSON.stringify(report) + '\n');
    } else process.stdout.write(formatTable(report) + summary);
  },
};
