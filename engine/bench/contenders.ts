// The contenders of a bench run and how each is made from the source checkpoint.
//
// A contender made by the bench is a `titan` command line (convert, titanize, with any of their
// options), so a new package variant — `titanize --window 512 --quantize int4`, `--dtype fp16` — is
// one more `--variant id=…` and needs no code here. Prebuilt packages join with `--package id=DIR`.
// Everything the bench makes goes into a cache folder, keyed by the source checkpoint's files, the
// command line and the engine's own code, so a second run reuses it and a code change remakes it.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportTransformersJs } from '../export/transformers-js';
import { ModelError } from '../model/errors';
import { readPackage } from '../titanize/package';
import type { ContenderEngine } from './measure';

export type ContenderRole = 'titan' | 'full-attention' | 'transformers-js';

export interface ContenderSpec {
  /** Short id used in tables, JSON and the plot (e.g. titan-w512). */
  id: string;
  label: string;
  engine: ContenderEngine;
  role: ContenderRole;
  /** Softmax window of the package (null: unbounded). */
  window: number | null;
  make: { cli: string[] } | { export: 'transformers-js' } | { dir: string };
}

export interface PreparedContender extends ContenderSpec {
  dir: string;
  /** The command that made it, for the report (null for prebuilt packages). */
  command: string | null;
  reused: boolean;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$/;

/** The standard field: Titan at each window, the base package, and transformers.js on the export. */
export function defaultContenders(windows: readonly number[]): ContenderSpec[] {
  return [
    ...windows.map((w): ContenderSpec => ({ id: `titan-w${w}`, label: `Titan (window ${w})`, engine: 'package', role: 'titan', window: w, make: { cli: ['titanize', '--window', String(w)] } })),
    { id: 'base', label: 'base package (full attention)', engine: 'package', role: 'full-attention', window: null, make: { cli: ['convert'] } },
    { id: 'transformers-js', label: 'transformers.js (full attention)', engine: 'transformers-js', role: 'transformers-js', window: null, make: { export: 'transformers-js' } },
  ];
}

/**
 * `--int4`: beside each package contender the bench makes, its twin with int4 projection weights
 * (`<id>-int4`, the same command plus `--quantize int4`), measured in the same run.
 */
export function int4Twins(specs: readonly ContenderSpec[]): ContenderSpec[] {
  return specs.flatMap((spec) => {
    if (spec.engine !== 'package' || !('cli' in spec.make) || spec.make.cli.includes('--quantize')) return [spec];
    const twin: ContenderSpec = { ...spec, id: `${spec.id}-int4`, label: `${spec.label}, int4 weights`, make: { cli: [...spec.make.cli, '--quantize', 'int4'] } };
    return [spec, twin];
  });
}

function splitId(arg: string, option: string): [string, string] {
  const eq = arg.indexOf('=');
  if (eq < 1) throw new ModelError(`--${option} takes id=…, got "${arg}"`);
  const id = arg.slice(0, eq).trim();
  if (!ID_PATTERN.test(id)) throw new ModelError(`--${option} id "${id}" must be letters, digits, '.', '_' or '-' (at most 48)`);
  return [id, arg.slice(eq + 1).trim()];
}

/** `--variant "id=titanize --window 512 --quantize int4"`: a contender made by a titan command. */
export function parseVariant(arg: string): ContenderSpec {
  const [id, rest] = splitId(arg, 'variant');
  const argv = rest.split(/\s+/).filter(Boolean);
  const command = argv[0];
  if (command !== 'titanize' && command !== 'convert') throw new ModelError(`--variant ${id}: the command must be titanize or convert, got "${command ?? ''}"`);
  if (argv.includes('--out')) throw new ModelError(`--variant ${id}: leave out --out, the bench chooses where packages go`);
  const w = argv.indexOf('--window');
  const window = w >= 0 && /^\d+$/.test(argv[w + 1] ?? '') ? Number(argv[w + 1]) : null;
  const role: ContenderRole = command === 'titanize' ? 'titan' : 'full-attention';
  return { id, label: `${id} (${argv.join(' ')})`, engine: 'package', role, window, make: { cli: argv } };
}

/** `--package id=DIR`: a package made elsewhere. */
export function parsePackage(arg: string): ContenderSpec {
  const [id, dir] = splitId(arg, 'package');
  const pkg = readPackage(dir);
  const role: ContenderRole = pkg.manifest.kind === 'titan' ? 'titan' : 'full-attention';
  return { id, label: `${id} (${path.basename(path.resolve(dir))})`, engine: 'package', role, window: pkg.manifest.window, make: { dir: path.resolve(dir) } };
}

/** The CLI and measurement entry points, bundled (dist/engine) or from source (through tsx). */
export function entryPoint(bundled: string, source: string): { file: string; execArgv: string[] } {
  const b = path.join(__dirname, bundled);
  if (fs.existsSync(b)) return { file: b, execArgv: [] };
  const s = path.join(__dirname, source);
  if (fs.existsSync(s)) return { file: s, execArgv: ['--import', 'tsx'] };
  throw new Error(`${bundled} not found beside ${__dirname}; run npm run build`);
}

/** Identity of a checkpoint folder's files (names, sizes, mtimes): a changed file changes it. */
function folderIdentity(dir: string): string {
  const h = crypto.createHash('sha256').update(path.resolve(dir));
  for (const f of fs.readdirSync(dir).sort()) {
    const st = fs.statSync(path.join(dir, f));
    if (st.isFile()) h.update(`${f}:${st.size}:${st.mtimeMs}`);
  }
  return h.digest('hex');
}

/** The source folders whose code decides what a package or export contains. */
const PACKAGE_CODE = ['graph', 'titanize', 'model', 'export'];

/** Hash of the engine's code (the bundle, or the package-making sources), so packages follow code changes. */
let engineStampCache: string | null = null;
export function engineStamp(): string {
  if (engineStampCache) return engineStampCache;
  const h = crypto.createHash('sha256');
  const bundle = path.join(__dirname, 'cli.js');
  if (fs.existsSync(bundle)) h.update(fs.readFileSync(bundle));
  else {
    const root = path.join(__dirname, '..');
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts')) h.update(p).update(fs.readFileSync(p));
      }
    };
    for (const sub of PACKAGE_CODE) if (fs.existsSync(path.join(root, sub))) walk(path.join(root, sub));
  }
  engineStampCache = h.digest('hex');
  return engineStampCache;
}

function runCli(argv: string[], signal?: AbortSignal): Promise<void> {
  const entry = entryPoint('cli.js', '../cli.ts');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...entry.execArgv, entry.file, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let err = '';
    child.stdout.resume();
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => reject(e));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new ModelError(`titan ${argv.join(' ')} failed: ${err.trim().split('\n').pop() ?? `exit code ${code}`}`));
    });
  });
}

export interface PrepareOptions {
  source: string;
  cacheDir: string;
  dtype: 'fp32' | 'fp16';
  log: (line: string) => void;
  signal?: AbortSignal;
}

const quote = (a: string) => (/^[\w./=,:+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

/** Makes (or finds in the cache) every contender's package or export. */
export async function prepareContenders(specs: readonly ContenderSpec[], options: PrepareOptions): Promise<PreparedContender[]> {
  const source = path.resolve(options.source);
  const sourceKey = folderIdentity(source);
  fs.mkdirSync(options.cacheDir, { recursive: true });
  const prepared: PreparedContender[] = [];
  for (const spec of specs) {
    if ('dir' in spec.make) {
      prepared.push({ ...spec, dir: spec.make.dir, command: null, reused: true });
      continue;
    }
    const recipe = 'cli' in spec.make ? [...spec.make.cli, ...(spec.make.cli.includes('--dtype') ? [] : ['--dtype', options.dtype])] : ['export-transformers-js', '--dtype', options.dtype];
    const key = crypto.createHash('sha256').update(JSON.stringify([sourceKey, recipe, engineStamp()])).digest('hex').slice(0, 12);
    const dir = path.join(path.resolve(options.cacheDir), `${spec.id}-${key}`);
    const done = path.join(dir, '.bench-complete');
    const command = 'cli' in spec.make ? `titan ${[recipe[0], source, ...recipe.slice(1), '--out', dir].map(quote).join(' ')}` : `exportTransformersJs(${source}, ${dir}, {dtype: ${options.dtype}}) (engine/export/transformers-js.ts)`;
    if (fs.existsSync(done)) {
      prepared.push({ ...spec, dir, command, reused: true });
      continue;
    }
    options.log(`making ${spec.id}: ${command}`);
    if ('cli' in spec.make) await runCli([recipe[0], source, ...recipe.slice(1), '--out', dir], options.signal);
    else exportTransformersJs(source, dir, { dtype: options.dtype });
    fs.writeFileSync(done, new Date().toISOString() + '\n');
    // Older builds of this contender (another engine version or source) are superseded: keep one per id.
    const stale = new RegExp(`^${spec.id.replace(/[.]/g, '\\.')}-[0-9a-f]{12}$`);
    for (const old of fs.readdirSync(path.dirname(dir))) {
      if (stale.test(old) && path.join(path.dirname(dir), old) !== dir) fs.rmSync(path.join(path.dirname(dir), old), { recursive: true, force: true });
    }
    prepared.push({ ...spec, dir, command, reused: false });
  }
  return prepared;
}
