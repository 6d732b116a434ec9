// Running the built `titan` CLI (bin/titan.js → dist/engine/cli.js) as a child process, the way a user
// does. `npm test` builds first; a test file run on its own rebuilds when an engine source is newer
// than the bundle.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from './goldens';

export const TITAN_BIN = path.join(REPO_ROOT, 'bin/titan.js');
const BUNDLE = path.join(REPO_ROOT, 'dist/engine/cli.js');

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

let built = false;

/** Builds the CLI bundle unless it is newer than every engine source file. */
export function ensureBuilt(): void {
  if (built) return;
  const bundleTime = fs.existsSync(BUNDLE) ? fs.statSync(BUNDLE).mtimeMs : 0;
  if (bundleTime < newestSource(path.join(REPO_ROOT, 'engine'))) {
    execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build.mjs')], { cwd: REPO_ROOT, stdio: 'inherit' });
  }
  built = true;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd?: string;
  /** Kill the child after this long (a hang is a failure, reported with what it printed). */
  timeoutMs?: number;
  /** Called with each stdout chunk as it arrives; may return 'interrupt' to send SIGINT. */
  onStdout?: (chunk: string) => void | 'interrupt';
}

/** Runs `titan <args>`; resolves with the exit code and both streams (never rejects on a non-zero exit). */
export function runTitan(args: string[], options: CliOptions = {}): Promise<CliResult> {
  ensureBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TITAN_BIN, ...args], { cwd: options.cwd ?? REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let interrupted = false;
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      if (options.onStdout?.(b.toString('utf8')) === 'interrupt' && !interrupted) {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** `titan <args>` that must succeed: returns stdout, or throws with the exit code and stderr. */
export async function titanOk(args: string[], options: CliOptions = {}): Promise<string> {
  const r = await runTitan(args, options);
  if (r.code !== 0) throw new Error(`titan ${args.slice(0, 2).join(' ')} … exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * Pins the CPU provider. Numeric tests check the float32 CPU graphs; `auto` may pick a GPU provider,
 * which runs half-precision graphs where the package has them (test/engine/webgpu.test.ts covers those).
 */
export const CPU = ['--provider', 'cpu'];

/** `titan logits --json` on the CPU provider: next-token logits at `positions`, in that order. */
export async function titanLogits(pkg: string, ids: readonly number[], positions: readonly number[], extra: string[] = []): Promise<Float32Array[]> {
  const stdout = await titanOk(['logits', pkg, '--ids', ids.join(','), '--positions', positions.join(','), '--json', ...CPU, ...extra]);
  const parsed = JSON.parse(stdout) as { positions: number[]; logits: number[][] };
  if (parsed.positions.join() !== positions.join()) throw new Error(`titan logits answered positions ${parsed.positions} for ${positions}`);
  return parsed.logits.map((row) => Float32Array.from(row));
}
