// Helpers for the suites that run inside the extension host (real `vscode` API, no mocks).
import * as vscode from 'vscode';

export const EXTENSION_ID = 'titan-dev.titan';

/** What titan.debug.engineInfo returns (the test-only command of the extension contract). */
export interface EngineInfo {
  pid: number | null;
  restarts: number;
  model: string | null;
  /** The open package's folder. */
  modelPath?: string | null;
  provider: string | null;
  memory: { position: number; files: number; fresh: boolean; updating?: boolean; error?: string | null } | null;
  /** Operations in flight in the engine, e.g. ["ask"]. */
  busy?: string[];
  /** The status bar item's text. */
  statusBar: string;
}

export async function activeExtension(): Promise<vscode.Extension<unknown>> {
  const ext = vscode.extensions.getExtension(EXTENSION_ID);
  if (!ext) throw new Error(`extension ${EXTENSION_ID} is not loaded`);
  await ext.activate();
  return ext;
}

export function engineInfo(): Promise<EngineInfo> {
  return vscode.commands.executeCommand<EngineInfo>('titan.debug.engineInfo') as Promise<EngineInfo>;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Notes for the current test (figures, messages), reported by the node:test side as diagnostics. */
export const currentNotes: string[] = [];
export function note(text: string): void {
  currentNotes.push(text);
}

/**
 * Polls `probe` until it returns a value for which `ok` holds; throws with the last value after `timeoutMs`.
 * Every wait in the suites goes through here, so none can hang past Mocha's own timeout either.
 */
export async function waitFor<T>(what: string, probe: () => Promise<T> | T, ok: (value: T) => boolean, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (ok(last)) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const detail = lastError ? `last error: ${(lastError as Error).message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what} (${detail})`);
    }
    await sleep(everyMs);
  }
}

/** The workspace folder the harness opened (a copy of test/vscode/fixtures/workspace). */
export function workspaceRoot(): vscode.Uri {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) throw new Error('no workspace folder is open');
  return folder.uri;
}
