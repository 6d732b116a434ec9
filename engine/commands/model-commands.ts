// titan convert · titan generate · titan logits
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { loadTokenizer } from '../model/tokenizer';
import { generate } from '../runtime/generate';
import type { ProviderChoice } from '../runtime/session';
import { WorkerModel, type ForwardModel } from '../runtime/worker-client';
import { readPackage, writePackage, type PackageDType } from '../titanize/package';
import { choice, flag, int, intList, noExtraPositionals, num, positional, str } from './args';
import { quantizationFromArgs, quantizationLabel, quantizeOptions } from './titanize-command';
import { UsageError, type Command, type CommandContext } from './types';

const PROVIDERS = ['auto', 'webgpu', 'cuda', 'cpu'] as const;

export const providerOption = { type: 'string', help: 'execution provider: auto (cuda, then webgpu, then cpu), webgpu, cuda or cpu' } as const;
export const threadsOption = { type: 'string', help: 'CPU threads for the model (default: all cores)' } as const;

export async function openModel(ctx: CommandContext, dir: string): Promise<ForwardModel> {
  const provider = choice<ProviderChoice>(ctx, 'provider', PROVIDERS, 'auto');
  const threads = int(ctx, 'threads', 0, 0) || undefined;
  return WorkerModel.open(dir, { provider, threads });
}

function outDir(ctx: CommandContext): string {
  const out = str(ctx, 'out');
  if (!out) throw new UsageError('missing --out <dir>');
  return out;
}

export const convertCommand: Command = {
  name: 'convert',
  usage: 'convert <hf-dir> --out <dir> [--dtype fp32|fp16] [--quantize int4 [--quant-block B] [--quant-symmetric] [--quant-head int8|int4|keep] [--quant-accuracy 0|1|4]] [--json]',
  summary: 'Convert a Hugging Face checkpoint folder into a self-contained Titan model package (base model).',
  options: {
    out: { type: 'string', help: 'package folder to write' },
    dtype: { type: 'string', help: 'weight precision in the package: fp32 (default) or fp16' },
    ...quantizeOptions,
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  async run(ctx) {
    const source = positional(ctx, 0, '<hf-dir>');
    noExtraPositionals(ctx, 1);
    const out = outDir(ctx);
    const dtype = choice<PackageDType>(ctx, 'dtype', ['fp32', 'fp16'], 'fp32');
    const quantization = quantizationFromArgs(ctx);
    if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new ModelError(`${source} is not a folder`);
    const t0 = performance.now();
    const pkg = writePackage(source, out, { dtype, quantization: quantization ?? undefined, window: null, kind: 'base' });
    const seconds = (performance.now() - t0) / 1000;
    const bytes = fs.statSync(path.join(pkg.dir, 'weights.bin')).size;
    if (flag(ctx, 'json')) process.stdout.write(JSON.stringify({ package: pkg.dir, kind: 'base', dtype, quantization, modelType: pkg.config.modelType, weightsBytes: bytes, seconds }) + '\n');
    else process.stdout.write(`wrote ${pkg.dir} (${pkg.config.modelType}, ${dtype}${quantizationLabel(quantization)}, ${(bytes / 2 ** 20).toFixed(1)} MiB weights) in ${seconds.toFixed(1)} s\n`);
  },
};

export const generateCommand: Command = {
  name: 'generate',
  usage: 'generate <package-dir> --prompt "…" [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--chat] [--json]',
  summary: 'Generate text from a model package, streaming it to stdout.',
  options: {
    prompt: { type: 'string', help: 'the prompt text' },
    'max-new-tokens': { type: 'string', help: 'stop after this many new tokens (default 64)' },
    temperature: { type: 'string', help: 'sampling temperature; 0 = greedy (default 0)' },
    'top-k': { type: 'string', help: 'sample among the k most likely tokens (0 = all)' },
    'top-p': { type: 'string', help: 'nucleus sampling mass in (0, 1] (default 1)' },
    seed: { type: 'string', help: 'random seed for sampling (default 0)' },
    chat: { type: 'boolean', help: "wrap the prompt in the model's chat template as a user message" },
    provider: providerOption,
    threads: threadsOption,
    json: { type: 'boolean', help: 'print one JSON object with the text and timings instead of streaming' },
  },
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    noExtraPositionals(ctx, 1);
    const prompt = str(ctx, 'prompt');
    if (prompt === undefined) throw new UsageError('missing --prompt "…"');
    const maxNewTokens = int(ctx, 'max-new-tokens', 64, 1);
    const temperature = num(ctx, 'temperature', 0, 0, 100);
    const topK = int(ctx, 'top-k', 0, 0);
    const topP = num(ctx, 'top-p', 1, 1e-9, 1);
    const seed = int(ctx, 'seed', 0, 0);
    const json = flag(ctx, 'json');
    readPackage(dir); // a folder that is not a package says so, before the tokenizer complains about it
    const tokenizer = loadTokenizer(dir);
    const text = flag(ctx, 'chat') ? tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true }) : prompt;
    const ids = tokenizer.encode(text, { addSpecialTokens: !flag(ctx, 'chat') });
    if (ids.length === 0) throw new UsageError('--prompt encodes to no tokens');
    const model = await openModel(ctx, dir);
    try {
      const result = await generate(model, tokenizer, ids, {
        maxNewTokens,
        temperature,
        topK,
        topP,
        seed,
        signal: ctx.signal,
        onText: json ? undefined : (t) => process.stdout.write(t),
      });
      if (json) {
        process.stdout.write(
          JSON.stringify({
            text: result.text,
            tokens: result.tokens,
            stopReason: result.stopReason,
            promptTokens: result.promptTokens,
            provider: model.provider.provider,
            prefillSeconds: result.prefillSeconds,
            decodeSeconds: result.decodeSeconds,
            decodeTokensPerSecond: result.tokens.length / Math.max(result.decodeSeconds, 1e-9),
          }) + '\n',
        );
      } else {
        process.stdout.write('\n');
        const rate = result.tokens.length / Math.max(result.decodeSeconds, 1e-9);
        process.stderr.write(`[${result.tokens.length} tokens, ${rate.toFixed(1)} tokens/s on ${model.provider.provider}, stop: ${result.stopReason}]\n`);
      }
      if (result.stopReason === 'cancelled') process.exitCode = 130;
    } finally {
      await model.release();
    }
  },
};

/** How a sequence is split into runs for `titan logits`. */
export function segmentPlan(length: number, segments: number[] | undefined, stepwise: boolean): number[] {
  if (stepwise) return Array.from({ length }, () => 1);
  if (!segments) return [length];
  if (segments.some((s) => s < 1)) throw new UsageError('--segments sizes must be ≥ 1');
  // Sizes are used in order and repeat cyclically until the sequence is consumed.
  const plan: number[] = [];
  let left = length;
  for (let i = 0; left > 0; i++) {
    const s = Math.min(segments[i % segments.length], left);
    plan.push(s);
    left -= s;
  }
  return plan;
}

export const logitsCommand: Command = {
  name: 'logits',
  usage: 'logits <package-dir> --ids 1,2,3,… --positions 0,5,… [--segments 64,32,… | --stepwise] --json',
  summary: 'Print next-token logits at chosen positions of a token sequence (the verification interface).',
  options: {
    ids: { type: 'string', help: 'comma-separated token ids' },
    positions: { type: 'string', help: 'comma-separated positions whose next-token logits to print (default: all)' },
    segments: { type: 'string', help: 'feed the sequence in runs of these sizes (repeated cyclically)' },
    stepwise: { type: 'boolean', help: 'feed one token per run' },
    provider: providerOption,
    threads: threadsOption,
    json: { type: 'boolean', help: 'print {"positions":[…],"logits":[[…],…]} (the only output format)' },
  },
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    noExtraPositionals(ctx, 1);
    const ids = intList(ctx, 'ids');
    if (!ids || ids.length === 0) throw new UsageError('missing --ids');
    const positions = intList(ctx, 'positions') ?? ids.map((_, i) => i);
    for (const p of positions) if (p >= ids.length) throw new UsageError(`--positions ${p} is beyond the sequence (length ${ids.length})`);
    const segs = intList(ctx, 'segments', 1);
    if (segs && flag(ctx, 'stepwise')) throw new UsageError('--segments and --stepwise exclude each other');
    const plan = segmentPlan(ids.length, segs, flag(ctx, 'stepwise'));
    const model = await openModel(ctx, dir);
    try {
      const V = model.pkg.config.vocabSize;
      for (const id of ids) if (id >= V) throw new UsageError(`--ids ${id} is outside the vocabulary (0..${V - 1})`);
      const byPosition = new Map<number, Float32Array>();
      let start = 0;
      for (const size of plan) {
        const wanted = positions.filter((p) => p >= start && p < start + size);
        const rows = wanted.length ? wanted.map((p) => p - start) : [size - 1];
        const out = await model.forward(ids.slice(start, start + size), rows);
        wanted.forEach((p, i) => byPosition.set(p, out[i]));
        start += size;
      }
      const logits = positions.map((p) => Array.from(byPosition.get(p)!));
      process.stdout.write(JSON.stringify({ positions, logits }) + '\n');
    } finally {
      await model.release();
    }
  },
};
