// The engine's caps, in one place: what a workspace, a file, the memory stream and its storage may
// grow to, and the bounds on untrusted model files. Each cap is enforced where the thing is read or
// written, with a message that names the cap and how to raise it; reaching one degrades the work
// (files skipped with a reason, the stream stopped with a notice, old checkpoints thinned), it never
// fails or hangs it. The configurable ones are options of WorkspaceMemory (`titan memory --max-…`,
// the extension's titan.memory.* settings); the rest are fixed bounds against hostile input.
//
// Elsewhere by necessity: the chat template's step and range budgets live beside the template
// renderer (model/tokenizer.ts: TEMPLATE_STEP_LIMIT, TEMPLATE_RANGE_LIMIT; not imported here, so
// the file checks need not load the tokenizer library), and
// the bounds of a question and an answer are part of the message schema (protocol/engine.ts: at
// most 20,000 characters, at most 4,096 new tokens).
import { ModelError } from './model/errors';

/** Configurable caps of the workspace memory, with their defaults. */
export interface MemoryLimits {
  /** Files larger than this many bytes are skipped as 'too-large' without being read. */
  maxFileBytes: number;
  /**
   * Files accepted from all workspace folders together; discovery stops walking at the cap (the
   * rest is left out with a notice), so a huge tree costs bounded time and memory.
   */
  maxFiles: number;
  /**
   * Tokens of the memory stream; files that would take it past the cap are left out (skip reason
   * 'token-limit') with a notice. The state is a fixed size, so this bounds time, not memory.
   */
  maxStreamTokens: number;
  /** Bytes of checkpoints kept per memory; the oldest part of the stream is thinned first. */
  storageCapBytes: number;
  /** Tokens between checkpoints. */
  checkpointEveryTokens: number;
}

export const DEFAULT_MEMORY_LIMITS: Readonly<MemoryLimits> = {
  maxFileBytes: 1024 * 1024,
  maxFiles: 100_000,
  maxStreamTokens: 32 * 1024 * 1024,
  storageCapBytes: 256 * 1024 * 1024,
  checkpointEveryTokens: 16_384,
};

/** A line longer than this many bytes marks a file as minified or machine-written. */
export const MAX_LINE_BYTES = 5000;
/** Scripts and stylesheets of at least 1 KiB whose average line is longer than this are minified bundles. */
export const MAX_AVERAGE_LINE_BYTES = 200;
/** .gitignore, .ignore and .git/info/exclude files beyond this size are not read. */
export const MAX_IGNORE_FILE_BYTES = 4 * 1024 * 1024;
/** A safetensors JSON header beyond this size is refused as corrupt (real ones are a few MiB at most). */
export const MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024;

/** `value` as a positive safe integer, `fallback` when absent; anything else is a one-line error. */
export function positiveLimit(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new ModelError(`${name} must be a positive integer, got ${String(value)}`);
  return value;
}

/** Bytes as the user reads them in a message ("256 MiB"). */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(bytes % 1024 ? 1 : 0)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(bytes % 1024 ** 2 ? 1 : 0)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}
