// What a fuzz target is: a function over bytes, generators for structured inputs, and the oracle that
// tells a clean rejection (a ModelError: one clear line) from a bug (anything else, a hang, a blow-up).
//
// Targets run inside a worker thread (worker.ts) under V8 block coverage; the harness (harness.ts)
// watches the worker's heartbeat so an input that takes longer than its budget is reported as a hang.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as fc from 'fast-check';
import { ModelError } from '../../engine/model/errors';

/** How one input ended when it did not expose a bug. */
export type Outcome = 'accepted' | 'rejected';

export interface FuzzTarget {
  name: string;
  /** What the target exercises, for the reliability report. */
  description: string;
  /** Source files (path substrings) whose block coverage guides the fuzzer. */
  coverage: string[];
  /** Generators of structured candidates (valid-looking files and messages, with hostile values mixed in). */
  arbitrary: fc.Arbitrary<Uint8Array>;
  /** Tokens the byte mutator splices in (field names, magic numbers, boundary values). */
  dictionary: string[];
  /** Inputs are JSON text: the mutator also edits the parsed value. */
  json?: boolean;
  /** A structure-aware mutation (e.g. re-framing a length-prefixed header); may return null to fall back. */
  mutate?: (input: Uint8Array, rnd: Rng) => Uint8Array | null;
  /** Once per worker, before any input (temp folders, fixtures). */
  setup?: () => Promise<void> | void;
  /**
   * Runs one input. Returns 'accepted' when the input was valid and every post-condition held,
   * 'rejected' when it was refused with a clean error; throws anything else (that is a finding).
   */
  run: (input: Uint8Array) => Promise<Outcome> | Outcome;
  /** Largest input worth trying (bytes). */
  maxLen: number;
  /** Per-input time budget (ms) before the input counts as a hang. */
  budgetMs?: number;
}

/** A problem the oracle found that is not an exception of the code under test (a broken post-condition). */
export class OracleViolation extends Error {
  override readonly name = 'OracleViolation';
}

/** Longest error message that still reads as one line in a notification. */
export const MAX_MESSAGE_CHARS = 2000;

/**
 * Runs `fn` and classifies what it threw: a ModelError with a one-line, bounded message is a clean
 * rejection; anything else is rethrown as the finding it is.
 */
export async function expectCleanRejection(fn: () => unknown): Promise<Outcome> {
  try {
    await fn();
    return 'accepted';
  } catch (e) {
    checkCleanError(e);
    return 'rejected';
  }
}

export function checkCleanError(e: unknown): void {
  if (!(e instanceof ModelError)) throw e;
  const m = e.message;
  if (m.length === 0) throw new OracleViolation('ModelError with an empty message');
  if (m.includes('\n')) throw new OracleViolation(`ModelError message spans lines: ${JSON.stringify(m.slice(0, 200))}`);
  if (m.length > MAX_MESSAGE_CHARS) throw new OracleViolation(`ModelError message is ${m.length} characters (over ${MAX_MESSAGE_CHARS}): ${JSON.stringify(m.slice(0, 120))}…`);
}

/** Seeded PRNG (xorshift128+), so a run is reproducible from its seed. */
export class Rng {
  private s0: number;
  private s1: number;
  constructor(seed: number) {
    this.s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
    this.s1 = (Math.imul(seed, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0 || 2;
    for (let i = 0; i < 8; i++) this.u32();
  }
  u32(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    this.s1 = x >>> 0;
    return (this.s0 + this.s1) >>> 0;
  }
  /** Integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(list: readonly T[]): T {
    return list[this.below(list.length)];
  }
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A scratch folder for inputs that must be files: in memory (/dev/shm) where there is one, as disk writes cost 100× more. */
export function fuzzTempDir(prefix: string): string {
  const base = fs.existsSync('/dev/shm') && isWritable('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, `titan-fuzz-${prefix}-`));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function isWritable(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
