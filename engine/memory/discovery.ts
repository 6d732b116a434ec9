// Workspace discovery: which files of the workspace folders enter the memory stream, and in
// what order.
//
// The walk honours .gitignore (every level), .ignore, .git/info/exclude and the caller's
// exclude globs, never enters .git, and checks each remaining file (name, size, bytes) with
// fileChecks.ts. It keeps no file texts: an accepted file is described by its path, size,
// mtime and sha256, and readWorkspaceFile() reads it again when the stream needs it. The
// stream order is oldest modification first, so that an edit, which makes a file the
// newest, invalidates only the tail of a stream read in that order.
//
// Scale: directories and files are handled as jobs on a small pool (async fs, bounded
// concurrency), long directory listings yield to the event loop, and an AbortSignal stops
// the walk between jobs.

import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import * as path from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { nodeDiscoveryFs, type DirEntry, type DiscoveryFs, type LoadedFile } from './discoveryFs';
import { compileExclude, excludeEntries, type ExcludeGlobs, type ExcludeMatcher } from './excludeGlobs';
import { classifyContent, DEFAULT_CONTENT_LIMITS, skipByName, type ContentLimits, type Skip, type SkipReason } from './fileChecks';
import { IgnoreRules, type RulesSource } from './ignoreRules';
import { JobPool } from './jobPool';
import { MAX_IGNORE_FILE_BYTES } from '../limits';

export { DEFAULT_CONTENT_LIMITS, LOCK_FILE_NAMES, type ContentLimits, type SkipReason } from './fileChecks';
export { nodeDiscoveryFs, type DirEntry, type DiscoveryFs, type LoadedFile } from './discoveryFs';
export type { ExcludeGlobs } from './excludeGlobs';

export interface WorkspaceFolderSpec {
  /** Absolute path of the folder on disk. */
  readonly path: string;
  /** The folder's name in stream paths of a multi-root workspace; defaults to its base name. */
  readonly name?: string;
  /** Excludes for this folder only, on top of DiscoveryOptions.exclude. */
  readonly exclude?: ExcludeGlobs;
}

/** An accepted file. The text is not kept; readWorkspaceFile() reads and re-checks it. */
export interface WorkspaceFile {
  /** Name of its workspace folder (unique among the folders). */
  readonly folder: string;
  readonly folderIndex: number;
  /** Relative to the folder, POSIX separators. */
  readonly relativePath: string;
  /** The path the model sees: relativePath, prefixed with `folder/` in a multi-root workspace. */
  readonly streamPath: string;
  readonly absolutePath: string;
  readonly size: number;
  readonly mtimeMs: number;
  /** sha256 of the file's bytes, hex. */
  readonly sha256: string;
}

export interface SkippedFile {
  readonly folder: string;
  readonly folderIndex: number;
  /** Relative to the folder, POSIX separators; a skipped directory ends with '/'. */
  readonly relativePath: string;
  /** Same form as WorkspaceFile.streamPath. */
  readonly path: string;
  readonly absolutePath: string;
  readonly reason: SkipReason;
  readonly detail: string;
}

export interface DiscoveryCounts {
  /** Files and links listed so far (directories not included). */
  readonly seen: number;
  readonly accepted: number;
  /** Files left out for a SkipReason; each is listed in WorkspaceDiscovery.skipped. */
  readonly skipped: number;
  /**
   * Files and whole directories left out by .gitignore, .ignore or .git/info/exclude, plus
   * .git itself and, with followSymlinks: false, links. Counted, not listed.
   */
  readonly ignored: number;
  /** Files and whole directories left out by the caller's exclude globs. */
  readonly excluded: number;
  /** Directories listed. */
  readonly directories: number;
}

export interface DiscoveryProgress extends DiscoveryCounts {
  readonly done: boolean;
}

export interface DiscoveryOptions extends Partial<ContentLimits> {
  /** Excludes for every folder (files.exclude / search.exclude style). */
  readonly exclude?: ExcludeGlobs;
  /** Honour .gitignore, .ignore and .git/info/exclude (default true). */
  readonly useIgnoreFiles?: boolean;
  /** Follow symbolic links to files and directories (default true, like VS Code search). */
  readonly followSymlinks?: boolean;
  /**
   * Most files to accept (default: no cap). At the cap the walk stops listing and reading, and
   * the result says so in `limitReached`; which files made it in then depends on the walk order.
   */
  readonly maxFiles?: number;
  /** Jobs (directory listings, file reads) in flight at once (default 16). */
  readonly concurrency?: number;
  /** Called at most every progressIntervalMs while walking, and once at the end with done: true. */
  readonly onProgress?: (progress: DiscoveryProgress) => void;
  readonly progressIntervalMs?: number;
  readonly signal?: AbortSignal;
  readonly fs?: Partial<DiscoveryFs>;
}

export interface WorkspaceDiscovery {
  readonly folders: ReadonlyArray<{ readonly name: string; readonly path: string }>;
  /** In stream order: see compareStreamOrder. */
  readonly files: readonly WorkspaceFile[];
  /** By folder, then path. */
  readonly skipped: readonly SkippedFile[];
  readonly counts: DiscoveryCounts;
  readonly elapsedMs: number;
  /** Set when the walk stopped at `maxFiles`: the notice for the user. */
  readonly limitReached: string | null;
}

/** Rejection of a cancelled discovery; `name` is 'AbortError' like the platform's. */
export class DiscoveryAbortedError extends Error {
  override readonly name = 'AbortError';
  readonly code = 'ABORT_ERR';
}

/** Thrown by readWorkspaceFile when a file no longer passes the checks it passed at discovery. */
export class WorkspaceFileSkippedError extends Error {
  override readonly name = 'WorkspaceFileSkippedError';
  constructor(readonly skip: SkippedFile) {
    super(`${skip.path} is no longer readable as text: ${skip.reason} (${skip.detail})`);
  }
}

/** The header a file enters the stream with; the demo model was trained on this form. */
export const DEFAULT_FILE_HEADER = '<|file|> {path}\n';

/**
 * Renders a file's header. `format` is a template with {path} (the stream path) and
 * {folder}, or a function of the stream path. Control characters in a path (a newline in
 * a file name would forge a line of the stream) are written as JSON escapes.
 */
export function renderFileHeader(
  file: Pick<WorkspaceFile, 'streamPath' | 'folder'> | string,
  format: string | ((streamPath: string) => string) = DEFAULT_FILE_HEADER,
): string {
  const streamPath = escapeControl(typeof file === 'string' ? file : file.streamPath);
  if (typeof format === 'function') return format(streamPath);
  const folder = typeof file === 'string' ? '' : escapeControl(file.folder);
  return format.replace(/\{(path|folder)\}/g, (_, key: string) => (key === 'path' ? streamPath : folder));
}

function escapeControl(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1));
}

/**
 * Stream order: oldest mtime first, ties by stream path (UTF-16 code units, not the
 * locale, so every machine agrees). A pure function of (mtimeMs, streamPath).
 */
export function compareStreamOrder(
  a: Pick<WorkspaceFile, 'mtimeMs' | 'streamPath'>,
  b: Pick<WorkspaceFile, 'mtimeMs' | 'streamPath'>,
): number {
  if (a.mtimeMs !== b.mtimeMs) return a.mtimeMs < b.mtimeMs ? -1 : 1;
  return compareCodeUnits(a.streamPath, b.streamPath);
}

export function orderForStream<T extends Pick<WorkspaceFile, 'mtimeMs' | 'streamPath'>>(files: readonly T[]): T[] {
  return [...files].sort(compareStreamOrder);
}

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface ReadWorkspaceFileOptions extends Partial<ContentLimits> {
  readonly fs?: Partial<DiscoveryFs>;
}

export interface WorkspaceFileRead {
  /** The file as it is now (size, mtime and hash of the bytes just read). */
  readonly file: WorkspaceFile;
  readonly text: string;
  /** Whether the bytes differ from the ones discovery hashed. */
  readonly changed: boolean;
}

/**
 * Reads an accepted file again, with the same checks as discovery (pass the same limits).
 * Throws WorkspaceFileSkippedError if it is gone, too large, binary, not UTF-8, and so on.
 */
export async function readWorkspaceFile(file: WorkspaceFile, options: ReadWorkspaceFileOptions = {}): Promise<WorkspaceFileRead> {
  const fs = { ...nodeDiscoveryFs, ...options.fs };
  const limits = contentLimits(options);
  const skipped = ({ reason, detail }: Skip): never => {
    throw new WorkspaceFileSkippedError({
      folder: file.folder, folderIndex: file.folderIndex, relativePath: file.relativePath,
      path: file.streamPath, absolutePath: file.absolutePath, reason, detail,
    });
  };
  const read = await readChecked(fs, file.absolutePath, path.posix.basename(file.relativePath), limits);
  if (!read.ok) return skipped(read);
  const now: WorkspaceFile = { ...file, size: read.size, mtimeMs: read.stat.mtimeMs, sha256: read.sha256 };
  return { file: now, text: read.text, changed: read.sha256 !== file.sha256 };
}

/** Lists the text files of the workspace folders that belong in the memory stream. */
export async function discoverWorkspace(
  folders: ReadonlyArray<WorkspaceFolderSpec | string>,
  options: DiscoveryOptions = {},
): Promise<WorkspaceDiscovery> {
  const started = performance.now();
  const { signal } = options;
  if (signal?.aborted) throw new DiscoveryAbortedError('Workspace discovery was cancelled before it started', { cause: signal.reason });

  const walk = new Walk(folders.map((f) => (typeof f === 'string' ? { path: f } : f)), options);
  const onAbort = (): void => walk.pool.fail(new DiscoveryAbortedError(
    `Workspace discovery was cancelled after ${walk.counts.seen} files (${walk.counts.accepted} accepted)`,
    { cause: signal?.reason },
  ));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    walk.start();
    await walk.pool.finished;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }

  const { files, duplicates } = dropDuplicates(walk.accepted);
  const skipped = [...walk.skipped, ...duplicates].sort(
    (a, b) => a.folderIndex - b.folderIndex || compareCodeUnits(a.relativePath, b.relativePath),
  );
  walk.counts.accepted = files.length;
  walk.counts.skipped = skipped.length;
  walk.progress(true);
  return {
    folders: walk.folders.map((f) => ({ name: f.name, path: f.root })),
    files: files.sort(compareStreamOrder),
    skipped,
    counts: { ...walk.counts },
    elapsedMs: performance.now() - started,
    limitReached: walk.full
      ? `the workspace has more files than the memory's cap of ${walk.maxFiles} (titan.memory.maxFiles, --max-files): discovery stopped at the cap and the rest of the workspace is left out`
      : null,
  };
}

// ---------------------------------------------------------------------------------------

const LISTING_SLICE = 256;

function contentLimits(options: Partial<ContentLimits>): ContentLimits {
  return {
    maxFileSize: options.maxFileSize ?? DEFAULT_CONTENT_LIMITS.maxFileSize,
    maxLineLength: options.maxLineLength ?? DEFAULT_CONTENT_LIMITS.maxLineLength,
    maxAverageLineLength: options.maxAverageLineLength ?? DEFAULT_CONTENT_LIMITS.maxAverageLineLength,
    skipGenerated: options.skipGenerated ?? DEFAULT_CONTENT_LIMITS.skipGenerated,
  };
}

interface Folder {
  readonly index: number;
  readonly name: string;
  readonly root: string;
  readonly excluded: ExcludeMatcher;
}

/** A directory being walked; `ancestors` are the real paths from the folder root down to it. */
interface Dir {
  readonly folder: Folder;
  readonly rel: string;
  readonly abs: string;
  readonly ancestors: Ancestry;
  readonly viaSymlink: boolean;
}

interface Ancestry {
  readonly real: string;
  readonly parent?: Ancestry;
}

interface Accepted extends WorkspaceFile {
  readonly identity: string;
  readonly viaSymlink: boolean;
}

class Walk {
  readonly pool: JobPool;
  readonly folders: Folder[];
  readonly accepted: Accepted[] = [];
  readonly skipped: SkippedFile[] = [];
  readonly counts = { seen: 0, accepted: 0, skipped: 0, ignored: 0, excluded: 0, directories: 0 };
  private readonly fs: DiscoveryFs;
  private readonly limits: ContentLimits;
  private readonly multiRoot: boolean;
  private readonly ignoreCase = process.platform === 'darwin' || process.platform === 'win32';
  private lastProgress = 0;
  readonly maxFiles: number;
  /** File inspections reserved by roomForFile and not yet finished (they may still be accepted). */
  private inspecting = 0;
  /** The file cap was reached: nothing more is listed or read. */
  full = false;

  constructor(specs: readonly WorkspaceFolderSpec[], private readonly options: DiscoveryOptions) {
    this.fs = { ...nodeDiscoveryFs, ...options.fs };
    this.limits = contentLimits(options);
    this.maxFiles = options.maxFiles ?? Infinity;
    this.pool = new JobPool(Math.max(1, options.concurrency ?? 16));
    this.multiRoot = specs.length > 1;
    const taken = new Set<string>();
    this.folders = specs.map((spec, index) => {
      const root = path.resolve(spec.path);
      const base = spec.name ?? (path.basename(root) || root);
      let name = base;
      for (let n = 2; taken.has(name); n++) name = `${base} (${n})`;
      taken.add(name);
      const globs = [...excludeEntries(options.exclude), ...excludeEntries(spec.exclude)];
      return { index, name, root, excluded: compileExclude(globs, this.ignoreCase) };
    });
  }

  start(): void {
    for (const folder of this.folders) this.pool.spawn(() => this.scanRoot(folder));
    this.pool.spawn(async () => undefined); // settles the pool when there are no folders
  }

  progress(done: boolean): void {
    const now = performance.now();
    if (!done && now - this.lastProgress < (this.options.progressIntervalMs ?? 100)) return;
    this.lastProgress = now;
    this.options.onProgress?.({ ...this.counts, done });
  }

  private streamPath(folder: Folder, rel: string): string {
    return this.multiRoot ? `${folder.name}/${rel}` : rel;
  }

  private skip(folder: Folder, rel: string, abs: string, { reason, detail }: Skip): void {
    this.counts.skipped++;
    this.skipped.push({ folder: folder.name, folderIndex: folder.index, relativePath: rel, path: this.streamPath(folder, rel), absolutePath: abs, reason, detail });
  }

  private async scanRoot(folder: Folder): Promise<void> {
    let real: string;
    try {
      const st = await this.fs.stat(folder.root);
      if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      real = await this.fs.realpath(folder.root);
    } catch (err) {
      this.skip(folder, '', folder.root, { reason: 'unreadable', detail: `workspace folder ${folder.root}: ${describeError(err)}` });
      return;
    }
    const root: Dir = { folder, rel: '', abs: folder.root, ancestors: { real }, viaSymlink: false };
    await this.scanDir(root, IgnoreRules.empty(this.ignoreCase));
  }

  /**
   * Reserves room under the cap for one file inspection (inspectFile gives it back), or notes
   * that the cap is reached. Queued inspections count, so a huge directory queues at most the cap.
   */
  private roomForFile(): boolean {
    if (this.accepted.length + this.inspecting < this.maxFiles) {
      this.inspecting++;
      return true;
    }
    this.full = true;
    return false;
  }

  private async scanDir(dir: Dir, inherited: IgnoreRules): Promise<void> {
    const { folder } = dir;
    if (this.full) return;
    let entries: readonly DirEntry[];
    try {
      entries = await this.fs.readdir(dir.abs);
    } catch (err) {
      this.skip(folder, dir.rel === '' ? '' : `${dir.rel}/`, dir.abs, { reason: 'unreadable', detail: `directory: ${describeError(err)}` });
      return;
    }
    this.counts.directories++;
    const rules = this.options.useIgnoreFiles === false ? inherited : inherited.extend(dir.rel, await this.readRulesFiles(dir, entries));
    let siblings: ReadonlySet<string> | undefined;
    const siblingNames = (): ReadonlySet<string> => (siblings ??= new Set(entries.map((e) => e.name)));

    for (let i = 0; i < entries.length; i++) {
      if (i % LISTING_SLICE === LISTING_SLICE - 1) {
        await yieldToEventLoop();
        if (this.pool.stopped) return;
      }
      if (this.full) return;
      const entry = entries[i];
      const rel = dir.rel === '' ? entry.name : `${dir.rel}/${entry.name}`;
      const abs = path.join(dir.abs, entry.name);
      if (entry.name === '.git') {
        this.counts.ignored++;
        continue;
      }
      const isDir = entry.isDirectory();
      if (!isDir) this.counts.seen++;
      if (folder.excluded(rel, isDir, siblingNames)) {
        this.counts.excluded++;
      } else if (rules.ignores(rel, isDir)) {
        this.counts.ignored++;
      } else if (isDir) {
        const sub: Dir = { folder, rel, abs, ancestors: { real: path.join(dir.ancestors.real, entry.name), parent: dir.ancestors }, viaSymlink: dir.viaSymlink };
        this.pool.spawn(() => this.scanDir(sub, rules));
      } else if (entry.isSymbolicLink()) {
        if (this.options.followSymlinks === false) this.counts.ignored++;
        else this.pool.spawn(() => this.followLink(dir, rules, rel, abs, siblingNames));
      } else if (entry.isFile()) {
        const byName = skipByName(entry.name);
        if (byName) this.skip(folder, rel, abs, byName);
        else if (this.roomForFile()) this.pool.spawn(() => this.inspectFile(dir, rel, abs, dir.viaSymlink));
      } else {
        this.skip(folder, rel, abs, { reason: 'unreadable', detail: 'not a regular file (a socket, FIFO or device)' });
      }
    }
    this.progress(false);
  }

  private async readRulesFiles(dir: Dir, entries: readonly DirEntry[]): Promise<Array<{ source: RulesSource; text: string }>> {
    const wanted: Array<[RulesSource, string]> = [];
    for (const e of entries) {
      if (e.name === '.gitignore') wanted.push(['gitignore', path.join(dir.abs, e.name)]);
      else if (e.name === '.ignore') wanted.push(['ignore', path.join(dir.abs, e.name)]);
      else if (e.name === '.git' && e.isDirectory()) wanted.push(['exclude', path.join(dir.abs, '.git', 'info', 'exclude')]);
    }
    const files: Array<{ source: RulesSource; text: string }> = [];
    for (const [source, file] of wanted) {
      try {
        const { bytes } = await this.fs.loadFile(file, MAX_IGNORE_FILE_BYTES);
        if (bytes) files.push({ source, text: bytes.toString('utf8') });
      } catch {
        // A missing info/exclude is normal; an unreadable .gitignore is reported when it is
        // inspected as a file of its own.
      }
    }
    return files;
  }

  private async followLink(dir: Dir, rules: IgnoreRules, rel: string, abs: string, siblings: () => ReadonlySet<string>): Promise<void> {
    const { folder } = dir;
    let st: Stats;
    try {
      st = await this.fs.stat(abs);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ELOOP') this.skip(folder, rel, abs, { reason: 'symlink-loop', detail: 'the link resolves to itself through other links' });
      else if (code === 'ENOENT' || code === 'ENOTDIR') this.skip(folder, rel, abs, { reason: 'broken-symlink', detail: `the link's target does not exist (${code})` });
      else this.skip(folder, rel, abs, { reason: 'unreadable', detail: describeError(err) });
      return;
    }
    if (st.isDirectory()) {
      // Ignore rules and globs were asked about a file; a directory-only pattern may still apply.
      if (folder.excluded(rel, true, siblings)) { this.counts.excluded++; return; }
      if (rules.ignores(rel, true)) { this.counts.ignored++; return; }
      let real: string;
      try {
        real = await this.fs.realpath(abs);
      } catch (err) {
        this.skip(folder, rel, abs, { reason: 'unreadable', detail: describeError(err) });
        return;
      }
      for (let a: Ancestry | undefined = dir.ancestors; a; a = a.parent) {
        if (a.real === real) {
          this.skip(folder, rel, abs, { reason: 'symlink-loop', detail: `links back to ${real}, which contains it` });
          return;
        }
      }
      const sub: Dir = { folder, rel, abs, ancestors: { real, parent: dir.ancestors }, viaSymlink: true };
      await this.scanDir(sub, rules);
    } else if (st.isFile()) {
      const byName = skipByName(path.posix.basename(rel));
      if (byName) this.skip(folder, rel, abs, byName);
      else if (this.roomForFile()) await this.inspectFile(dir, rel, abs, true);
    } else {
      this.skip(folder, rel, abs, { reason: 'unreadable', detail: 'the link points at a socket, FIFO or device' });
    }
  }

  private async inspectFile(dir: Dir, rel: string, abs: string, viaSymlink: boolean): Promise<void> {
    const { folder } = dir;
    let read: CheckedRead;
    try {
      read = await readChecked(this.fs, abs, path.posix.basename(rel), this.limits);
    } finally {
      this.inspecting--;
    }
    if (!read.ok) {
      this.skip(folder, rel, abs, read);
    } else {
      this.counts.accepted++;
      this.accepted.push({
        folder: folder.name, folderIndex: folder.index, relativePath: rel, streamPath: this.streamPath(folder, rel),
        absolutePath: abs, size: read.size, mtimeMs: read.stat.mtimeMs, sha256: read.sha256,
        identity: read.stat.ino ? `${read.stat.dev}:${read.stat.ino}` : `path:${abs}`, viaSymlink,
      });
    }
    this.progress(false);
  }
}

type CheckedRead =
  | { readonly ok: true; readonly stat: Stats; readonly size: number; readonly sha256: string; readonly text: string }
  | ({ readonly ok: false } & Skip);

/** Load (stat and bytes), size limit, content checks, hash: shared by discovery and readWorkspaceFile. */
async function readChecked(fs: DiscoveryFs, abs: string, name: string, limits: ContentLimits): Promise<CheckedRead> {
  let loaded: LoadedFile;
  try {
    loaded = await fs.loadFile(abs, limits.maxFileSize);
  } catch (err) {
    return { ok: false, reason: 'unreadable', detail: describeError(err) };
  }
  const { stats: stat, bytes } = loaded;
  if (!stat.isFile()) return { ok: false, reason: 'unreadable', detail: 'not a regular file' };
  if (!bytes || bytes.length > limits.maxFileSize) return tooLarge(bytes?.length ?? stat.size, limits);
  const verdict = classifyContent(name, bytes, limits);
  if (!verdict.ok) return verdict;
  return { ok: true, stat, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), text: verdict.text };
}

function tooLarge(size: number, limits: ContentLimits): CheckedRead {
  return { ok: false, reason: 'too-large', detail: `${size} bytes, over the limit of ${limits.maxFileSize}` };
}

/**
 * One file reached by several paths (a link to a file in the workspace, a hard link,
 * overlapping folders) enters the stream once: by its own path rather than through a link,
 * then by the first folder, then by the smallest path, so the choice does not depend on
 * which listing finished first.
 */
function dropDuplicates(accepted: readonly Accepted[]): { files: WorkspaceFile[]; duplicates: SkippedFile[] } {
  const byIdentity = new Map<string, Accepted[]>();
  for (const f of accepted) {
    const group = byIdentity.get(f.identity);
    if (group) group.push(f);
    else byIdentity.set(f.identity, [f]);
  }
  const files: WorkspaceFile[] = [];
  const duplicates: SkippedFile[] = [];
  for (const group of byIdentity.values()) {
    group.sort((a, b) => Number(a.viaSymlink) - Number(b.viaSymlink) || a.folderIndex - b.folderIndex || compareCodeUnits(a.relativePath, b.relativePath));
    const [kept, ...rest] = group.map(({ identity: _identity, viaSymlink: _viaSymlink, ...file }) => file);
    files.push(kept);
    for (const d of rest) {
      duplicates.push({
        folder: d.folder, folderIndex: d.folderIndex, relativePath: d.relativePath, path: d.streamPath,
        absolutePath: d.absolutePath, reason: 'duplicate', detail: `same file as ${kept.streamPath}`,
      });
    }
  }
  return { files, duplicates };
}

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function describeError(err: unknown): string {
  const code = errorCode(err);
  const what = code === 'EACCES' || code === 'EPERM' ? 'permission denied'
    : code === 'ENOENT' ? 'it no longer exists'
      : err instanceof Error ? err.message : String(err);
  return code ? `${what} (${code})` : what;
}
