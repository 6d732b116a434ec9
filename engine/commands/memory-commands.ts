// titan memory · titan ask
import * as path from 'node:path';
import type { ProviderChoice } from '../runtime/session';
import { WorkspaceMemory, type IngestProgress, type MemoryOptions, type MemoryStats } from '../memory/workspace-memory';
import { DEFAULT_MEMORY_LIMITS } from '../limits';
import { choice, flag, int, noExtraPositionals, num, positional, str } from './args';
import { providerOption, threadsOption } from './model-commands';
import { UsageError, type Command, type CommandContext } from './types';

const PROVIDERS = ['auto', 'webgpu', 'cuda', 'cpu'] as const;
/** Skipped files the text report names one by one. */
const SKIPS_LISTED = 50;

/** Where the CLI keeps a workspace's memory unless told otherwise (git-ignored: it writes its own .gitignore). */
export function defaultStorageDir(firstWorkspace: string): string {
  return path.join(path.resolve(firstWorkspace), '.titan', 'memory');
}

const memoryOptions = {
  workspace: { type: 'string', multiple: true, help: 'a workspace folder (repeat for a multi-root workspace; default: the current folder)' },
  storage: { type: 'string', help: 'storage folder for checkpoints (default: <first workspace>/.titan/memory)' },
  exclude: { type: 'string', multiple: true, help: 'glob of files to leave out, relative to a workspace folder (repeatable)' },
  'checkpoint-every': { type: 'string', help: `tokens between checkpoints (default ${DEFAULT_MEMORY_LIMITS.checkpointEveryTokens})` },
  'max-file-bytes': { type: 'string', help: `skip files larger than this (default ${DEFAULT_MEMORY_LIMITS.maxFileBytes})` },
  'max-files': { type: 'string', help: `stop discovery at this many files (default ${DEFAULT_MEMORY_LIMITS.maxFiles})` },
  'max-tokens': { type: 'string', help: `leave out files past this many tokens of stream (default ${DEFAULT_MEMORY_LIMITS.maxStreamTokens})` },
  'storage-cap': { type: 'string', help: `bytes of checkpoints kept for this memory (default ${DEFAULT_MEMORY_LIMITS.storageCapBytes})` },
  provider: providerOption,
  threads: threadsOption,
  json: { type: 'boolean', help: 'print one JSON object instead of text' },
} as const;

function list(ctx: CommandContext, name: string): string[] {
  const v = ctx.values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

function openOptions(ctx: CommandContext, packageDir: string): MemoryOptions {
  const workspaces = list(ctx, 'workspace');
  if (workspaces.length === 0) workspaces.push(process.cwd());
  const exclude = list(ctx, 'exclude');
  return {
    packageDir,
    workspaces,
    storageDir: str(ctx, 'storage') ?? defaultStorageDir(workspaces[0]),
    exclude: exclude.length ? exclude : undefined,
    provider: choice<ProviderChoice>(ctx, 'provider', PROVIDERS, 'auto'),
    threads: int(ctx, 'threads', 0, 0) || undefined,
    checkpointEveryTokens: str(ctx, 'checkpoint-every') === undefined ? undefined : int(ctx, 'checkpoint-every', 0, 1),
    maxFileBytes: str(ctx, 'max-file-bytes') === undefined ? undefined : int(ctx, 'max-file-bytes', 0, 1),
    storageCapBytes: str(ctx, 'storage-cap') === undefined ? undefined : int(ctx, 'storage-cap', 0, 1),
    maxFiles: str(ctx, 'max-files') === undefined ? undefined : int(ctx, 'max-files', 0, 1),
    maxStreamTokens: str(ctx, 'max-tokens') === undefined ? undefined : int(ctx, 'max-tokens', 0, 1),
    // Notices go to stderr as they arise (a cap reached, the storage folder re-created).
    onNotice: (message) => process.stderr.write(`notice: ${message}\n`),
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Progress on stderr: one rewritten line on a terminal, a line every few seconds otherwise. */
function progressPrinter(): { onProgress: (p: IngestProgress) => void; end: () => void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let shown = false;
  return {
    onProgress(p) {
      const now = performance.now();
      if (p.phase === 'done' || now - last < (tty ? 200 : 5000)) return;
      last = now;
      const eta = p.etaSeconds === null ? '' : `, ${Math.round(p.etaSeconds)} s left`;
      const line = p.phase === 'discover'
        ? `discovering: ${p.filesDone} files checked`
        : p.phase === 'restore'
          ? 'restoring from the last checkpoint'
          : `${p.phase}: ${p.filesDone}/${p.filesTotal} files, ${p.tokensDone}/${p.tokensTotal} tokens, ${Math.round(p.tokensPerSecond)} tokens/s${eta}${p.currentFile ? `  ${p.currentFile}` : ''}`;
      if (tty) {
        process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns ?? 120) - 1)}`);
        shown = true;
      } else process.stderr.write(`${line}\n`);
    },
    end() {
      if (tty && shown) process.stderr.write('\r\x1b[K');
    },
  };
}

function printStats(s: MemoryStats): void {
  const byReason = new Map<string, number>();
  for (const f of s.filesSkipped) byReason.set(f.reason, (byReason.get(f.reason) ?? 0) + 1);
  const lines = [
    `files read:        ${s.filesRead}${s.filesFed !== s.filesRead ? ` (${s.filesFed} fed by this update)` : ''}`,
    `files skipped:     ${s.filesSkipped.length}${byReason.size ? ` (${[...byReason].map(([r, n]) => `${n} ${r}`).join(', ')})` : ''}`,
    // A huge workspace skips thousands of files: the first ones name the reasons well enough.
    ...s.filesSkipped.slice(0, SKIPS_LISTED).map((f) => `  ${f.path}: ${f.reason} (${f.detail})`),
    ...(s.filesSkipped.length > SKIPS_LISTED ? [`  … and ${s.filesSkipped.length - SKIPS_LISTED} more (--json lists them all)`] : []),
    `tokens ingested:   ${s.tokensIngested}`,
    `tokens re-read:    ${s.tokensReread}${s.restoredFromCheckpoint ? ` (resumed from the checkpoint at ${s.resumedFrom})` : ' (no usable checkpoint: read from the start)'}`,
    `state bytes:       ${s.stateBytes} (${mib(s.stateBytes)})`,
    `checkpoint bytes:  ${s.checkpointBytes} (${mib(s.checkpointBytes)} in ${s.checkpoints} checkpoints, ${s.storage})`,
    `seconds:           ${s.seconds.toFixed(1)} (discovery ${s.discoverySeconds.toFixed(1)})`,
    `tokens/s:          ${s.tokensPerSecond.toFixed(0)}`,
    ...s.notices.map((n) => `notice:            ${n}`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

/** A GPU that failed (at start or mid-run) and left the work to the CPU: the user should know. */
function noteFallback(memory: WorkspaceMemory): void {
  const { fallback } = memory.status().providerReport;
  if (fallback) process.stderr.write(`notice: execution provider: ${fallback}; the model ran on the CPU instead\n`);
}

async function updated(ctx: CommandContext, memory: WorkspaceMemory, json: boolean): Promise<MemoryStats> {
  const printer = json ? null : progressPrinter();
  try {
    return await memory.update({ signal: ctx.signal, onProgress: printer?.onProgress });
  } finally {
    printer?.end();
  }
}

export const memoryCommand: Command = {
  name: 'memory',
  usage: 'memory <package-dir> --workspace <dir>… [--storage <dir>] [--exclude glob…] [--checkpoint-every N] [--json]',
  summary: 'Build or update the workspace memory (the whole workspace read into the model state) and print its stats.',
  options: memoryOptions,
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    noExtraPositionals(ctx, 1);
    const json = flag(ctx, 'json');
    const memory = await WorkspaceMemory.open(openOptions(ctx, dir));
    try {
      const stats = await updated(ctx, memory, json);
      if (json) process.stdout.write(JSON.stringify({ ...stats, provider: memory.status().provider }) + '\n');
      else printStats(stats);
    } finally {
      noteFallback(memory);
      await memory.close();
    }
  },
};

export const askCommand: Command = {
  name: 'ask',
  usage: 'ask <package-dir> --workspace <dir>… "question" [--no-retrieval] [--no-memory] [--max-new-tokens N] [--json]',
  summary: 'Answer a question about the workspace from its memory (updated first) and the best-matching files, with sources.',
  options: {
    ...memoryOptions,
    'no-retrieval': { type: 'boolean', help: 'do not place retrieved files before the question' },
    'no-memory': { type: 'boolean', help: 'start from an empty state instead of the workspace memory (and skip the update)' },
    'max-new-tokens': { type: 'string', help: 'stop the answer after this many tokens (default 256)' },
    temperature: { type: 'string', help: 'sampling temperature; 0 = greedy (default 0)' },
    seed: { type: 'string', help: 'random seed for sampling (default 0)' },
    'context-tokens': { type: 'string', help: 'token budget for retrieved files (default: what the softmax window leaves)' },
  },
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    const question = positional(ctx, 1, '"question"');
    noExtraPositionals(ctx, 2);
    if (question.trim() === '') throw new UsageError('the question is empty');
    const json = flag(ctx, 'json');
    const maxNewTokens = int(ctx, 'max-new-tokens', 256, 1);
    const temperature = num(ctx, 'temperature', 0, 0, 100);
    const seed = int(ctx, 'seed', 0, 0);
    const contextBudgetTokens = str(ctx, 'context-tokens') === undefined ? undefined : int(ctx, 'context-tokens', 0, 0);
    const useMemory = !flag(ctx, 'no-memory');
    const memory = await WorkspaceMemory.open(openOptions(ctx, dir));
    try {
      const stats = useMemory ? await updated(ctx, memory, json) : null;
      const result = await memory.ask(question, {
        retrieval: !flag(ctx, 'no-retrieval'),
        memory: useMemory,
        maxNewTokens,
        temperature,
        seed,
        contextBudgetTokens,
        signal: ctx.signal,
        onText: json ? undefined : (t) => process.stdout.write(t),
      });
      if (json) {
        process.stdout.write(JSON.stringify({ answer: result.answer, sources: result.sources, stats: result.stats, memory: stats, provider: memory.status().provider }) + '\n');
        return;
      }
      const out = ['', '', 'sources:'];
      for (const s of result.sources) out.push(`  ${s.path}${s.line ? `:${s.line}` : ''}  ${s.reason}${s.snippet ? `  ${s.snippet}` : ''}`);
      if (result.sources.length === 0) out.push('  (none)');
      const st = result.stats;
      out.push(
        '',
        `[${st.answerTokens} answer tokens at ${st.tokensPerSecond.toFixed(1)} tokens/s; prompt ${st.promptTokens} tokens (${st.contextTokens} from retrieved files); ` +
          `memory ${st.memoryTokens} tokens${stats ? ` (${stats.tokensReread} re-read by the update)` : ''}; ${st.seconds.toFixed(1)} s; stop: ${st.stopReason}]`,
      );
      process.stdout.write(out.join('\n') + '\n');
      if (st.stopReason === 'cancelled') process.exitCode = 130;
    } finally {
      noteFallback(memory);
      await memory.close();
    }
  },
};
