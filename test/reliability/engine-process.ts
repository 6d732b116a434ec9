// The engine server bundle as the extension runs it (a child process speaking JSON-RPC on its stdio),
// optionally with fault-injection preloads, for the fault tests that need the long-lived engine.
import { spawn, type ChildProcess } from 'node:child_process';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import * as P from '../../protocol/engine';
import { ensureEngineBundle, SERVER_BUNDLE } from './engine-bundle';

export interface EngineProcess {
  child: ChildProcess;
  rpc: MessageConnection;
  /** Everything the engine logged on stderr so far. */
  stderr(): string;
  /** Status notifications, in order. */
  statuses: P.EngineStatus[];
  /** Streams an answer; resolves with the result and the fragments streamed before it. */
  ask(question: string, maxNewTokens?: number): Promise<{ result: P.AskResult; streamed: string }>;
  close(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startEngine(options: { preload?: string[]; env?: Record<string, string> } = {}): EngineProcess {
  ensureEngineBundle();
  const args = [...(options.preload ?? []).flatMap((p) => ['--require', p]), SERVER_BUNDLE];
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (err += d));
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const rpc = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
  const statuses: P.EngineStatus[] = [];
  rpc.onNotification(P.StatusNotification, (s) => void statuses.push(s));
  rpc.listen();
  let asks = 0;
  return {
    child,
    rpc,
    stderr: () => err,
    statuses,
    async ask(question, maxNewTokens = 16) {
      const progressToken = `ask-${++asks}`;
      let streamed = '';
      const sub = rpc.onProgress(P.AskProgress, progressToken, ({ text }) => void (streamed += text));
      try {
        const result = await rpc.sendRequest(P.AskRequest, { question, maxNewTokens, progressToken });
        return { result, streamed };
      } finally {
        sub.dispose();
      }
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await rpc.sendRequest(P.ShutdownRequest).catch(() => undefined);
        await rpc.sendNotification(P.ExitNotification, null).catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        const end = await exited;
        clearTimeout(timer);
        rpc.dispose();
        return end;
      }
      rpc.dispose();
      return exited;
    },
  };
}

/** initialize + configure for a package and one workspace folder. */
export async function configureEngine(e: EngineProcess, o: { globalStorageDir: string; pkg: string; ws: string; storage: string; provider?: P.ProviderChoice }): Promise<P.EngineStatus> {
  await e.rpc.sendRequest(P.InitializeRequest, { clientName: 'fault-test', globalStorageDir: o.globalStorageDir, demoModelDir: o.globalStorageDir });
  return e.rpc.sendRequest(P.ConfigureRequest, {
    modelPath: o.pkg,
    provider: o.provider ?? 'cpu',
    threads: 1,
    workspaces: [{ path: o.ws }],
    exclude: [],
    memoryStorageDir: o.storage,
    maxFileBytes: 1 << 20,
    storageCapBytes: 1 << 30,
  });
}
