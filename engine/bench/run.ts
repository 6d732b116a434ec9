// `titan bench`: every contender on the same token stream at every context length, one process per
// (contender, context) so each memory figure is its own, all in one run so ratios compare like with like.
import { execFile, fork } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { loadModelConfig } from '../model/config';
import { loadTokenizer } from '../model/tokenizer';
import { ModelRunner, type ProviderChoice } from '../runtime/session';
import { entryPoint, prepareContenders, type ContenderSpec, type PreparedContender } from './contenders';
import { machineInfo, nvidiaMemoryUsed, type MachineInfo } from './machine';
import { writeStream, type MeasureJob, type MeasureResult } from './measure';
import { streamPerplexity, tokenizeTextFile } from './perplexity';

export const REPORT_VERSION = 1;

export interface BenchOptions {
  /** Hugging Face checkpoint folder every contender is made from. */
  source: string;
  contenders: ContenderSpec[];
  contexts: number[];
  provider: ProviderChoice;
  threads?: number;
  dtype: 'fp32' | 'fp16';
  decodeTokens: number;
  prefillChunk: number;
  cacheDir: string;
  /** Text whose tokens form the stream (default: the engine's own sources, repeated). */
  textFile?: string;
  /** A measurement running longer than this is stopped and reported as timed out. */
  timeoutSeconds: number;
  /** The command line as typed, for the report. */
  command: string;
  /** Extra facts for the report (e.g. that the machine was shared). */
  notes?: string[];
  log: (line: string) => void;
  /** Score every package contender on this text (`titan perplexity`), so quality sits next to speed. */
  perplexity?: { file: string; context: number | null; maxTokens: number };
  /** Called with the report so far after every measurement (so a cut-short run still leaves one). */
  onProgress?: (partial: BenchReport) => void;
  signal?: AbortSignal;
}

export interface BenchCell extends Partial<MeasureResult> {
  contender: string;
  context: number;
  /** Peak resident memory of the measuring process: max of getrusage and the parent's sampling. */
  peakRssBytes?: number;
  /** Peak device memory above the idle level (nvidia-smi), where the provider is a GPU. */
  deviceMemoryBytes?: number | null;
  wallSeconds?: number;
  /** 1-minute load average when the measurement started: other work on the machine skews timings. */
  loadAverage?: number;
  error?: string;
}

export interface BenchRatio {
  context: number;
  contender: string;
  against: string;
  /** Decode speed-up: their ms/token ÷ ours. */
  decode: number | null;
  /** Prefill speed-up: our tokens/s ÷ theirs. */
  prefill: number | null;
  /** Peak memory: ours ÷ theirs. */
  memory: number | null;
  /** The same speed-ups in CPU time per token (robust to other work on the machine). */
  decodeCpu: number | null;
  prefillCpu: number | null;
}

export interface BenchCheck {
  criterion: string;
  measured: number | null;
  threshold: number;
  pass: boolean | null;
}

export interface BenchReport {
  version: number;
  createdAt: string;
  command: string;
  machine: MachineInfo;
  provider: string;
  dtype: string;
  threads: number | null;
  model: { source: string; modelType: string; parameters: number | null; layers: number; hidden: number; heads: number; kvHeads: number; vocab: number; synthetic: unknown };
  stream: { source: string; tokens: number };
  settings: { contexts: number[]; decodeTokens: number; prefillChunk: number };
  contenders: { id: string; label: string; role: string; engine: string; window: number | null; dir: string; command: string | null }[];
  results: BenchCell[];
  ratios: BenchRatio[];
  checks: BenchCheck[];
  notes: string[];
  /** Held-out NLL of each package contender on the --perplexity file (empty without it). */
  quality: { contender: string; file: string; context: number | null; tokens: number; nll: number | null; perplexity: number | null; buckets: { name: string; tokens: number; nll: number | null }[]; error?: string }[];
  /** False while measurements are still to come (a partial report written along the way). */
  complete: boolean;
  measurements: { done: number; planned: number };
  seconds: number;
}

/** "1k" → 1024, "64k" → 65536, "300" → 300. */
export function parseContext(s: string): number {
  const m = /^(\d+)([kK]?)$/.exec(s.trim());
  if (!m) throw new ModelError(`context "${s}" must be a number of tokens, optionally with k (×1024), e.g. 4k`);
  const n = Number(m[1]) * (m[2] ? 1024 : 1);
  if (n < 2) throw new ModelError(`context ${s} is too short (at least 2 tokens)`);
  return n;
}

export function formatContext(n: number): string {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024}k` : String(n);
}

/** Where the default stream's text comes from: the engine's own TypeScript sources. */
function defaultCorpus(): { text: string; source: string } {
  let dir = __dirname;
  while (dir !== path.dirname(dir) && !fs.existsSync(path.join(dir, 'engine', 'cli.ts'))) dir = path.dirname(dir);
  const engine = path.join(dir, 'engine');
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.name.endsWith('.ts')) files.push(path.join(d, e.name));
    }
  };
  if (fs.existsSync(engine)) walk(engine);
  if (files.length === 0) throw new ModelError('no default text for the token stream (engine sources not found); pass --text FILE');
  return { text: files.map((f) => `// ${path.relative(dir, f)}\n${fs.readFileSync(f, 'utf8')}`).join('\n'), source: 'the engine sources (engine/**/*.ts), repeated' };
}

/** The token stream every contender reads: `length` tokens of text, the text repeated as needed. */
function makeStream(options: BenchOptions, length: number): { file: string; source: string } {
  const corpus = options.textFile ? { text: fs.readFileSync(options.textFile, 'utf8'), source: `${options.textFile}, repeated` } : defaultCorpus();
  const tokenizer = loadTokenizer(options.source);
  const piece = tokenizer.encode(corpus.text, { addSpecialTokens: false });
  if (piece.length === 0) throw new ModelError('the stream text encodes to no tokens');
  const ids: number[] = [];
  while (ids.length < length) ids.push(...piece.slice(0, length - ids.length));
  const key = crypto.createHash('sha256').update(Int32Array.from(ids)).digest('hex').slice(0, 12);
  const file = path.join(options.cacheDir, `stream-${key}.i32`);
  if (!fs.existsSync(file)) writeStream(file, ids);
  return { file, source: corpus.source };
}

function readRss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function gpuMemoryUsed(): Promise<number | null> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '--id=0'], { timeout: 10_000 }, (err, out) => {
      const mib = Number(String(out).trim());
      resolve(err || !Number.isFinite(mib) ? null : mib * 2 ** 20);
    });
  });
}

/** Runs one job in its own process, sampling its resident (and device) memory from outside. */
async function runJob(job: MeasureJob, options: BenchOptions, gpu: boolean): Promise<BenchCell> {
  const entry = entryPoint('bench-child.js', 'child.ts');
  const cell: BenchCell = { contender: job.contender.id, context: job.context, loadAverage: Math.round(os.loadavg()[0] * 100) / 100 };
  const t0 = performance.now();
  const idleDevice = gpu ? nvidiaMemoryUsed() : null;
  let sampledRss = 0;
  let sampledDevice = 0;
  const child = fork(entry.file, [], { execArgv: entry.execArgv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'json' });
  let stderr = '';
  child.stdout!.resume();
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const rssTimer = setInterval(() => {
    const rss = readRss(child.pid!);
    if (rss !== null) sampledRss = Math.max(sampledRss, rss);
  }, 50);
  const deviceTimer = gpu
    ? setInterval(() => {
        void gpuMemoryUsed().then((m) => {
          if (m !== null) sampledDevice = Math.max(sampledDevice, m);
        });
      }, 250)
    : null;
  const onAbort = () => child.kill('SIGKILL');
  options.signal?.addEventListener('abort', onAbort);
  try {
    const reply = await new Promise<{ type: 'result'; result: MeasureResult } | { type: 'error'; message: string }>((resolve) => {
      let settled = false;
      const settle = (v: { type: 'result'; result: MeasureResult } | { type: 'error'; message: string }) => {
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        settle({ type: 'error', message: `timed out after ${options.timeoutSeconds} s` });
      }, options.timeoutSeconds * 1000);
      child.on('message', (m: { type: 'result'; result: MeasureResult } | { type: 'error'; message: string }) => settle(m));
      child.on('exit', (code, sig) => {
        clearTimeout(timer);
        const last = stderr.trim().split('\n').pop() ?? '';
        settle({ type: 'error', message: sig ? `killed by ${sig}${sig === 'SIGKILL' ? ' (out of memory?)' : ''}` : `exited with code ${code}${last ? `: ${last}` : ''}` });
      });
      child.send(job);
    });
    await new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
    if (reply.type === 'error') cell.error = reply.message;
    else {
      Object.assign(cell, reply.result);
      cell.peakRssBytes = Math.max(reply.result.maxRssBytes, sampledRss);
    }
    cell.deviceMemoryBytes = gpu && idleDevice !== null && sampledDevice > 0 ? Math.max(0, sampledDevice - idleDevice) : null;
  } finally {
    clearInterval(rssTimer);
    if (deviceTimer) clearInterval(deviceTimer);
    options.signal?.removeEventListener('abort', onAbort);
  }
  cell.wallSeconds = (performance.now() - t0) / 1000;
  return cell;
}

function find(results: BenchCell[], contender: string, context: number): BenchCell | undefined {
  return results.find((r) => r.contender === contender && r.context === context && !r.error);
}

export function computeRatios(contenders: { id: string; role: string }[], results: BenchCell[], contexts: number[]): BenchRatio[] {
  const ratios: BenchRatio[] = [];
  const titans = contenders.filter((c) => c.role === 'titan');
  const others = contenders.filter((c) => c.role !== 'titan');
  for (const context of contexts) {
    for (const t of titans) {
      for (const o of others) {
        const a = find(results, t.id, context);
        const b = find(results, o.id, context);
        if (!a || !b) continue;
        ratios.push({
          context,
          contender: t.id,
          against: o.id,
          decode: a.decodeMsPerToken && b.decodeMsPerToken ? b.decodeMsPerToken / a.decodeMsPerToken : null,
          prefill: a.prefillTokensPerSecond && b.prefillTokensPerSecond ? a.prefillTokensPerSecond / b.prefillTokensPerSecond : null,
          memory: a.peakRssBytes && b.peakRssBytes ? a.peakRssBytes / b.peakRssBytes : null,
          decodeCpu: a.decodeCpuMsPerToken && b.decodeCpuMsPerToken ? b.decodeCpuMsPerToken / a.decodeCpuMsPerToken : null,
          prefillCpu: a.prefillCpuMsPerToken && b.prefillCpuMsPerToken ? b.prefillCpuMsPerToken / a.prefillCpuMsPerToken : null,
        });
      }
    }
  }
  return ratios;
}

/** The issue's CPU acceptance figures, evaluated where this run measured them. */
export function computeChecks(contenders: { id: string; role: string; window: number | null }[], results: BenchCell[], ratios: BenchRatio[], quality: BenchReport['quality'] = []): BenchCheck[] {
  const titan = contenders.find((c) => c.role === 'titan' && c.window === 512) ?? contenders.find((c) => c.role === 'titan');
  const base = contenders.find((c) => c.role === 'full-attention');
  const tjs = contenders.find((c) => c.role === 'transformers-js');
  if (!titan) return [];
  const ratio = (against: string | undefined, context: number, field: 'decode' | 'prefill') => ratios.find((r) => r.contender === titan.id && r.against === against && r.context === context)?.[field] ?? null;
  const check = (criterion: string, measured: number | null, threshold: number, higherIsBetter = true): BenchCheck => ({
    criterion,
    measured,
    threshold,
    pass: measured === null ? null : higherIsBetter ? measured >= threshold : measured <= threshold,
  });
  const checks = [
    check(`${titan.id} decode speed-up over ${base?.id ?? 'full attention'} at 16k`, ratio(base?.id, 16384, 'decode'), 4),
    check(`${titan.id} decode speed-up over ${base?.id ?? 'full attention'} at 64k`, ratio(base?.id, 65536, 'decode'), 10),
    check(`${titan.id} prefill speed-up over ${base?.id ?? 'full attention'} at 64k`, ratio(base?.id, 65536, 'prefill'), 3),
    check(`${titan.id} decode speed-up over ${tjs?.id ?? 'transformers.js'} at 4k`, ratio(tjs?.id, 4096, 'decode'), 1.5),
  ];
  const at1k = find(results, titan.id, 1024)?.peakRssBytes;
  const at64k = find(results, titan.id, 65536)?.peakRssBytes;
  checks.push(check(`${titan.id} peak memory at 64k ÷ at 1k`, at1k && at64k ? at64k / at1k : null, 1.1, false));
  // int4 twins (`--int4`: id-int4 beside id): decode ≥ 2× the fp twin's speed, perplexity within 3 %.
  for (const q of contenders.filter((c) => c.id.endsWith('-int4'))) {
    const twin = contenders.find((c) => c.id === q.id.slice(0, -'-int4'.length));
    if (!twin) continue;
    for (const context of [...new Set(results.map((r) => r.context))].sort((a, b) => a - b)) {
      const a = find(results, twin.id, context);
      const b = find(results, q.id, context);
      if (!a || !b) continue;
      checks.push(check(`${q.id} decode speed-up over ${twin.id} at ${formatContext(context)}`, a.decodeMsPerToken && b.decodeMsPerToken ? a.decodeMsPerToken / b.decodeMsPerToken : null, 2));
      checks.push(check(`${q.id} decode speed-up over ${twin.id} at ${formatContext(context)}, CPU time`, a.decodeCpuMsPerToken && b.decodeCpuMsPerToken ? a.decodeCpuMsPerToken / b.decodeCpuMsPerToken : null, 2));
    }
    const pa = quality.find((r) => r.contender === twin.id)?.perplexity;
    const pb = quality.find((r) => r.contender === q.id)?.perplexity;
    checks.push(check(`${q.id} perplexity ÷ ${twin.id}'s`, pa && pb ? pb / pa : null, 1.03, false));
  }
  return checks;
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const t0 = performance.now();
  const contexts = [...new Set(options.contexts)].sort((a, b) => a - b);
  const ids = new Set<string>();
  for (const c of options.contenders) {
    if (ids.has(c.id)) throw new ModelError(`two contenders are called "${c.id}"`);
    ids.add(c.id);
  }
  const config = loadModelConfig(options.source);
  fs.mkdirSync(options.cacheDir, { recursive: true });
  const machine = machineInfo();
  const stream = makeStream(options, contexts[contexts.length - 1]);
  const results: BenchCell[] = [];
  const prepared: PreparedContender[] = await prepareContenders(options.contenders, { source: options.source, cacheDir: options.cacheDir, dtype: options.dtype, log: options.log, signal: options.signal });

  const contenders = prepared.map((c) => ({ id: c.id, label: c.label, role: c.role, engine: c.engine, window: c.window, dir: c.dir, command: c.command }));
  const raw = config.raw as Record<string, unknown>;
  let parameters: number | null = null;
  try {
    const idx = JSON.parse(fs.readFileSync(path.join(options.source, 'model.safetensors.index.json'), 'utf8')) as { metadata?: { total_parameters?: number } };
    parameters = idx.metadata?.total_parameters ?? null;
  } catch {
    /* single-file checkpoints do not record it */
  }
  const planned = contexts.length * prepared.length;
  const quality: BenchReport['quality'] = [];
  const assemble = (complete: boolean): BenchReport => {
    const ratios = computeRatios(contenders, results, contexts);
    return {
      version: REPORT_VERSION,
      createdAt: new Date().toISOString(),
      command: options.command,
      machine,
      provider,
      dtype: options.dtype,
      threads: options.threads ?? null,
      model: {
        source: path.resolve(options.source),
        modelType: config.modelType,
        parameters,
        layers: config.numLayers,
        hidden: config.hiddenSize,
        heads: config.numHeads,
        kvHeads: config.numKvHeads,
        vocab: config.vocabSize,
        synthetic: raw.titan_synthetic ?? null,
      },
      stream: { source: stream.source, tokens: contexts[contexts.length - 1] },
      settings: { contexts, decodeTokens: options.decodeTokens, prefillChunk: options.prefillChunk },
      contenders,
      results: [...results],
      ratios,
      checks: computeChecks(contenders, results, ratios, quality),
      quality: [...quality],
      notes: options.notes ?? [],
      complete,
      measurements: { done: results.length, planned },
      seconds: (performance.now() - t0) / 1000,
    };
  };

  // `auto` is settled once, by the first package contender, so every contender runs on the same provider.
  let provider: ProviderChoice = options.provider;
  const failed = new Set<string>();
  const gpu = () => provider !== 'cpu' && machine.gpus.length > 0;
  for (const context of contexts) {
    const order = [...prepared].sort((a, b) => (a.engine === 'package' ? 0 : 1) - (b.engine === 'package' ? 0 : 1));
    for (const c of order) {
      if (options.signal?.aborted) throw new ModelError('bench cancelled');
      if (failed.has(c.id)) {
        results.push({ contender: c.id, context, error: 'skipped: failed at a shorter context' });
        continue;
      }
      options.log(`${c.id} at ${formatContext(context)} …`);
      const job: MeasureJob = {
        contender: { id: c.id, engine: c.engine, dir: c.dir, dtype: options.dtype },
        context,
        decodeTokens: options.decodeTokens,
        prefillChunk: options.prefillChunk,
        streamFile: stream.file,
        provider,
        threads: options.threads,
      };
      const cell = await runJob(job, options, gpu());
      if (cell.error) {
        failed.add(c.id);
        options.log(`${c.id} at ${formatContext(context)}: ${cell.error}`);
      } else {
        if (provider === 'auto' && c.engine === 'package' && cell.provider) provider = cell.provider as ProviderChoice;
        options.log(`${c.id} at ${formatContext(context)}: prefill ${cell.prefillTokensPerSecond!.toFixed(0)} tok/s, decode ${cell.decodeMsPerToken!.toFixed(1)} ms/token, peak RSS ${((cell.peakRssBytes ?? 0) / 2 ** 20).toFixed(0)} MiB`);
      }
      results.push(cell);
      options.onProgress?.(assemble(false));
    }
  }
  if (options.perplexity) {
    const { file, context, maxTokens } = options.perplexity;
    const { ids } = tokenizeTextFile(file, loadTokenizer(options.source));
    for (const c of prepared.filter((p) => p.engine === 'package')) {
      options.log(`${c.id}: perplexity of ${file} …`);
      try {
        const model = await ModelRunner.open(c.dir, { provider, threads: options.threads });
        try {
          const r = await streamPerplexity(model, ids.slice(0, maxTokens), { context, signal: options.signal });
          quality.push({ contender: c.id, file, context, tokens: r.tokens, nll: r.nll, perplexity: r.perplexity, buckets: r.buckets.map((b) => ({ name: b.name, tokens: b.tokens, nll: b.nll })) });
        } finally {
          await model.release();
        }
      } catch (e) {
        quality.push({ contender: c.id, file, context, tokens: 0, nll: null, perplexity: null, buckets: [], error: (e as Error).message.split('\n')[0] });
      }
    }
  }
  return assemble(true);
}
