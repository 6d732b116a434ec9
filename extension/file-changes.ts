// Which file events reach the engine, and when: events are filtered (VCS folders, files.exclude,
// search.exclude, titan.memory.exclude, per workspace folder) and collected for a quiet period, so a
// burst of saves or a branch switch becomes one incremental memory update. No vscode import.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FileChange } from '../protocol/engine';
import { compileExclude, excludeEntries, type ExcludeGlobs, type ExcludeMatcher } from '../engine/memory/excludeGlobs';

export interface WatchedFolder {
  path: string;
  exclude: ExcludeGlobs;
}

const VCS_DIRS = new Set(['.git', '.hg', '.svn']);

export class ChangeFilter {
  private readonly folders: { root: string; match: ExcludeMatcher }[];

  constructor(folders: readonly WatchedFolder[], extraExclude: readonly string[], nocase = process.platform !== 'linux') {
    this.folders = folders.map((f) => ({
      root: path.resolve(f.path),
      match: compileExclude([...excludeEntries(f.exclude), ...excludeEntries(extraExclude)], nocase),
    }));
  }

  /** True when a change to `file` (absolute) can matter to the memory. */
  accepts(file: string): boolean {
    const abs = path.resolve(file);
    const folder = this.folders
      .filter((f) => abs === f.root || abs.startsWith(f.root + path.sep))
      .sort((a, b) => b.root.length - a.root.length)[0];
    if (!folder) return false;
    const rel = path.relative(folder.root, abs).split(path.sep).join('/');
    if (rel === '') return false;
    const segments = rel.split('/');
    if (segments.some((s) => VCS_DIRS.has(s))) return false;
    // A glob may name any ancestor directory ("**/node_modules"): check each prefix as a directory.
    for (let i = 1; i < segments.length; i++) {
      if (folder.match(segments.slice(0, i).join('/'), true, () => new Set())) return false;
    }
    return !folder.match(rel, false, () => siblingsOf(abs));
  }
}

function siblingsOf(abs: string): ReadonlySet<string> {
  try {
    return new Set(fs.readdirSync(path.dirname(abs)));
  } catch {
    return new Set();
  }
}

/**
 * Collects changes and flushes them after `quietMs` without new events (at most `maxWaitMs` after
 * the first). A later event for the same path wins, except that created-then-changed stays created.
 */
export class ChangeBatcher {
  private pending = new Map<string, FileChange['kind']>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private firstAt = 0;

  constructor(
    private readonly flush: (changes: FileChange[]) => void,
    private readonly quietMs = 1000,
    private readonly maxWaitMs = 5000,
  ) {}

  add(file: string, kind: FileChange['kind']): void {
    const before = this.pending.get(file);
    this.pending.set(file, before === 'created' && kind === 'changed' ? 'created' : kind);
    const now = Date.now();
    if (!this.timer) this.firstAt = now;
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.quietMs, this.firstAt + this.maxWaitMs - now));
    this.timer = setTimeout(() => this.fire(), wait);
  }

  /** Flushes now (pending changes, if any). */
  fire(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending.size === 0) return;
    const changes = [...this.pending].map(([p, kind]) => ({ path: p, kind }));
    this.pending.clear();
    this.flush(changes);
  }

  get size(): number {
    return this.pending.size;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
  }
}
