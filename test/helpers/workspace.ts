// Workspaces and Titan packages for the workspace-memory tests: a small random Titan model (fast
// enough to stream millions of tokens), the demo model titanized, synthetic source trees with a
// fixed stream order (explicit mtimes), a tree of bad inputs, and the titan CLI run from source.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeState } from '../../engine/runtime/state-blob';
import { titanize } from '../../engine/titanize/titanize';
import type { TpttSettingsInput } from '../../engine/titanize/settings';
import { writeRandomCheckpoint } from './checkpoint';
import { seededRandom } from '../../engine/util/random';

export const REPO = path.resolve(__dirname, '../..');
export const DEMO_MODEL = path.join(REPO, 'media/models/code-llama-19m');

/**
 * μ of the packages tests build: the reference's 0.5, where the linear branch weighs as much as
 * softmax attention, not Titan's default 0.05, under which an error in the branch would move the
 * logits a tenth as much.
 */
export const TEST_MAG_WEIGHT = 0.5;

/**
 * A random-weight llama titanized with a small window: hidden 64, 2 layers and a byte-level BPE
 * tokenizer with a chat template by default; `minimal` (hidden 32, 1 layer) runs about three times
 * faster where only volume matters; `tokenizer: 'code-llama-19m'` gives the demo model's tokens.
 */
export async function tinyTitanPackage(
  dir: string,
  settings: TpttSettingsInput = {},
  options: { seed?: number; minimal?: boolean; tokenizer?: 'tiny' | 'code-llama-19m' } = {},
): Promise<string> {
  const hf = path.join(dir, 'hf');
  const size = options.minimal ? { hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1 } : { hiddenSize: 64, numLayers: 2 };
  await writeRandomCheckpoint(hf, { arch: 'llama', ...size, seed: options.seed ?? 1, chatTemplate: 'inline', tokenizer: options.tokenizer ?? 'tiny', tied: options.tokenizer === 'code-llama-19m' });
  const { pkg } = titanize(hf, path.join(dir, 'pkg'), { max_self_attn_length: 64, max_chunk_size: 16, mag_weight: TEST_MAG_WEIGHT, ...settings });
  return pkg.dir;
}

/** The bundled code-llama-19m titanized for workspace memory. */
export function demoTitanPackage(dir: string, settings: TpttSettingsInput = {}): string {
  const { pkg } = titanize(DEMO_MODEL, dir, { max_self_attn_length: 256, max_chunk_size: 64, mag_weight: TEST_MAG_WEIGHT, ...settings });
  return pkg.dir;
}

/** mulberry32 (the engine's seeded PRNG). */
export const rng = seededRandom;

const WORDS = ['count', 'value', 'index', 'buffer', 'state', 'token', 'offset', 'limit', 'result', 'cache', 'entry', 'node', 'path', 'size', 'queue', 'retry', 'delay', 'parse', 'render', 'merge'];

/** Code-like TypeScript text: `lines` lines of functions over pseudo-random identifiers. */
export function syntheticSource(seed: number, lines: number, name = `module${seed}`): string {
  const r = rng(seed);
  const w = (): string => WORDS[Math.floor(r() * WORDS.length)];
  const out = [`// ${name}: generated for the workspace-memory tests`];
  let fn = 0;
  while (out.length < lines) {
    const f = `${w()}${w()[0].toUpperCase()}${w().slice(1)}${fn++}`;
    out.push(`export function ${f}(${w()}: number, ${w()}: string): number {`);
    const body = 1 + Math.floor(r() * 6);
    for (let i = 0; i < body && out.length < lines - 1; i++) out.push(`  const ${w()}${i} = ${Math.floor(r() * 1000)} + ${w()}.length * ${Math.floor(r() * 97)};`);
    out.push(`  return ${Math.floor(r() * 10_000)};`, '}');
  }
  return out.join('\n') + '\n';
}

export interface SyntheticFile {
  rel: string;
  abs: string;
  /** Modification time in seconds (the stream order is by mtime). */
  mtime: number;
}

/** Sets a file's mtime (and atime) in seconds. */
export function setMtime(file: string, seconds: number): void {
  fs.utimesSync(file, seconds, seconds);
}

/**
 * Writes `count` source files under `root` (in a few nested folders) with strictly increasing
 * mtimes from `baseMtime`, so their stream order is the order written.
 */
export function writeSyntheticWorkspace(root: string, options: { count: number; lines: number; seed?: number; baseMtime?: number }): SyntheticFile[] {
  const seed = options.seed ?? 1;
  const base = options.baseMtime ?? 1_600_000_000;
  const files: SyntheticFile[] = [];
  for (let i = 0; i < options.count; i++) {
    const rel = `src/${['core', 'util', 'io', 'net'][i % 4]}/${i % 3 === 0 ? 'deep/' : ''}file${String(i).padStart(5, '0')}.ts`;
    const abs = path.join(root, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, syntheticSource(seed * 100_003 + i, options.lines, rel));
    setMtime(abs, base + i * 10);
    files.push({ rel, abs, mtime: base + i * 10 });
  }
  return files;
}

/** Every file of a directory tree (relative POSIX paths → bytes), for comparing storage snapshots. */
export function snapshotTree(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(path.relative(dir, p).split(path.sep).join('/'), fs.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

/** Spawns `titan <args>` from source (tsx), as a user would run it, without waiting. */
export function spawnTitan(args: string[], options: { cwd?: string } = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'engine/cli.ts'), ...args], {
    cwd: options.cwd ?? REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TITAN_DEBUG: '1' },
  });
}

export interface TitanRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `titan <args>` from source to the end (killed after timeoutMs: a hang is a failure). */
export function runTitan(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<TitanRun> {
  return new Promise((resolve, reject) => {
    const child = spawnTitan(args, options);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
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

/** A memory folder's manifest and checkpoints, read straight from disk. */
export interface StoredMemory {
  manifest: {
    files: { path: string; sha256: string; tokens: number }[];
    complete: boolean;
    checkpoints: { file: string; position: number; files: number; offset: number; sha256: string; bytes: number }[];
  };
  /** The state blob of a checkpoint entry. */
  state(position: number): Buffer;
  last(): Buffer;
}

export function readStoredMemory(memoryDir: string): StoredMemory {
  const manifest = JSON.parse(fs.readFileSync(path.join(memoryDir, 'manifest.json'), 'utf8')) as StoredMemory['manifest'];
  const state = (position: number): Buffer => {
    const entry = manifest.checkpoints.find((c) => c.position === position);
    if (!entry) throw new Error(`no checkpoint at ${position} in ${memoryDir}`);
    return fs.readFileSync(path.join(memoryDir, entry.file));
  };
  return { manifest, state, last: () => state(manifest.checkpoints[manifest.checkpoints.length - 1].position) };
}

/** The single memory folder inside a storage folder. */
export function memoryDirIn(storageDir: string): string {
  const dirs = fs.readdirSync(storageDir, { withFileTypes: true }).filter((e) => e.isDirectory());
  if (dirs.length !== 1) throw new Error(`expected one memory folder in ${storageDir}, found ${dirs.map((d) => d.name).join(', ') || 'none'}`);
  return path.join(storageDir, dirs[0].name);
}

/** Largest absolute difference between two state blobs (throws if their positions or tensor layouts differ). */
export function stateDifference(a: Uint8Array, b: Uint8Array): number {
  const sa = decodeState(a);
  const sb = decodeState(b);
  if (sa.position !== sb.position) throw new Error(`states at different positions: ${sa.position} vs ${sb.position}`);
  if (sa.tensors.length !== sb.tensors.length) throw new Error('states with different tensor counts');
  let worst = 0;
  sa.tensors.forEach((t, i) => {
    const u = sb.tensors[i];
    if (t.name !== u.name || t.dims.join() !== u.dims.join()) throw new Error(`tensor ${t.name} ${t.dims} vs ${u.name} ${u.dims}`);
    for (let j = 0; j < t.data.length; j++) worst = Math.max(worst, Math.abs(t.data[j] - u.data[j]));
  });
  return worst;
}
