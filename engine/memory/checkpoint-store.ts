// The memory's storage folder: model-state checkpoints along the stream, and one manifest that says
// which stream prefix each checkpoint belongs to.
//
//   <storage>/<slug>-<key>/            one folder per (model package, workspace folders)
//     manifest.json                    {format, version, streamKey, files, checkpoints, …, checksum}
//     state-<position>.bin             a state blob (runtime/state-blob.ts: versioned, sha256-checksummed)
//     retrieval-index.json             the lexical index (retrieval.ts); rebuilt when lost
//     .lock/                           held by the process using the folder (proper-lockfile)
//
// The stream is a chain of files in stream order; a checkpoint taken after `files` whole files and
// `offset` tokens into the next one is valid exactly while those files (and that one) are unchanged,
// which its `chain` hash records. Every write is atomic (temp file, fsync, rename, then the folder is
// fsynced), and a state file is written before the manifest that names it, so a process killed at any
// moment leaves either the old manifest or the new one, each naming only complete, checksummed states.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { ModelError } from '../model/errors';
import { formatBytes } from '../limits';
import { decodeState } from '../runtime/state-blob';

export const MANIFEST_FORMAT = 'titan-memory';
export const MANIFEST_VERSION = 1;
const MANIFEST_FILE = 'manifest.json';
const STATE_FILE = /^state-(\d+)\.bin$/;
/** Files the store may delete: its own names and the temp files write-file-atomic leaves when killed. */
const OWN_FILE = /^(?:state-\d+\.bin|manifest\.json|retrieval-index\.json)(?:\.[0-9a-f]+)?$/;

/** One file of the stream, as it was fed. */
export interface ChainFile {
  /** Stream path (the header names it). */
  path: string;
  sha256: string;
  /** Tokens the file takes in the stream, header included. */
  tokens: number;
}

export interface CheckpointEntry {
  /** File name in the memory folder. */
  file: string;
  /** Tokens of the stream before this state. */
  position: number;
  /** Whole files before this state. */
  files: number;
  /** Tokens into file `files` (0 at a file boundary). */
  offset: number;
  /** chainHash() of the prefix the state depends on. */
  chain: string;
  /** sha256 of the state file. */
  sha256: string;
  bytes: number;
  savedAt: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  /** Everything besides the files that fixes the stream: package, tokenizer, header, segment size. */
  streamKey: string;
  packageKey: string;
  workspaces: string[];
  /** The stream as fed, covering at least every checkpoint; the last one may be partly fed. */
  files: ChainFile[];
  /** Whether the last update fed every file of the workspace (the last checkpoint is at the end). */
  complete: boolean;
  lastUpdate: string | null;
  checkpoints: CheckpointEntry[];
}

export interface StoreOptions {
  streamKey: string;
  packageKey: string;
  workspaces: string[];
  /** Consecutive checkpoints are at least this many tokens apart, except the last one. */
  minSpacing: number;
  /** Total bytes of state files kept; the last checkpoint is kept even when it alone is larger. */
  capBytes: number;
  /** How long a lock of a killed process stays before it may be taken over (ms). */
  staleLockMs?: number;
  /** Called before the folder is created again after a deletion (e.g. to restore its parent's .gitignore). */
  beforeCreate?: () => Promise<void>;
}

/** Hashes of chain prefixes: prefix[i] covers files[0..i). */
export function chainPrefixes(streamKey: string, files: readonly Pick<ChainFile, 'path' | 'sha256'>[]): string[] {
  const out = [createHash('sha256').update(`titan-memory-chain\0${streamKey}`).digest('hex')];
  for (const f of files) out.push(createHash('sha256').update(`${out[out.length - 1]}\0${f.path}\0${f.sha256}`).digest('hex'));
  return out;
}

/** The hash a checkpoint after `files` whole files and `offset` tokens into the next records. */
export function chainHash(prefixes: readonly string[], files: readonly Pick<ChainFile, 'path' | 'sha256'>[], n: number, offset: number): string {
  if (offset === 0) return prefixes[n];
  const f = files[n];
  return createHash('sha256').update(`${prefixes[n]}\0partial\0${f.path}\0${f.sha256}\0${offset}`).digest('hex');
}

/** How many leading files two stream orders share (by path and content). */
export function sharedPrefix(a: readonly Pick<ChainFile, 'path' | 'sha256'>[], b: readonly Pick<ChainFile, 'path' | 'sha256'>[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i].path === b[i].path && a[i].sha256 === b[i].sha256) i++;
  return i;
}

function manifestChecksum(m: Manifest): string {
  return createHash('sha256').update(JSON.stringify(m)).digest('hex');
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function fsyncDir(dir: string): Promise<void> {
  // Makes the renames durable; not every platform can open a directory for that, which is fine.
  try {
    const fd = await fsp.open(dir, 'r');
    try {
      await fd.sync();
    } finally {
      await fd.close();
    }
  } catch {
    // best effort
  }
}

/** Writes `data` to `file` so that a reader sees the old file or the new one, never a mix. */
export async function writeAtomic(file: string, data: string | Buffer): Promise<void> {
  await writeFileAtomic(file, data, { fsync: true });
  await fsyncDir(path.dirname(file));
}

function emptyManifest(o: StoreOptions): Manifest {
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, streamKey: o.streamKey, packageKey: o.packageKey, workspaces: o.workspaces, files: [], complete: false, lastUpdate: null, checkpoints: [] };
}

/** Why a stored manifest cannot be used, or null if it can. */
function manifestProblem(raw: unknown, o: StoreOptions): string | null {
  if (typeof raw !== 'object' || raw === null) return 'not a JSON object';
  const { checksum, ...m } = raw as Manifest & { checksum?: unknown };
  if (m.format !== MANIFEST_FORMAT) return 'not a Titan memory manifest';
  if (m.version !== MANIFEST_VERSION) return `version ${String(m.version)} (this engine writes ${MANIFEST_VERSION})`;
  if (checksum !== manifestChecksum(m as Manifest)) return 'checksum mismatch';
  if (m.streamKey !== o.streamKey) return 'written for another model package, tokenizer or stream format';
  if (!Array.isArray(m.files) || !Array.isArray(m.checkpoints)) return 'malformed';
  return null;
}

/**
 * A write to the memory folder failed because the disk (or the user's quota) is full, or the folder
 * turned read-only: one line for the user. The checkpoints already there are untouched.
 */
export class StorageFullError extends ModelError {}

const FULL_DISK_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EFBIG']);

/** Why a write failed, as one line naming the folder and the fix. */
function writeFailure(dir: string, what: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  const detail = String((e as Error).message ?? e).split('\n')[0];
  if (FULL_DISK_CODES.has(code)) {
    const why = code === 'EROFS' ? 'the file system is read-only' : code === 'EDQUOT' ? 'the disk quota is used up' : code === 'EFBIG' ? 'the file is larger than the file system allows' : 'no space left on the device';
    return new StorageFullError(`cannot save ${what} in ${dir}: ${why} (${code}); free some space or choose another storage folder, then run the update again: it resumes from the last checkpoint saved`, { cause: e });
  }
  return new ModelError(`cannot save ${what} in ${dir}: ${detail}`, { cause: e });
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.stat(p);
    return true;
  } catch {
    return false;
  }
}

export class CheckpointStore {
  /** Whether manifest.json should be on disk (it was there at open, or has been written since). */
  private manifestWritten: boolean;

  private constructor(
    readonly dir: string,
    private readonly options: StoreOptions,
    private m: Manifest,
    private release: () => Promise<void>,
    /** Why the stored manifest was discarded at open, if it was. */
    readonly discarded: string | null,
    manifestOnDisk: boolean,
  ) {
    this.manifestWritten = manifestOnDisk;
  }

  /** Opens (creating) the memory folder, takes its lock, reads the manifest and removes leftovers. */
  static async open(dir: string, options: StoreOptions): Promise<CheckpointStore> {
    try {
      await fsp.mkdir(dir, { recursive: true });
    } catch (e) {
      throw new ModelError(`cannot create the memory storage folder ${dir}: ${(e as Error).message}`);
    }
    const release = await acquireLock(dir, Math.max(2000, options.staleLockMs ?? 10_000));
    try {
      let manifest = emptyManifest(options);
      let discarded: string | null = null;
      const file = path.join(dir, MANIFEST_FILE);
      let text: string | null = null;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') discarded = `manifest unreadable: ${(e as Error).message}`;
      }
      if (text !== null) {
        let raw: unknown = null;
        try {
          raw = JSON.parse(text);
        } catch {
          raw = null;
        }
        const problem = manifestProblem(raw, options);
        if (problem) discarded = `stored memory not used: ${problem}`;
        else {
          const { checksum: _checksum, ...m } = raw as Manifest & { checksum: string };
          manifest = { ...m, packageKey: options.packageKey, workspaces: options.workspaces };
          manifest.checkpoints = consistentCheckpoints(manifest);
        }
      }
      const store = new CheckpointStore(dir, options, manifest, release, discarded, text !== null);
      if (discarded) await store.writeManifest();
      await store.removeLeftovers();
      return store;
    } catch (e) {
      await release().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Whether the folder (or its manifest) was deleted since it was opened or last written, e.g. by a
   * user cleaning up while the engine runs. Then it is created again, its lock taken again, and
   * every checkpoint forgotten; the result has the notice for the user and the manifest as it was,
   * so that a caller holding a state it names can save it again (WorkspaceMemory does). Returns
   * null when the folder is as this store left it.
   */
  async recoverIfDeleted(): Promise<{ notice: string; lost: Manifest } | null> {
    const folderThere = await exists(this.dir);
    if (folderThere && (!this.manifestWritten || (await exists(path.join(this.dir, MANIFEST_FILE))))) return null;
    const lost = this.m;
    await this.release().catch(() => undefined);
    try {
      await this.options.beforeCreate?.();
      await fsp.mkdir(this.dir, { recursive: true });
    } catch (e) {
      throw new ModelError(`the memory storage folder ${this.dir} was deleted and cannot be created again: ${(e as Error).message}`);
    }
    this.release = await acquireLock(this.dir, Math.max(2000, this.options.staleLockMs ?? 10_000));
    this.m = emptyManifest(this.options);
    this.manifestWritten = false;
    await this.removeLeftovers();
    const n = lost.checkpoints.length;
    return { notice: `the memory storage folder ${this.dir} ${folderThere ? 'lost its manifest' : 'was deleted'} while the engine ran (${n} checkpoint${n === 1 ? '' : 's'} gone); it was created again`, lost };
  }

  get manifest(): Readonly<Manifest> {
    return this.m;
  }

  get checkpoints(): readonly CheckpointEntry[] {
    return this.m.checkpoints;
  }

  get last(): CheckpointEntry | null {
    return this.m.checkpoints[this.m.checkpoints.length - 1] ?? null;
  }

  get checkpointBytes(): number {
    return this.m.checkpoints.reduce((a, c) => a + c.bytes, 0);
  }

  /**
   * Reads and verifies a checkpoint's state: the file's sha256 against the manifest, then the blob's
   * own checksum, package key and position. Returns null (after dropping the entry) if it fails.
   */
  async load(entry: CheckpointEntry): Promise<Uint8Array | null> {
    let blob: Buffer;
    try {
      blob = await fsp.readFile(path.join(this.dir, entry.file));
      if (blob.length !== entry.bytes || sha256(blob) !== entry.sha256) throw new Error('checksum mismatch');
      const snap = decodeState(blob, this.options.packageKey);
      if (snap.position !== entry.position) throw new Error(`position ${snap.position} where the manifest says ${entry.position}`);
    } catch {
      await this.drop([entry]);
      return null;
    }
    return blob;
  }

  /** The newest checkpoint that loads, with its state (invalid ones are dropped on the way). */
  async newestLoadable(accept: (c: CheckpointEntry) => boolean = () => true): Promise<{ entry: CheckpointEntry; blob: Uint8Array } | null> {
    for (;;) {
      const candidates = this.m.checkpoints.filter(accept);
      const entry = candidates[candidates.length - 1];
      if (!entry) return null;
      const blob = await this.load(entry);
      if (blob) return { entry, blob };
    }
  }

  /**
   * Forgets everything after `keep` (a checkpoint, or null for the start of the stream): the
   * checkpoints after it and the files it does not depend on. Called before re-reading the tail.
   */
  async truncate(keep: CheckpointEntry | null): Promise<void> {
    const position = keep?.position ?? 0;
    const dropped = this.m.checkpoints.filter((c) => c.position > position);
    this.m.checkpoints = this.m.checkpoints.filter((c) => c.position <= position);
    this.m.files = keep ? this.m.files.slice(0, keep.files + (keep.offset > 0 ? 1 : 0)) : [];
    this.m.complete = false;
    await this.writeManifest();
    await this.removeFiles(dropped);
  }

  /**
   * Saves a state taken after `files` whole files of `chain` and `offset` tokens into the next, then
   * prunes: consecutive checkpoints stay at least minSpacing tokens apart (the last excepted), and the
   * total stays under the cap by thinning the oldest part of the stream first.
   */
  async save(blob: Uint8Array, at: { position: number; files: number; offset: number }, chain: readonly ChainFile[], complete: boolean): Promise<CheckpointEntry> {
    try {
      return await this.saveOnce(blob, at, chain, complete);
    } catch (e) {
      // The folder vanished between the check and the write (deleted mid-write): once more, anew.
      if ((e as Error).cause && ((e as Error).cause as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(path.join(this.dir, MANIFEST_FILE)))) {
        return this.saveOnce(blob, at, chain, complete);
      }
      throw e;
    }
  }

  private async saveOnce(blob: Uint8Array, at: { position: number; files: number; offset: number }, chain: readonly ChainFile[], complete: boolean): Promise<CheckpointEntry> {
    const prefixes = chainPrefixes(this.options.streamKey, chain.slice(0, at.files + (at.offset > 0 ? 1 : 0)));
    const entry: CheckpointEntry = {
      file: `state-${String(at.position).padStart(12, '0')}.bin`,
      position: at.position,
      files: at.files,
      offset: at.offset,
      chain: chainHash(prefixes, chain, at.files, at.offset),
      sha256: sha256(blob),
      bytes: blob.byteLength,
      savedAt: new Date().toISOString(),
    };
    // A folder deleted under a running update is created again: the state in hand is still valid
    // for its chain, so the update goes on, with only this checkpoint kept.
    const recovered = await this.recoverIfDeleted();
    if (recovered) this.notices.push(`${recovered.notice}, and this update goes on from the state it holds`);
    const before = this.m;
    const statePath = path.join(this.dir, entry.file);
    const hadFile = this.m.checkpoints.some((c) => c.file === entry.file);
    try {
      await writeAtomic(statePath, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength));
    } catch (e) {
      throw writeFailure(this.dir, `the checkpoint at token ${at.position}`, e);
    }
    this.m = { ...before, files: [...before.files], checkpoints: [...before.checkpoints] };
    const kept = this.m.checkpoints.filter((c) => c.position < entry.position);
    const replaced = this.m.checkpoints.filter((c) => c.position >= entry.position && c.file !== entry.file);
    const list = [...kept, entry];
    const pruned = prune(list, this.options.minSpacing, this.options.capBytes);
    this.m.checkpoints = list.filter((c) => !pruned.includes(c));
    this.m.files = chain.map((f) => ({ ...f }));
    this.m.complete = complete;
    if (complete) this.m.lastUpdate = entry.savedAt;
    try {
      await this.writeManifest();
    } catch (e) {
      // The old manifest is still the one on disk, naming only complete states: keep to it.
      this.m = before;
      if (!hadFile) await fsp.rm(statePath, { force: true }).catch(() => undefined);
      throw e;
    }
    const cappedOut = pruned.length - prune(list, this.options.minSpacing, Infinity).length;
    if (this.checkpointBytes > this.options.capBytes) {
      this.notices.push(`one checkpoint (${formatBytes(entry.bytes)}) is larger than the memory's storage cap of ${formatBytes(this.options.capBytes)} (titan.memory.storageCapMB, --storage-cap): only the newest checkpoint is kept, so a change re-reads more of the workspace`);
    } else if (cappedOut > 0) {
      this.notices.push(`the checkpoints reached the memory's storage cap of ${formatBytes(this.options.capBytes)}: ${cappedOut} older checkpoint(s) removed to stay under it`);
    }
    await this.removeFiles([...pruned, ...replaced]);
    return entry;
  }

  /**
   * Records a finished update whose last checkpoint already is the end of the stream. Nothing is
   * written when the manifest says so already: an update that found no change leaves the folder as
   * it was (a file watcher on a workspace holding the storage folder must not see a write).
   */
  async markComplete(chain: readonly ChainFile[]): Promise<void> {
    const same = this.m.complete && this.m.files.length === chain.length && sharedPrefix(this.m.files, chain) === chain.length;
    if (same) return;
    this.m.files = chain.map((f) => ({ ...f }));
    this.m.complete = true;
    this.m.lastUpdate = new Date().toISOString();
    try {
      await this.writeManifest();
    } catch (e) {
      // The folder was deleted: nothing to mark; the caller's recovery saves the state it holds.
      if (await exists(this.dir)) throw e;
    }
  }

  async close(): Promise<void> {
    await this.release().catch(() => undefined);
  }

  private async drop(entries: CheckpointEntry[]): Promise<void> {
    const names = new Set(entries.map((e) => e.file));
    this.m.checkpoints = this.m.checkpoints.filter((c) => !names.has(c.file));
    await this.writeManifest();
    await this.removeFiles(entries);
  }

  private async writeManifest(): Promise<void> {
    const body = { ...this.m };
    try {
      await writeAtomic(path.join(this.dir, MANIFEST_FILE), JSON.stringify({ ...body, checksum: manifestChecksum(body) }));
    } catch (e) {
      throw writeFailure(this.dir, 'the memory manifest', e);
    }
    this.manifestWritten = true;
  }

  /** Notices for the user since the last call (storage cap reached, folder re-created). */
  takeNotices(): string[] {
    return this.notices.splice(0);
  }

  private readonly notices: string[] = [];

  private async removeFiles(entries: readonly CheckpointEntry[]): Promise<void> {
    const live = new Set(this.m.checkpoints.map((c) => c.file));
    for (const e of entries) if (!live.has(e.file)) await fsp.rm(path.join(this.dir, e.file), { force: true });
  }

  /** State files no manifest entry names, and temp files of writes that were cut short. */
  private async removeLeftovers(): Promise<void> {
    const live = new Set(this.m.checkpoints.map((c) => c.file));
    for (const name of await fsp.readdir(this.dir)) {
      if (name === MANIFEST_FILE || name === 'retrieval-index.json' || name === LOCK_OWNER || live.has(name)) continue;
      if (OWN_FILE.test(name) || STATE_FILE.test(name)) await fsp.rm(path.join(this.dir, name), { force: true });
    }
  }
}

const LOCK_DIR = '.lock';
const LOCK_OWNER = '.lock-owner';

/**
 * One process at a time per memory folder. proper-lockfile's lock goes stale when its holder stops
 * refreshing it; a holder that was killed on this machine is recognised at once from the owner file
 * (its pid no longer runs), so a restarted engine does not wait for the staleness timeout.
 */
async function acquireLock(dir: string, stale: number): Promise<() => Promise<void>> {
  const lockfilePath = path.join(dir, LOCK_DIR);
  const ownerFile = path.join(dir, LOCK_OWNER);
  const attempt = (retries: number): Promise<() => Promise<void>> =>
    lockfile.lock(dir, {
      lockfilePath,
      realpath: false,
      stale,
      retries: { retries, factor: 1, minTimeout: 500, maxTimeout: 500 },
      // Only a process stalled for `stale` ms loses its lock; the atomic writes keep the folder
      // consistent even then, so that is not worth crashing over.
      onCompromised: () => undefined,
    });
  let release: () => Promise<void>;
  try {
    release = await attempt(0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw new ModelError(`cannot lock the memory storage folder ${dir}: ${(e as Error).message}`);
    if (await ownerIsGone(ownerFile)) await fsp.rm(lockfilePath, { recursive: true, force: true });
    try {
      release = await attempt(Math.ceil(stale / 500) + 4);
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code === 'ELOCKED') throw new ModelError(`the memory in ${dir} is in use by another Titan process; close it or choose another --storage folder`);
      throw new ModelError(`cannot lock the memory storage folder ${dir}: ${(e2 as Error).message}`);
    }
  }
  await fsp.writeFile(ownerFile, JSON.stringify({ pid: process.pid, host: os.hostname() })).catch(() => undefined);
  return async () => {
    await fsp.rm(ownerFile, { force: true }).catch(() => undefined);
    await release();
  };
}

async function ownerIsGone(ownerFile: string): Promise<boolean> {
  try {
    const { pid, host } = JSON.parse(await fsp.readFile(ownerFile, 'utf8')) as { pid?: unknown; host?: unknown };
    if (host !== os.hostname() || typeof pid !== 'number' || pid === process.pid) return false;
    try {
      process.kill(pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  } catch {
    return false;
  }
}

/** Entries whose recorded chain matches the manifest's own file list (all of them, unless edited by hand). */
function consistentCheckpoints(m: Manifest): CheckpointEntry[] {
  const prefixes = chainPrefixes(m.streamKey, m.files);
  return m.checkpoints
    .filter((c) => {
      if (!Number.isSafeInteger(c.position) || !Number.isSafeInteger(c.files) || !Number.isSafeInteger(c.offset) || c.files < 0 || c.offset < 0) return false;
      if (typeof c.file !== 'string' || !STATE_FILE.test(c.file)) return false;
      if (c.files + (c.offset > 0 ? 1 : 0) > m.files.length) return false;
      const start = m.files.slice(0, c.files).reduce((a, f) => a + f.tokens, 0);
      if (start + c.offset !== c.position) return false;
      return chainHash(prefixes, m.files, c.files, c.offset) === c.chain;
    })
    .sort((a, b) => a.position - b.position);
}

/**
 * Which checkpoints to delete after `list` (sorted, newest last) gained its last entry. The one
 * before the new last goes if it sits closer than `minSpacing` to its predecessor (it was the end
 * of an earlier update). Then, while over the cap, the checkpoint whose removal widens the gaps
 * least, weighted towards the start of the stream: recently changed files sit at the end of the
 * stream order and are the likeliest to change again, so the end keeps its checkpoints longest.
 */
export function prune(list: readonly CheckpointEntry[], minSpacing: number, capBytes: number): CheckpointEntry[] {
  const out: CheckpointEntry[] = [];
  let live = [...list];
  if (live.length >= 3) {
    const prev = live[live.length - 2];
    const before = live[live.length - 3];
    if (prev.position - before.position < minSpacing) {
      out.push(prev);
      live = live.filter((c) => c !== prev);
    }
  }
  const bytes = (): number => live.reduce((a, c) => a + c.bytes, 0);
  while (live.length > 1 && bytes() > capBytes) {
    const end = live[live.length - 1].position;
    let best = 0;
    let bestScore = Infinity;
    for (let i = 0; i < live.length - 1; i++) {
      const gap = live[i + 1].position - (i > 0 ? live[i - 1].position : 0);
      const score = gap / Math.max(1, end - live[i].position);
      if (score < bestScore) {
        bestScore = score;
        best = i;
      }
    }
    out.push(live[best]);
    live.splice(best, 1);
  }
  return out;
}
