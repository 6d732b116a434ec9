// The engine's JSON-RPC surface: one handler per request of protocol/engine.ts. Params are
// validated against their schemas before use; every failure goes back as a one-line ResponseError
// (ModelError for the user's files and settings, Cancelled, InvalidParams, NotReady); cancellation
// tokens become AbortSignals that travel down to the model.
import * as path from 'node:path';
import { ErrorCodes, ResponseError, type CancellationToken, type MessageConnection, type ProgressType, type RequestType } from 'vscode-jsonrpc/node';
import * as v from 'valibot';
import {
  AskParamsSchema,
  AskProgress,
  AskRequest,
  ConfigureParamsSchema,
  ConfigureProgress,
  ConfigureRequest,
  EngineErrorCodes,
  ExitNotification,
  FilesChangedNotification,
  FilesChangedParamsSchema,
  InitializeParamsSchema,
  InitializeRequest,
  ListModelsParamsSchema,
  ListModelsRequest,
  MemoryProgressType,
  ShutdownRequest,
  StatusNotification,
  StatusRequest,
  StopRequest,
  TitanizeParamsSchema,
  TitanizeProgress,
  TitanizeRequest,
  UpdateMemoryParamsSchema,
  UpdateMemoryRequest,
  ValidateSettingsParamsSchema,
  ValidateSettingsRequest,
  parseParams,
  type AskResult,
  type ConfigureParams,
  type EngineStatus,
  type InitializeParams,
} from '../../protocol/engine';
import { ModelError } from '../model/errors';
import { CancelledError } from '../runtime/generate';
import { OPERATOR_MODES } from '../titanize/settings';
import { errorText, log } from './log';
import { ModelCatalog, packageNameFor } from './models';
import { ModelSession } from './session';
import { readForm, validateForm } from './settings-form';
import { runTitanizeJob } from './titanize-job';
import { version as engineVersion } from '../../package.json';

export { OPERATOR_MODES };

class NotReadyError extends Error {
  override readonly name = 'NotReadyError';
}

function isCancel(e: unknown): boolean {
  return e instanceof CancelledError || (e instanceof Error && (e.name === 'AbortError' || e.name === 'CancelledError'));
}

export function toResponseError(e: unknown): ResponseError<unknown> {
  if (e instanceof ResponseError) return e;
  if (isCancel(e)) return new ResponseError(EngineErrorCodes.Cancelled, 'cancelled');
  if (e instanceof ModelError) return new ResponseError(EngineErrorCodes.ModelError, e.message);
  if (e instanceof NotReadyError) return new ResponseError(EngineErrorCodes.NotReady, e.message);
  log.error(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return new ResponseError(ErrorCodes.InternalError, errorText(e));
}

/** The operations in flight, each with the AbortController that `stop` and cancellation use. */
class Operations {
  private next = 1;
  private readonly running = new Map<number, { kind: string; ctrl: AbortController }>();

  constructor(private readonly onChange: () => void) {}

  async run<R>(kind: string, token: CancellationToken | undefined, fn: (signal: AbortSignal) => Promise<R>): Promise<R> {
    const id = this.next++;
    const ctrl = new AbortController();
    const sub = token?.onCancellationRequested(() => ctrl.abort(new CancelledError()));
    if (token?.isCancellationRequested) ctrl.abort(new CancelledError());
    this.running.set(id, { kind, ctrl });
    this.onChange();
    try {
      return await fn(ctrl.signal);
    } finally {
      sub?.dispose();
      this.running.delete(id);
      this.onChange();
    }
  }

  /** Aborts the operations of one kind (e.g. the answers running on a session about to close). */
  abortKind(kind: string): number {
    let n = 0;
    for (const op of this.running.values()) {
      if (op.kind !== kind) continue;
      op.ctrl.abort(new CancelledError());
      n++;
    }
    return n;
  }

  abortAll(): number {
    for (const op of this.running.values()) op.ctrl.abort(new CancelledError());
    return this.running.size;
  }

  kinds(): string[] {
    return [...new Set([...this.running.values()].map((o) => o.kind))];
  }
}

export class EngineServer {
  private catalog: ModelCatalog | null = null;
  private session: ModelSession | null = null;
  private configuring: Promise<unknown> = Promise.resolve();
  private configureGeneration = 0;
  private modelLoading: string | null = null;
  private modelError: string | null = null;
  private readonly ops = new Operations(() => this.statusChanged());
  private statusTimer: NodeJS.Timeout | null = null;
  private lastStatusSent = 0;

  constructor(private readonly connection: MessageConnection) {}

  listen(): void {
    const c = this.connection;
    this.request(InitializeRequest, InitializeParamsSchema, async (p) => this.initialize(p));
    this.request(ConfigureRequest, ConfigureParamsSchema, async (p, token) => this.configure(p, token));
    c.onRequest(StatusRequest, () => this.status());
    this.request(ListModelsRequest, ListModelsParamsSchema, async (p) => this.requireCatalog().list(p.extraPaths ?? []));
    this.request(ValidateSettingsRequest, ValidateSettingsParamsSchema, async (p) => ({ errors: validateForm(p.settings, p.source) }));
    this.request(TitanizeRequest, TitanizeParamsSchema, async (p, token) => this.titanize(p, token));
    this.request(UpdateMemoryRequest, UpdateMemoryParamsSchema, async (p, token) => this.updateMemory(p, token));
    this.request(AskRequest, AskParamsSchema, async (p, token) => this.ask(p, token));
    c.onRequest(StopRequest, () => this.stop());
    c.onRequest(ShutdownRequest, async () => {
      this.ops.abortAll();
      await this.session?.close();
      this.session = null;
      return null;
    });
    c.onNotification(ExitNotification, () => process.exit(0));
    c.onNotification(FilesChangedNotification, (raw: unknown) => {
      const p = parseParams(FilesChangedParamsSchema, raw, FilesChangedNotification.method);
      if (!p.ok) return log.warn(`ignored: ${p.message}`);
      const memory = this.session?.memory;
      if (!memory) return;
      log.debug(`files changed: ${p.value.changes.map((c) => `${c.kind} ${c.path}`).join(', ')}`);
      memory.schedule(p.value.changes.map((c) => c.path), { debounceMs: 300 });
    });
    c.listen();
  }

  /** Registers a request whose params are checked against `schema` first. */
  private request<P, R, S extends v.GenericSchema>(
    type: RequestType<P, R, void>,
    schema: S,
    handler: (params: v.InferOutput<S>, token: CancellationToken) => Promise<R>,
  ): void {
    this.connection.onRequest(type.method, async (raw: unknown, token: CancellationToken) => {
      const parsed = parseParams(schema, raw, type.method);
      if (!parsed.ok) throw new ResponseError(EngineErrorCodes.InvalidParams, parsed.message);
      try {
        return await handler(parsed.value, token);
      } catch (e) {
        throw toResponseError(e);
      }
    });
  }

  private requireCatalog(): ModelCatalog {
    if (!this.catalog) throw new NotReadyError('the engine is not initialized (send titan/initialize first)');
    return this.catalog;
  }

  private initialize(p: InitializeParams) {
    this.catalog = new ModelCatalog(path.resolve(p.globalStorageDir), path.resolve(p.demoModelDir));
    log.info(`initialized for ${p.clientName}: storage ${p.globalStorageDir}`);
    return { engineVersion, pid: process.pid, node: process.version };
  }

  status(): EngineStatus {
    const s = this.session;
    return {
      model: s?.model ?? null,
      provider: s?.provider ?? null,
      modelLoading: this.modelLoading,
      modelError: this.modelError,
      memory: s?.memoryStatus() ?? null,
      busy: this.ops.kinds(),
    };
  }

  /**
   * Sends a notification or progress: after the peer has gone, vscode-jsonrpc throws (synchronously)
   * or rejects; neither may escape into a timer or a progress callback.
   */
  private send(fn: () => Promise<void>): void {
    try {
      void fn().catch(() => undefined);
    } catch {
      // connection closed or disposed: nothing to tell anyone
    }
  }

  private progress<T>(type: ProgressType<T>, token: string | number | undefined, value: T): void {
    if (token !== undefined) this.send(() => this.connection.sendProgress(type, token, value as never));
  }

  /** Sends the status now, or within 250 ms when one was just sent (progress moves fast). */
  private statusChanged(): void {
    if (this.statusTimer) return;
    const wait = Math.max(0, 250 - (Date.now() - this.lastStatusSent));
    this.statusTimer = setTimeout(() => {
      this.statusTimer = null;
      this.lastStatusSent = Date.now();
      this.send(() => this.connection.sendNotification(StatusNotification, this.status()));
    }, wait);
  }

  private configure(p: ConfigureParams, token: CancellationToken): Promise<EngineStatus> {
    const catalog = this.requireCatalog();
    const generation = ++this.configureGeneration;
    const run = this.configuring.then(async () => {
      // A newer configuration supersedes this one before it starts.
      if (generation !== this.configureGeneration) return this.status();
      return this.ops.run('configure', token, async (signal) => {
        const progress = (message: string, done?: number, total?: number) => {
          this.modelLoading = message;
          this.statusChanged();
          this.progress(ConfigureProgress, p.progressToken, { message, done, total });
        };
        try {
          const packageDir = p.modelPath ? path.resolve(p.modelPath) : await catalog.ensureDemoPackage({ signal, onProgress: progress });
          const key = ModelSession.keyOf(p, packageDir);
          if (this.session?.key === key) return this.status();
          const model = catalog.describe(packageDir);
          const old = this.session;
          this.session = null;
          if (old) {
            // Answers and updates on the old model end as cancelled, not as errors of a closed model.
            this.ops.abortKind('ask');
            this.ops.abortKind('memory');
            old.memory?.cancelAll();
            await old.close();
          }
          progress(`Opening ${model.name}…`);
          this.session = await ModelSession.open(p, packageDir, model, () => this.statusChanged());
          this.modelError = null;
          this.modelLoading = null;
          log.info(`model ${model.name} open on ${this.session.provider?.provider ?? '?'} (${this.session.provider?.reason ?? ''}); workspaces: ${p.workspaces.map((w) => w.path).join(', ') || 'none'}`);
          return this.status();
        } catch (e) {
          this.modelError = isCancel(e) ? null : errorText(e);
          throw e;
        } finally {
          this.modelLoading = null;
          this.statusChanged();
        }
      });
    });
    this.configuring = run.catch(() => undefined);
    return run;
  }

  /** The current session, waiting for a configuration in progress. */
  private async requireSession(): Promise<ModelSession> {
    await this.configuring;
    if (!this.session) throw new NotReadyError(this.modelError ? `no model is open: ${this.modelError}` : 'no model is open yet (the extension configures one at start)');
    return this.session;
  }

  private async titanize(p: v.InferOutput<typeof TitanizeParamsSchema>, token: CancellationToken) {
    const catalog = this.requireCatalog();
    const errors = validateForm(p.settings, p.source);
    if (errors.length) {
      throw new ResponseError(EngineErrorCodes.ModelError, errors.map((e) => e.message).join('; '), { errors });
    }
    const form = readForm(p.settings);
    const out = p.out ? path.resolve(p.out) : path.join(catalog.modelsDir, packageNameFor(p.source, form.input, form.dtype, form.adapter));
    return this.ops.run('titanize', token, async (signal) => {
      log.info(`titanize ${p.source} → ${out}`);
      const r = await runTitanizeJob(
        { source: path.resolve(p.source), out, input: form.input, dtype: form.dtype, adapter: form.adapter },
        {
          signal,
          onProgress: (done, total, message) => {
            this.progress(TitanizeProgress, p.progressToken, { done, total, message });
          },
        },
      );
      log.info(`titanized ${out} in ${r.seconds.toFixed(1)} s`);
      return { model: catalog.describe(r.packageDir), seconds: r.seconds, weightsBytes: r.weightsBytes };
    });
  }

  private async updateMemory(p: v.InferOutput<typeof UpdateMemoryParamsSchema>, token: CancellationToken) {
    const session = await this.requireSession();
    if (!session.memory) throw new NotReadyError(session.params.workspaces.length === 0 ? 'no folder is open: the workspace memory needs one' : `the workspace memory is unavailable: ${session.memoryError}`);
    return this.ops.run('memory', token, async (signal) => {
      if (p.rebuild) await session.rebuildMemory();
      const memory = session.memory;
      if (!memory) throw new NotReadyError(`the workspace memory is unavailable: ${session.memoryError}`);
      const gen = memory.schedule(p.changedPaths);
      return memory.waitFor(gen, {
        signal,
        onProgress: (value) => {
          this.progress(MemoryProgressType, p.progressToken, value);
        },
      });
    });
  }

  private async ask(p: v.InferOutput<typeof AskParamsSchema>, token: CancellationToken): Promise<AskResult> {
    const session = await this.requireSession();
    return this.ops.run('ask', token, async (signal) => {
      let streamed = '';
      const t0 = performance.now();
      try {
        return await session.ask(p, signal, (text) => {
          streamed += text;
          this.progress(AskProgress, p.progressToken, { text });
        });
      } catch (e) {
        // A stopped answer keeps what was said so far.
        if (signal.aborted && isCancel(e)) {
          return { answer: streamed, sources: [], stopReason: 'cancelled', stats: { promptTokens: 0, answerTokens: 0, seconds: (performance.now() - t0) / 1000, tokensPerSecond: 0 } };
        }
        throw e;
      }
    });
  }

  private stop(): { stopped: number } {
    const stopped = this.ops.abortAll() + (this.session?.memory?.cancelAll() ?? 0);
    log.info(`stop: ${stopped} operation(s) cancelled`);
    return { stopped };
  }
}
