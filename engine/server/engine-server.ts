// The engine's JSON-RPC surface: one handler per request of protocol/engine.ts. Params are
// validated against their schemas before use; every failure goes back as a one-line ResponseError
// (ModelError for the user's files and settings, Cancelled, InvalidParams, NotReady); cancellation
// tokens become AbortSignals that travel down to the model.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, ResponseError, type CancellationToken, type MessageConnection, type ProgressType, type RequestType } from 'vscode-jsonrpc/node';
import * as v from 'valibot';
import {
  AlignParamsSchema,
  AlignProgress,
  AlignRequest,
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
  ValidateAlignSettingsParamsSchema,
  ValidateAlignSettingsRequest,
  ValidateSettingsParamsSchema,
  ValidateSettingsRequest,
  parseParams,
  type AlignProgressValue,
  type AlignResult,
  type AskResult,
  type ConfigureParams,
  type EngineStatus,
  type InitializeParams,
  type WorkspaceFolderParam,
} from '../../protocol/engine';
import { ModelError } from '../model/errors';
import { CancelledError } from '../runtime/generate';
import { OPERATOR_MODES } from '../titanize/settings';
import { errorText, log } from './log';
import { ModelCatalog, packageNameFor } from './models';
import { ModelSession } from './session';
import { adapterFormValues, readForm, validateForm } from './settings-form';
import { runTitanizeJob } from './titanize-job';
import { readAlignForm, validateAlignForm } from './align-form';
import { runAlignJob } from '../train/align-job';
import type { AlignEvent } from '../train/align';
import { hasCheckpoint } from '../train/checkpoint';
import type { DatasetSummary } from '../train/data';
import { DEFAULT_LORA_TARGETS } from '../train/lora';
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
    this.request(ValidateSettingsRequest, ValidateSettingsParamsSchema, async (p) => ({ errors: validateForm(p.settings, p.source), adapterSettings: adapterFormValues(p.settings) }));
    this.request(TitanizeRequest, TitanizeParamsSchema, async (p, token) => this.titanize(p, token));
    this.request(ValidateAlignSettingsRequest, ValidateAlignSettingsParamsSchema, async (p) => ({
      errors: validateAlignForm(p.settings, p.packageDir),
      resumable: !!p.packageDir && !!p.workspaces?.length && hasCheckpoint(this.requireCatalog().alignmentRunDir(p.packageDir, p.workspaces)),
    }));
    this.request(AlignRequest, AlignParamsSchema, async (p, token) => this.align(p, token));
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
    const out = p.out ? path.resolve(p.out) : path.join(catalog.modelsDir, packageNameFor(p.source, form.input, form.quantization ? 'int4' : form.dtype, form.adapter));
    return this.ops.run('titanize', token, async (signal) => {
      log.info(`titanize ${p.source} → ${out}`);
      const r = await runTitanizeJob(
        { source: path.resolve(p.source), out, input: form.input, dtype: form.dtype, quantization: form.quantization, adapter: form.adapter },
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

  /**
   * Aligns a package on the workspace folders' code in a worker thread (engine/train/align-job.ts), one
   * progress report per step. A run has one folder per (package, folders): cancelling keeps its
   * checkpoint there and `resume` continues it; a finished run's merged package becomes a model.
   */
  private async align(p: v.InferOutput<typeof AlignParamsSchema>, token: CancellationToken): Promise<AlignResult> {
    const catalog = this.requireCatalog();
    const errors = validateAlignForm(p.settings, p.packageDir);
    if (errors.length) throw new ResponseError(EngineErrorCodes.ModelError, errors.map((e) => e.message).join('; '), { errors });
    // One run at a time: training takes every core (or the GPU), and two runs could share a folder.
    if (this.ops.kinds().includes('align')) throw new ModelError('an alignment is already running; stop it (Titan: Stop) before starting another');
    const form = readAlignForm(p.settings);
    const packageDir = path.resolve(p.packageDir);
    const folders = p.workspaces.map((w) => path.resolve(w.path));
    const runDir = catalog.alignmentRunDir(packageDir, folders);
    if (p.resume && !hasCheckpoint(runDir)) throw new ModelError(`there is no cancelled alignment of ${path.basename(packageDir)} on ${folders.map((f) => path.basename(f)).join(', ')} to resume; start a new one`);
    const exclude = [...new Set([...(p.exclude ?? []), ...p.workspaces.flatMap((w) => excludeGlobs(w.exclude))])];
    return this.ops.run('align', token, async (signal) => {
      // A new run replaces the cancelled one of the same package and folders (its checkpoint only).
      if (!p.resume) fs.rmSync(runDir, { recursive: true, force: true });
      log.info(`align ${packageDir} on ${folders.join(', ')} → ${runDir}${p.resume ? ' (resuming)' : ''}`);
      let summary: DatasetSummary | null = null;
      const report = await runAlignJob(
        {
          packageDir,
          data: { kind: 'workspace', dir: folders[0], extraDirs: folders.slice(1), exclude },
          out: runDir,
          ...(form.steps !== undefined ? { steps: form.steps } : { minutes: form.minutes }),
          lr: form.lr,
          weightDecay: 0.01,
          clip: 1,
          batch: form.batch,
          sequence: form.sequence,
          lora: { r: 8, alpha: 16, dropout: 0.05, targets: DEFAULT_LORA_TARGETS, rslora: false },
          mag: { schedule: form.magSchedule },
          seed: 0,
          provider: p.provider ?? 'auto',
          threads: p.threads || undefined,
          resume: p.resume === true,
        },
        {
          signal,
          onEvent: (e) => {
            if (e.type === 'data') summary = e.summary;
            const value = alignProgressOf(e, summary);
            if (value) this.progress(AlignProgress, p.progressToken, value);
          },
        },
      );
      let model = null;
      let out = report.out;
      let adapter = report.adapter;
      if (report.mergedPackage) {
        const registered = catalog.registerAlignment(runDir, packageDir, folders);
        model = catalog.describe(registered.packageDir);
        out = registered.runDir;
        adapter = path.join(registered.runDir, path.relative(runDir, report.adapter));
      }
      log.info(`aligned ${packageDir}: ${report.steps.done} steps in ${report.seconds.toFixed(1)} s, validation ${report.validation.before?.loss.toFixed(4) ?? '?'} → ${report.validation.after?.loss.toFixed(4) ?? '?'}${model ? `; model ${model.path}` : ''}`);
      return {
        model,
        out,
        adapter,
        steps: report.steps,
        seconds: report.seconds,
        tokensPerSecond: report.tokensPerSecond,
        validation: { before: report.validation.before?.loss ?? null, after: report.validation.after?.loss ?? null, best: report.validation.best?.loss ?? null },
        notes: report.notes,
      };
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

/** A folder's exclude setting (a glob list, or VS Code's glob → true/{when} map) as globs. */
function excludeGlobs(exclude: WorkspaceFolderParam['exclude']): string[] {
  if (!exclude) return [];
  if (Array.isArray(exclude)) return exclude;
  // `when` clauses (sibling conditions) are left to the memory's discovery; the data reader takes plain globs.
  return Object.entries(exclude).filter(([, on]) => on === true).map(([glob]) => glob);
}

/** null for a non-finite number: JSON has no NaN (an fp16 step that overflowed). */
const finiteOrNull = (x: number): number | null => (Number.isFinite(x) ? x : null);

/** An align event as the protocol's progress value (the dataset summary travels with `start`). */
export function alignProgressOf(e: AlignEvent, summary: DatasetSummary | null): AlignProgressValue | null {
  switch (e.type) {
    case 'stage':
      return { kind: 'stage', message: e.message };
    case 'data':
      return { kind: 'stage', message: `${e.summary.trainSequences} training sequences from ${e.summary.trainItems} files, ${e.summary.validationSequences} held out` };
    case 'start':
      return { kind: 'start', totalSteps: e.totalSteps, minutes: e.minutes, startStep: e.startStep, provider: e.provider, trainSequences: summary?.trainSequences ?? 0, validationSequences: summary?.validationSequences ?? 0, trainTokens: summary?.trainTokens ?? 0 };
    case 'step':
      return { kind: 'step', step: e.step, totalSteps: e.totalSteps, loss: finiteOrNull(e.loss), lr: e.lr, mu: e.mu, gradNorm: finiteOrNull(e.gradNorm), tokensPerSecond: Number.isFinite(e.tokensPerSecond) ? e.tokensPerSecond : 0, elapsed: e.elapsed, eta: Number.isFinite(e.eta) ? e.eta : 0 };
    case 'eval':
      return { kind: 'eval', step: e.step, loss: finiteOrNull(e.loss), perplexity: finiteOrNull(e.perplexity) };
    case 'checkpoint':
      return { kind: 'checkpoint', step: e.step };
  }
}
