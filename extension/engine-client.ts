// The one object that owns the engine process: spawn (process.execPath with ELECTRON_RUN_AS_NODE=1,
// which is Node in desktop VS Code and in the server build), JSON-RPC over its stdio, logs from its
// stderr, crash detection with restart and backoff, and a graceful stop.
//
// Two scopes of disposables: the client's (lives as long as the extension) and one process's (the
// connection and its listeners, disposed when that process exits).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import {
  createMessageConnection,
  ErrorCodes,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
  type CancellationToken,
  type MessageConnection,
  type NotificationType,
  type ProgressType,
  type RequestType,
  type RequestType0,
} from 'vscode-jsonrpc/node';
import {
  EngineErrorCodes,
  ExitNotification,
  InitializeRequest,
  ShutdownRequest,
  StatusNotification,
  type EngineStatus,
  type InitializeParams,
  type InitializeResult,
} from '../protocol/engine';

export type EngineState = 'stopped' | 'starting' | 'running' | 'restarting' | 'failed';

/** The engine process died while a request was in flight. */
export class EngineCrashedError extends Error {
  override readonly name = 'EngineCrashedError';
}

/** The engine is not running and will not be restarted without the user (too many crashes, or stopped). */
export class EngineNotRunningError extends Error {
  override readonly name = 'EngineNotRunningError';
}

/** A request the engine refused, with its code (EngineErrorCodes) and data. */
export class EngineRequestError extends Error {
  override readonly name = 'EngineRequestError';
  constructor(
    message: string,
    readonly code: number,
    readonly data: unknown,
  ) {
    super(message);
  }
  get cancelled(): boolean {
    return this.code === EngineErrorCodes.Cancelled;
  }
}

interface EngineProcess {
  child: ChildProcess;
  connection: MessageConnection;
  /** Settles (never rejects) when the process exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  disposables: vscode.Disposable[];
}

/** Delays before restart N (ms); the last repeats. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
/** More crashes than this within CRASH_WINDOW_MS and the client gives up until the user restarts it. */
const MAX_CRASHES = 5;
const CRASH_WINDOW_MS = 3 * 60 * 1000;

export interface EngineClientOptions {
  serverPath: string;
  log: vscode.LogOutputChannel;
  initializeParams: () => InitializeParams;
  /**
   * Called once a new process is initialized, before requests waiting for it go out: send the
   * configuration here (synchronously, so it is the first request the engine sees).
   */
  onStarted: (client: EngineClient) => void;
}

export class EngineClient implements vscode.Disposable {
  private proc: EngineProcess | null = null;
  private starting: Promise<EngineProcess> | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private waitingForRestart: { resolve: (p: EngineProcess) => void; reject: (e: Error) => void }[] = [];
  private crashes: number[] = [];
  private stopping = false;
  private disposed = false;
  private _state: EngineState = 'stopped';
  private nextToken = 1;
  /** Restarts after crashes since activation. */
  restarts = 0;
  lastStatus: EngineStatus | null = null;
  lastExit: string | null = null;
  info: InitializeResult | null = null;

  private readonly stateEmitter = new vscode.EventEmitter<EngineState>();
  readonly onDidChangeState = this.stateEmitter.event;
  private readonly statusEmitter = new vscode.EventEmitter<EngineStatus>();
  readonly onDidChangeStatus = this.statusEmitter.event;

  constructor(private readonly options: EngineClientOptions) {}

  get state(): EngineState {
    return this._state;
  }

  get pid(): number | null {
    return this.proc?.child.pid ?? null;
  }

  private setState(s: EngineState): void {
    if (this._state === s) return;
    this._state = s;
    this.options.log.info(`engine: ${s}`);
    this.stateEmitter.fire(s);
  }

  /** The running process, starting it if needed; waits through a restart in progress. */
  async ensureRunning(): Promise<EngineProcess> {
    if (this.disposed) throw new EngineNotRunningError('the extension is shutting down');
    if (this.proc && this._state === 'running') return this.proc;
    if (this.starting) return this.starting;
    if (this._state === 'restarting') return new Promise((resolve, reject) => this.waitingForRestart.push({ resolve, reject }));
    if (this._state === 'failed') throw new EngineNotRunningError(`the Titan engine is not running (${this.lastExit ?? 'it failed'}); run "Titan: Restart Engine"`);
    return this.start();
  }

  start(): Promise<EngineProcess> {
    if (this.starting) return this.starting;
    this.stopping = false;
    this.setState('starting');
    const p = this.spawnProcess();
    this.starting = p;
    p.then(
      (proc) => {
        this.starting = null;
        for (const w of this.waitingForRestart.splice(0)) w.resolve(proc);
      },
      (e: Error) => {
        this.starting = null;
        // With another attempt scheduled, those waiting keep waiting for it.
        if (this._state !== 'restarting') for (const w of this.waitingForRestart.splice(0)) w.reject(e);
      },
    );
    return p;
  }

  private async spawnProcess(): Promise<EngineProcess> {
    const { serverPath, log } = this.options;
    if (!fs.existsSync(serverPath)) {
      this.setState('failed');
      this.lastExit = `${serverPath} is missing (run npm run build)`;
      throw new EngineNotRunningError(`the Titan engine is missing: ${serverPath}`);
    }
    const env: NodeJS.ProcessEnv = { ...process.env, ELECTRON_RUN_AS_NODE: '1' };
    // The engine needs none of the host's Node flags (a debugger port would clash).
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [serverPath], { env, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (e) => {
        log.error(`engine: could not start ${process.execPath}: ${e.message}`);
        resolve({ code: -1, signal: null });
      });
    });
    const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!), {
      error: (m) => log.error(`rpc: ${m}`),
      warn: (m) => log.warn(`rpc: ${m}`),
      info: (m) => log.info(`rpc: ${m}`),
      log: (m) => log.trace(`rpc: ${m}`),
    });
    const proc: EngineProcess = { child, connection, exited, disposables: [] };
    this.pipeLogs(child);
    proc.disposables.push(
      connection.onNotification(StatusNotification, (s) => {
        this.lastStatus = s;
        this.statusEmitter.fire(s);
      }),
    );
    child.stdin!.on('error', () => undefined);
    connection.listen();
    void exited.then((info) => this.onExit(proc, info));
    log.info(`engine: started pid ${child.pid} (${process.execPath} ${serverPath})`);
    try {
      this.info = await Promise.race([
        connection.sendRequest(InitializeRequest, this.options.initializeParams()),
        exited.then((i) => Promise.reject(new EngineCrashedError(`the engine exited during start (${describeExit(i)})`))),
      ]);
    } catch (e) {
      log.error(`engine: initialize failed: ${(e as Error).message}`);
      child.kill('SIGKILL');
      // A process that cannot start counts as a crash: retried with backoff, then given up on.
      this.crashed(`it failed to start: ${(e as Error).message}`);
      throw e;
    }
    this.proc = proc;
    this.setState('running');
    this.options.onStarted(this);
    return proc;
  }

  private pipeLogs(child: ChildProcess): void {
    const { log } = this.options;
    let buffered = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const m = /^\[(trace|debug|info|warn|error)\] ([\s\S]*)$/.exec(line);
        const text = m ? m[2] : line;
        switch (m?.[1]) {
          case 'trace': log.trace(text); break;
          case 'debug': log.debug(text); break;
          case 'warn': log.warn(text); break;
          case 'error': log.error(text); break;
          default: log.info(text);
        }
      }
    });
  }

  private onExit(proc: EngineProcess, info: { code: number | null; signal: NodeJS.Signals | null }): void {
    proc.disposables.forEach((d) => d.dispose());
    proc.connection.dispose();
    this.lastExit = describeExit(info);
    if (this.proc !== proc) return;
    this.proc = null;
    this.lastStatus = null;
    if (this.stopping || this.disposed) {
      this.options.log.info(`engine: exited (${this.lastExit})`);
      this.setState('stopped');
      return;
    }
    this.options.log.error(`engine: exited unexpectedly (${this.lastExit})`);
    this.crashed(this.lastExit);
  }

  /** Counts a crash and restarts after a backoff delay, or gives up after too many. */
  private crashed(reason: string): void {
    if (this.stopping || this.disposed) {
      this.setState('stopped');
      return;
    }
    this.lastExit = reason;
    const now = Date.now();
    this.crashes = [...this.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
    if (this.crashes.length > MAX_CRASHES) {
      this.setState('failed');
      for (const w of this.waitingForRestart.splice(0)) w.reject(new EngineNotRunningError(`the Titan engine crashed ${this.crashes.length} times in a few minutes; it stays stopped`));
      void vscode.window.showErrorMessage(`Titan: the engine crashed ${this.crashes.length} times in a few minutes (last: ${this.lastExit}). It stays stopped until you restart it.`, 'Restart Engine', 'Show Logs').then((pick) => {
        if (pick === 'Restart Engine') void vscode.commands.executeCommand('titan.restartEngine');
        if (pick === 'Show Logs') this.options.log.show();
      });
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.crashes.length - 1, BACKOFF_MS.length - 1)];
    this.restarts++;
    this.setState('restarting');
    this.options.log.info(`engine: restarting in ${delay} ms (restart ${this.restarts})`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.disposed || this._state !== 'restarting') return;
      this.start().catch((e: Error) => this.options.log.error(`engine: restart failed: ${e.message}`));
    }, delay);
  }

  /** Sends a request to the running engine; a crash while it is in flight rejects with EngineCrashedError. */
  async request<P, R>(type: RequestType<P, R, void>, params: P, token?: CancellationToken): Promise<R>;
  async request<R>(type: RequestType0<R, void>, token?: CancellationToken): Promise<R>;
  async request(type: RequestType<unknown, unknown, void> | RequestType0<unknown, void>, ...args: unknown[]): Promise<unknown> {
    const proc = await this.ensureRunning();
    const crashed = proc.exited.then((i) => Promise.reject(new EngineCrashedError(`the Titan engine stopped unexpectedly (${describeExit(i)})`)));
    try {
      return await Promise.race([(proc.connection.sendRequest as (t: unknown, ...a: unknown[]) => Promise<unknown>)(type, ...args), crashed]);
    } catch (e) {
      throw this.translate(e);
    }
  }

  notify<P>(type: NotificationType<P>, params: P): void {
    const proc = this.proc;
    if (!proc || this._state !== 'running') return;
    void proc.connection.sendNotification(type.method, params).catch(() => undefined);
  }

  /** A fresh progress token with its handler registered on the running connection. */
  async progress<T>(type: ProgressType<T>, handler: (value: T) => void): Promise<{ token: string; dispose: () => void }> {
    const proc = await this.ensureRunning();
    const token = `p${this.nextToken++}`;
    const d = proc.connection.onProgress(type, token, handler);
    return { token, dispose: () => d.dispose() };
  }

  private translate(e: unknown): Error {
    if (e instanceof EngineCrashedError || e instanceof EngineNotRunningError) return e;
    // The connection's own rejections when the process died under a request: a crash, not a refusal.
    if (e instanceof ResponseError && (e.code === ErrorCodes.PendingResponseRejected || e.code === ErrorCodes.ConnectionInactive)) {
      return new EngineCrashedError(`the Titan engine stopped unexpectedly (${this.lastExit ?? 'connection closed'})`);
    }
    if (e instanceof ResponseError) return new EngineRequestError(e.message, e.code, e.data);
    if (this.proc === null && this._state !== 'running') return new EngineCrashedError(`the Titan engine stopped unexpectedly (${this.lastExit ?? 'no process'})`);
    return e instanceof Error ? e : new Error(String(e));
  }

  /** Graceful stop: shutdown + exit, then SIGTERM, then SIGKILL. */
  async stop(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.stopping = true;
    if (this.starting) await this.starting.catch(() => undefined);
    const proc = this.proc;
    if (!proc) {
      this.setState('stopped');
      return;
    }
    const exitedWithin = (ms: number) => Promise.race([proc.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
    try {
      await Promise.race([proc.connection.sendRequest(ShutdownRequest), new Promise((r) => setTimeout(r, 2000))]);
      void proc.connection.sendNotification(ExitNotification, null).catch(() => undefined);
    } catch {
      // already gone
    }
    if (!(await exitedWithin(2000))) {
      proc.child.kill('SIGTERM');
      if (!(await exitedWithin(2000))) proc.child.kill('SIGKILL');
    }
    await proc.exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    this.crashes = [];
    await this.start();
  }

  /** Test hook (titan.debug.killEngine): SIGKILL the process, as a crash would. */
  kill(): number | null {
    const pid = this.pid;
    this.proc?.child.kill('SIGKILL');
    return pid;
  }

  dispose(): void {
    this.disposed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const proc = this.proc;
    if (proc) {
      void this.stop();
    }
    this.stateEmitter.dispose();
    this.statusEmitter.dispose();
  }
}

export function describeExit(i: { code: number | null; signal: NodeJS.Signals | null }): string {
  if (i.signal) return `killed by ${i.signal}`;
  return `exit code ${i.code}`;
}
