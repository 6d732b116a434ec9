// The words the status bar and the chat's memory line show for an engine status (no vscode import:
// unit-tested as plain functions).
import type { EngineStatus, MemoryProgress, MemoryStatusInfo } from '../protocol/engine';
import type { EngineState } from './engine-client';

/** 12345 → "12.3k". */
export function compactCount(n: number): string {
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`.replace('.0k', 'k');
  return `${(n / 1e6).toFixed(1)}M`.replace('.0M', 'M');
}

export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '';
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function formatProgress(p: MemoryProgress): string {
  const parts: string[] = [];
  if (p.phase === 'discover') parts.push('finding files');
  else if (p.phase === 'restore') parts.push('restoring');
  else if (p.filesTotal > 0) parts.push(`${p.filesDone}/${p.filesTotal} files`);
  if (p.tokens > 0) parts.push(`${compactCount(p.tokens)} tok`);
  if (p.tokensPerSecond > 0) parts.push(`${compactCount(p.tokensPerSecond)} tok/s`);
  const eta = formatEta(p.etaSeconds);
  if (eta) parts.push(`ETA ${eta}`);
  return parts.join(' · ') || p.message;
}

/** One line for the chat's #memory-status. */
export function formatMemoryLine(memory: MemoryStatusInfo | null, hasFolder: boolean): string {
  if (!hasFolder) return 'No folder open: answers come from the model alone';
  if (!memory) return 'Memory: not loaded';
  if (memory.updating) return `Memory updating: ${formatProgress(memory.updating)}`;
  if (memory.error && memory.position === 0) return `Memory unavailable: ${memory.error}`;
  const state = memory.fresh ? 'fresh' : 'stale';
  return `Memory: ${compactCount(memory.position)} tokens · ${memory.files} files · ${state}`;
}

export interface StatusBarView {
  text: string;
  tooltip: string;
  /** 'error' and 'warning' map to the status bar's theme colours. */
  severity: 'normal' | 'warning' | 'error';
}

/** "$(database) Titan · code-llama-19m · cpu · 12.3k tok · fresh" and its variants. */
export function formatStatusBar(state: EngineState, status: EngineStatus | null, hasFolder: boolean): StatusBarView {
  if (state === 'failed') return { text: '$(error) Titan · engine stopped', tooltip: 'The Titan engine stopped after repeated crashes. Click to open the chat; run "Titan: Restart Engine" to start it again.', severity: 'error' };
  if (state === 'restarting') return { text: '$(sync~spin) Titan · restarting engine', tooltip: 'The Titan engine stopped unexpectedly and is restarting.', severity: 'warning' };
  if (state === 'starting') return { text: '$(sync~spin) Titan · starting', tooltip: 'Starting the Titan engine', severity: 'normal' };
  if (state === 'stopped' || !status) return { text: '$(database) Titan', tooltip: 'Titan: the engine starts when needed. Click to open the chat.', severity: 'normal' };
  if (status.modelLoading) return { text: `$(sync~spin) Titan · ${status.modelLoading}`, tooltip: status.modelLoading, severity: 'normal' };
  if (!status.model) {
    return { text: '$(warning) Titan · no model', tooltip: status.modelError ? `No model: ${status.modelError}` : 'No model is open', severity: status.modelError ? 'error' : 'warning' };
  }
  const parts = [`Titan · ${status.model.name}`];
  const m = status.memory;
  let icon = '$(database)';
  let severity: StatusBarView['severity'] = 'normal';
  if (status.provider?.fallback) {
    // The GPU failed and the model runs on the CPU: slower, and the user should know why.
    parts.push(`${status.provider.provider} (GPU failed)`);
    icon = '$(warning)';
    severity = 'warning';
  } else if (status.provider) parts.push(status.provider.provider);
  if (!hasFolder || !m) parts.push('no folder');
  else if (m.updating) {
    icon = '$(sync~spin)';
    parts.push(`${compactCount(m.position)} tok`, formatProgress(m.updating));
  } else if (m.error && m.position === 0) {
    icon = '$(warning)';
    severity = 'warning';
    parts.push('memory unavailable');
  } else parts.push(`${compactCount(m.position)} tok`, m.fresh ? 'fresh' : 'stale');
  const tooltip = [
    `Model: ${status.model.name} (${status.model.summary})`,
    status.provider ? `Execution provider: ${status.provider.reason}` : '',
    status.provider?.fallback ? `GPU fallback: ${status.provider.fallback}` : '',
    m ? formatMemoryLine(m, hasFolder) : '',
    m?.lastUpdate ? `Last update: ${new Date(m.lastUpdate).toLocaleString()}` : '',
    m?.error ? `Last memory error: ${m.error}` : '',
    ...(m?.notices ?? []).map((n) => `Notice: ${n}`),
    'Click to open the chat',
  ].filter(Boolean).join('\n');
  return { text: `${icon} ${parts.join(' · ')}`, tooltip, severity };
}
