// The one place the server meets the workspace memory (engine/memory/workspace-memory.ts): opening
// it and translating its progress, stats and answers into the protocol's shapes.
import type { AskResult, MemoryProgress, MemoryStatsInfo, ProviderInfo, WorkspaceFolderParam } from '../../protocol/engine';
import type { ProviderChoice } from '../runtime/session';
import { WorkspaceMemory, type IngestProgress, type MemoryStats } from '../memory/workspace-memory';

export interface MemoryBackendOptions {
  packageDir: string;
  workspaces: WorkspaceFolderParam[];
  storageDir: string;
  exclude: string[];
  provider: ProviderChoice;
  threads: number;
  maxFileBytes: number;
  storageCapBytes: number;
  /** Caps beyond the extension's settings (engine/limits.ts defaults when absent). */
  maxFiles?: number;
  maxStreamTokens?: number;
  /** Told of each notice (a cap reached, the storage folder re-created) as it arises. */
  onNotice?: (message: string) => void;
}

export interface MemoryAskOptions {
  retrieval: boolean;
  memory: boolean;
  maxNewTokens: number;
  temperature: number;
  signal?: AbortSignal;
  onText?: (text: string) => void;
}

export interface MemoryBackend {
  update(options: { signal?: AbortSignal; onProgress?: (p: MemoryProgress) => void; changedPaths?: string[] }): Promise<MemoryStatsInfo>;
  ask(question: string, options: MemoryAskOptions): Promise<AskResult>;
  status(): { position: number; files: number; fresh: boolean; lastUpdate: string | null; provider: ProviderInfo | null; notices: string[] };
  close(): Promise<void>;
}

/**
 * The workspace memory takes one exclude set for all folders: each folder's files.exclude and
 * search.exclude (they are per folder in VS Code, but rarely differ) merged with titan.memory.exclude.
 */
export function mergedExclude(workspaces: readonly WorkspaceFolderParam[], extra: readonly string[]): Record<string, boolean | { when: string }> {
  const out: Record<string, boolean | { when: string }> = {};
  for (const w of workspaces) {
    const ex = w.exclude;
    if (Array.isArray(ex)) for (const g of ex) out[g] = true;
    else if (ex) for (const [g, v] of Object.entries(ex)) if (v) out[g] = v;
  }
  for (const g of extra) out[g] = true;
  return out;
}

export function toProgress(p: IngestProgress): MemoryProgress {
  const phase = p.phase === 'ingest' ? 'read' : p.phase;
  const message =
    p.phase === 'discover' ? `finding files (${p.filesDone} checked)`
    : p.phase === 'restore' ? 'restoring the last checkpoint'
    : p.phase === 'checkpoint' ? 'saving a checkpoint'
    : p.phase === 'done' ? 'done'
    : `reading ${p.currentFile ?? ''}`.trim();
  return {
    phase,
    filesDone: p.filesDone,
    filesTotal: p.filesTotal,
    tokens: p.tokensDone,
    tokensTotal: p.tokensTotal,
    position: p.position ?? null,
    tokensPerSecond: p.tokensPerSecond,
    etaSeconds: p.etaSeconds,
    currentFile: p.currentFile ?? null,
    message,
  };
}

export function toStats(s: MemoryStats, cancelled = false): MemoryStatsInfo {
  const skippedByReason: Record<string, number> = {};
  for (const f of s.filesSkipped) skippedByReason[f.reason] = (skippedByReason[f.reason] ?? 0) + 1;
  return {
    filesRead: s.filesRead,
    filesSkipped: s.filesSkipped.length,
    skippedByReason,
    tokensIngested: s.tokensIngested,
    tokensReread: s.tokensReread,
    stateBytes: s.stateBytes,
    checkpointBytes: s.checkpointBytes,
    seconds: s.seconds,
    tokensPerSecond: s.tokensPerSecond,
    restoredFromCheckpoint: s.restoredFromCheckpoint,
    cancelled,
    ...(s.notices.length ? { notices: s.notices } : {}),
  };
}

export async function openMemoryBackend(options: MemoryBackendOptions): Promise<MemoryBackend> {
  const memory = await WorkspaceMemory.open({
    packageDir: options.packageDir,
    workspaces: options.workspaces.map((w) => w.path),
    storageDir: options.storageDir,
    exclude: mergedExclude(options.workspaces, options.exclude),
    provider: options.provider,
    threads: options.threads || undefined,
    maxFileBytes: Math.round(options.maxFileBytes),
    storageCapBytes: Math.round(options.storageCapBytes),
    maxFiles: options.maxFiles,
    maxStreamTokens: options.maxStreamTokens,
    onNotice: options.onNotice,
  });
  return {
    async update({ signal, onProgress, changedPaths }) {
      const stats = await memory.update({ signal, changedPaths, onProgress: onProgress ? (p) => onProgress(toProgress(p)) : undefined });
      return toStats(stats);
    },
    async ask(question, o) {
      const r = await memory.ask(question, { retrieval: o.retrieval, memory: o.memory, maxNewTokens: o.maxNewTokens, temperature: o.temperature, signal: o.signal, onText: o.onText });
      return {
        answer: r.answer,
        sources: uniqueSources(r.sources).map((s) => ({ path: s.path, ...(s.line ? { line: s.line } : {}), reason: s.reason, ...(s.snippet ? { snippet: s.snippet } : {}) })),
        stopReason: r.stats.stopReason,
        stats: { promptTokens: r.stats.promptTokens, answerTokens: r.stats.answerTokens, seconds: r.stats.seconds, tokensPerSecond: r.stats.tokensPerSecond },
      };
    },
    status() {
      const s = memory.status();
      const { provider: ep, reason, fallback } = s.providerReport;
      const provider: ProviderInfo = { provider: ep, reason, ...(fallback ? { fallback } : {}) };
      return { position: s.position, files: s.files, fresh: s.fresh, lastUpdate: s.lastUpdate, provider, notices: s.notices };
    },
    close: () => memory.close(),
  };
}

/** One source per place (path and line): the memory may cite a line both as retrieved and for an identifier. */
export function uniqueSources<T extends { path: string; line?: number }>(sources: readonly T[]): T[] {
  const seen = new Set<string>();
  return sources.filter((s) => {
    const key = `${s.path}:${s.line ?? ''}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
