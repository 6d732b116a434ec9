// Types for scripts/vscode-server.mjs (imported by the TypeScript test harness under test/vscode/).
export interface ServerHandle {
  port: number;
  url: string;
  /** The server's pid, which is also its process group id. */
  pid: number;
  logFile: string;
  dataDir: string;
  stop(): Promise<boolean>;
}

export interface StartOptions {
  dataDir: string;
  port?: number;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  extraArgs?: string[];
  /** Default true: a watchdog in the server's group kills it when this process dies. */
  watchParent?: boolean;
}

export function vscodeTestPaths(root?: string): { base: string; node24: string; serverMain: string };
export function freePort(): Promise<number>;
export function dataDirs(dataDir: string): { user: string; server: string; ext: string; log: string };
export function startServer(options: StartOptions): Promise<ServerHandle>;
export function stopServer(handle: Pick<ServerHandle, 'pid' | 'dataDir'>, graceMs?: number): Promise<boolean>;
export function serverCli(dataDir: string, args: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string; error?: Error };
export function workbenchUrl(
  server: Pick<ServerHandle, 'port' | 'url'>,
  options?: { folder?: string; extensionDevelopmentPath?: string; extensionTestsPath?: string },
): string;
