// titan align
import * as path from 'node:path';
import type { ProviderChoice } from '../runtime/session';
import { align, type AlignEvent, type AlignOptions, type AlignReport } from '../train/align';
import { parseDataSpec } from '../train/data';
import { DEFAULT_LORA_TARGETS, LORA_MODULES, type LoraModule } from '../train/lora';
import { MAG_SCHEDULES, type MagSchedule } from '../train/optimizer';
import { choice, flag, int, noExtraPositionals, num, positional, str } from './args';
import { providerOption, threadsOption } from './model-commands';
import { UsageError, type Command, type CommandContext } from './types';

const PROVIDERS = ['auto', 'webgpu', 'cuda', 'cpu'] as const;

/** `q,k,v,o` or `q_proj,…` → PEFT module names. */
function parseTargets(text: string | undefined): LoraModule[] {
  if (text === undefined) return [...DEFAULT_LORA_TARGETS];
  const out: LoraModule[] = [];
  for (const raw of text.split(',').map((t) => t.trim()).filter(Boolean)) {
    const name = (raw.endsWith('_proj') ? raw : `${raw}_proj`) as LoraModule;
    if (!LORA_MODULES.includes(name)) throw new UsageError(`--targets: "${raw}" is not one of q, k, v, o, gate, up, down`);
    if (!out.includes(name)) out.push(name);
  }
  if (out.length === 0) throw new UsageError('--targets needs at least one module');
  return out;
}

function parseCycle(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  const values = text.split(',').map((t) => Number(t.trim()));
  if (values.length === 0 || values.some((v) => !Number.isFinite(v) || v < 0 || v > 1)) throw new UsageError(`--mag-cycle must be a comma-separated list of values in [0, 1], got "${text}"`);
  return values;
}

export function alignOptionsFromArgs(ctx: CommandContext): Omit<AlignOptions, 'signal' | 'onEvent'> {
  const packageDir = positional(ctx, 0, '<package-dir>');
  noExtraPositionals(ctx, 1);
  const dataText = str(ctx, 'data');
  if (!dataText) throw new UsageError('missing --data workspace:<dir> or jsonl:<file>');
  if (['steps', 'epochs', 'minutes'].filter((k) => str(ctx, k) !== undefined).length > 1) throw new UsageError('give one of --steps, --epochs and --minutes');
  const out = str(ctx, 'out') ?? `${path.resolve(packageDir)}-aligned`;
  const evalEvery = str(ctx, 'eval-every');
  const data = parseDataSpec(dataText);
  const exclude = ctx.values.exclude;
  if (exclude !== undefined) {
    if (data.kind !== 'workspace') throw new UsageError('--exclude applies to workspace: data');
    data.exclude = Array.isArray(exclude) ? exclude : [String(exclude)];
  }
  return {
    packageDir,
    data,
    out,
    steps: str(ctx, 'steps') === undefined ? undefined : int(ctx, 'steps', 0, 1),
    epochs: str(ctx, 'epochs') === undefined ? undefined : num(ctx, 'epochs', 1, 1e-9),
    minutes: str(ctx, 'minutes') === undefined ? undefined : num(ctx, 'minutes', 10, 1e-3),
    lr: num(ctx, 'lr', 5e-4, 1e-12, 1),
    warmup: str(ctx, 'warmup') === undefined ? undefined : int(ctx, 'warmup', 0, 0),
    weightDecay: num(ctx, 'weight-decay', 0.01, 0, 1),
    clip: num(ctx, 'clip', 1, 0),
    batch: int(ctx, 'batch', 4, 1),
    sequence: int(ctx, 'seq', 512, 16),
    lossFrom: int(ctx, 'loss-from', 0, 0),
    precision: choice<'fp32' | 'fp16'>(ctx, 'precision', ['fp32', 'fp16'], 'fp32'),
    recompute: flag(ctx, 'recompute'),
    lora: {
      r: int(ctx, 'rank', 8, 1),
      alpha: num(ctx, 'alpha', 16, 1e-9),
      dropout: num(ctx, 'dropout', 0.05, 0, 0.99),
      targets: parseTargets(str(ctx, 'targets')),
      rslora: flag(ctx, 'rslora'),
    },
    mag: {
      schedule: choice<MagSchedule>(ctx, 'mag-schedule', MAG_SCHEDULES, 'constant'),
      start: str(ctx, 'mag-start') === undefined ? undefined : num(ctx, 'mag-start', 0.01, 0, 1),
      rampSteps: str(ctx, 'mag-ramp') === undefined ? undefined : int(ctx, 'mag-ramp', 100, 1),
      cycle: parseCycle(str(ctx, 'mag-cycle')),
    },
    seed: int(ctx, 'seed', 0, 0),
    evalEvery: evalEvery === undefined ? undefined : int(ctx, 'eval-every', 0, 0),
    evalSequences: int(ctx, 'eval-sequences', 32, 1),
    validationFraction: num(ctx, 'validation', 0.1, 0, 0.9),
    checkpointEvery: str(ctx, 'checkpoint-every') === undefined ? undefined : int(ctx, 'checkpoint-every', 0, 1),
    resume: flag(ctx, 'resume'),
    merge: !flag(ctx, 'no-merge'),
    provider: choice<ProviderChoice>(ctx, 'provider', PROVIDERS, 'auto'),
    threads: int(ctx, 'threads', 0, 0) || undefined,
  };
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '–';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Progress on stderr: steps at most every 2 s (every step on a terminal, rewritten in place), every validation. */
function progressPrinter(): (e: AlignEvent) => void {
  const tty = process.stderr.isTTY === true;
  let lastLine = 0;
  let open = false;
  const line = (text: string, keep: boolean) => {
    if (tty) {
      process.stderr.write(`\r\x1b[K${text.slice(0, (process.stderr.columns ?? 120) - 1)}${keep ? '\n' : ''}`);
      open = !keep;
    } else process.stderr.write(`${text}\n`);
  };
  const close = () => {
    if (open) process.stderr.write('\n');
    open = false;
  };
  return (e) => {
    switch (e.type) {
      case 'stage':
        close();
        line(e.message, true);
        break;
      case 'data':
        line(`data: ${e.summary.trainSequences} training sequences (${e.summary.trainTokens} tokens from ${e.summary.trainItems} ${e.summary.kind === 'workspace' ? 'files' : 'samples'}), ${e.summary.validationSequences} held out (${e.summary.validationTokens} tokens)${e.summary.truncated ? `, ${e.summary.truncated} truncated` : ''}`, true);
        break;
      case 'start':
        line(`training ${e.params} LoRA parameters on ${e.provider}: ${e.totalSteps !== null ? `steps ${e.startStep + 1}–${e.totalSteps}` : `${e.minutes} minutes from step ${e.startStep + 1}`}`, true);
        break;
      case 'step': {
        const now = performance.now();
        if (!tty && now - lastLine < 2000 && e.step !== e.totalSteps) return;
        lastLine = now;
        line(`step ${e.step}/${e.totalSteps}  loss ${e.loss.toFixed(4)}  lr ${e.lr.toExponential(2)}  μ ${e.mu.toFixed(2)}  |g| ${e.gradNorm.toFixed(3)}  ${e.tokensPerSecond.toFixed(0)} tok/s  elapsed ${formatDuration(e.elapsed)}  ETA ${formatDuration(e.eta)}`, false);
        break;
      }
      case 'eval':
        close();
        line(`validation at step ${e.step}: loss ${e.loss.toFixed(4)} (perplexity ${e.perplexity.toFixed(3)}) over ${e.tokens} tokens`, true);
        break;
      case 'checkpoint':
        break;
    }
  };
}

export function reportText(r: AlignReport): string {
  const v = r.validation;
  const lines = [
    `aligned ${r.package} in ${formatDuration(r.wallSeconds)} on ${r.provider}: ${r.steps.done} steps, ${r.tokens} tokens (${r.tokensPerSecond.toFixed(0)} tokens/s)${r.steps.resumedFrom !== null ? `, resumed at step ${r.steps.resumedFrom}` : ''}`,
  ];
  if (v.before && v.after) lines.push(`validation loss ${v.before.loss.toFixed(4)} → ${v.after.loss.toFixed(4)} (perplexity ${v.before.perplexity.toFixed(3)} → ${v.after.perplexity.toFixed(3)})${v.best ? `, best ${v.best.loss.toFixed(4)} at step ${v.best.step}` : ''}`);
  if (r.train.firstLoss !== null && r.train.meanLastTen !== null) lines.push(`training loss ${r.train.firstLoss.toFixed(4)} at the first step, ${r.train.meanLastTen.toFixed(4)} over the last ten`);
  lines.push(`adapter  ${r.adapter}`);
  lines.push(`package  ${r.mergedPackage ?? '(not written)'}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n') + '\n';
}

export const alignCommand: Command = {
  name: 'align',
  usage:
    'align <package-dir> --data workspace:<dir>|jsonl:<file> [--steps N | --epochs E | --minutes M] [--lr LR] [--batch B] [--seq T] [--loss-from N] [--rank R] [--alpha A] [--dropout P] [--targets q,k,v,o] [--mag-schedule constant|gradual|cyclic] [--out DIR] [--resume] [--json]',
  summary: 'LoRA fine-tuning (alignment) of a package on a workspace or an instruction file: adapter + merged package.',
  options: {
    data: { type: 'string', help: 'workspace:<dir> (next-token loss, files held out for validation) or jsonl:<file> (alpaca or chat messages, loss on the answers)' },
    exclude: { type: 'string', multiple: true, help: 'workspace data: a glob of files to leave out, relative to the folder (repeatable)' },
    out: { type: 'string', help: 'output folder (default <package>-aligned): adapter/, package/, checkpoint/, report.json' },
    steps: { type: 'string', help: 'optimizer steps (default: one epoch, at most 500)' },
    epochs: { type: 'string', help: 'passes over the training data, instead of --steps' },
    minutes: { type: 'string', help: 'train for this much wall time instead (validations included); the learning rate decays over it' },
    lr: { type: 'string', help: 'peak learning rate (default 5e-4), linear warmup then cosine decay' },
    warmup: { type: 'string', help: 'warmup steps (default 5 % of the run)' },
    'weight-decay': { type: 'string', help: 'AdamW weight decay (default 0.01)' },
    clip: { type: 'string', help: 'gradient clipping: maximum global norm (default 1.0; 0 = off)' },
    batch: { type: 'string', help: 'sequences per optimizer step, accumulated (default 4)' },
    seq: { type: 'string', help: 'tokens per sequence (default 512)' },
    'loss-from': { type: 'string', help: 'score only targets at positions ≥ N of each sequence, training and validation (default 0 = all); e.g. the window size, to train the memory on what the window cannot see' },
    precision: { type: 'string', help: 'fp32 (default) or fp16: half-precision activations and gradients on GPU providers, fp32 master weights, dynamic loss scaling' },
    recompute: { type: 'boolean', help: 'recompute each layer in the backward pass instead of keeping its activations (less memory, a little slower)' },
    rank: { type: 'string', help: 'LoRA rank r (default 8)' },
    alpha: { type: 'string', help: 'LoRA alpha (default 16; scaling alpha/r)' },
    dropout: { type: 'string', help: 'LoRA dropout (default 0.05)' },
    targets: { type: 'string', help: 'projections to adapt: q,k,v,o,gate,up,down (default q,k,v,o)' },
    rslora: { type: 'boolean', help: 'rank-stabilized scaling alpha/√r' },
    'mag-schedule': { type: 'string', help: 'Memory-as-Gate weight μ during training: constant (the package μ), gradual (0.01 → μ over 100 steps), cyclic (0, 0.5, 1)' },
    'mag-start': { type: 'string', help: 'gradual: the starting μ (default 0.01)' },
    'mag-ramp': { type: 'string', help: 'gradual: steps to reach the package μ (default 100)' },
    'mag-cycle': { type: 'string', help: 'cyclic: the values, comma-separated (default 0,0.5,1)' },
    seed: { type: 'string', help: 'seed for initialization, data order and dropout (default 0)' },
    'eval-every': { type: 'string', help: 'validate every N steps (default: ten times per run; 0 = before and after only)' },
    'eval-sequences': { type: 'string', help: 'held-out sequences per validation (default 32)' },
    validation: { type: 'string', help: 'fraction of files/samples held out (default 0.1)' },
    'checkpoint-every': { type: 'string', help: 'checkpoint every N steps (default: with each validation)' },
    resume: { type: 'boolean', help: 'continue the run whose checkpoint is in --out' },
    'no-merge': { type: 'boolean', help: 'write only the adapter, not the merged package' },
    provider: providerOption,
    threads: threadsOption,
    json: { type: 'boolean', help: 'print the final report as JSON' },
  },
  async run(ctx) {
    const options = alignOptionsFromArgs(ctx);
    const report = await align({ ...options, signal: ctx.signal, onEvent: progressPrinter() });
    if (flag(ctx, 'json')) process.stdout.write(JSON.stringify(report) + '\n');
    else process.stdout.write(reportText(report));
  },
};
