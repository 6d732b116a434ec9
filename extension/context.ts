// The extension's one context object: configuration, the engine client, the views, the status bar,
// the file watcher and the conversation history, built once by activate and handed to every command.
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  AlignProgress,
  AlignRequest,
  ConfigureProgress,
  ConfigureRequest,
  ListModelsRequest,
  MemoryProgressType,
  StatusRequest,
  TitanizeProgress,
  TitanizeRequest,
  UpdateMemoryRequest,
  type AlignProgressValue,
  type AlignResult,
  type AlignSettings,
  type ConversionSettings,
  type EngineStatus,
  type MemoryStatsInfo,
  type ModelInfo,
  type TitanizeResult,
  type WorkspaceFolderParam,
} from '../protocol/engine';
import type { ChatStatus, ModelChoice } from '../protocol/webview';
import { ChatHistory } from './chat-history';
import { ChatView } from './chat-view';
import { CONFIG_SECTION, mergeExcludes, TitanConfig } from './config';
import { EngineClient, EngineRequestError } from './engine-client';
import { FileWatcher } from './file-watcher';
import { resolveSourcePath } from './source-paths';
import { StatusBar } from './status-bar';
import { compactCount, formatEta, formatMemoryLine } from './status-text';

const RECENT_MODELS_KEY = 'titan.recentModels';
const RECENT_SOURCES_KEY = 'titan.recentSources';

export class Ctx implements vscode.Disposable {
  readonly config = new TitanConfig(
    () => vscode.workspace.getConfiguration(CONFIG_SECTION),
    (key, value) => vscode.workspace.getConfiguration(CONFIG_SECTION).update(key, value, vscode.ConfigurationTarget.Global),
  );
  readonly log: vscode.LogOutputChannel;
  readonly client: EngineClient;
  readonly history: ChatHistory;
  readonly chat: ChatView;
  readonly statusBar: StatusBar;
  readonly watcher: FileWatcher;
  models: ModelInfo[] = [];
  /** Disposed with the extension. */
  readonly subscriptions: vscode.Disposable[] = [];

  constructor(readonly extension: vscode.ExtensionContext) {
    this.log = vscode.window.createOutputChannel('Titan', { log: true });
    this.history = new ChatHistory(extension.workspaceState);
    this.client = new EngineClient({
      serverPath: path.join(extension.extensionPath, 'dist', 'engine', 'server.js'),
      log: this.log,
      initializeParams: () => ({
        clientName: `${vscode.env.appName} ${vscode.version}`,
        globalStorageDir: extension.globalStorageUri.fsPath,
        demoModelDir: path.join(extension.extensionPath, 'media', 'models', 'code-llama-19m'),
      }),
      onStarted: () => this.onEngineStarted(),
    });
    this.chat = new ChatView(this);
    this.statusBar = new StatusBar(this);
    this.watcher = new FileWatcher(this);
    this.subscriptions.push(
      this.log,
      this.client,
      this.chat,
      this.statusBar,
      this.watcher,
      this.client.onDidChangeState(() => this.refreshStatus()),
      this.client.onDidChangeStatus(() => this.refreshStatus()),
      vscode.window.registerWebviewViewProvider(ChatView.viewType, this.chat, { webviewOptions: { retainContextWhenHidden: false } }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (TitanConfig.affectsEngine((s) => e.affectsConfiguration(s))) this.reconfigure();
        if (e.affectsConfiguration('titan.memory.autoBuild') && this.config.autoBuild) this.buildMemoryInBackground();
      }),
      vscode.workspace.onDidChangeWorkspaceFolders(() => this.reconfigure()),
    );
  }

  get extensionUri(): vscode.Uri {
    return this.extension.extensionUri;
  }

  get hasFolder(): boolean {
    return (vscode.workspace.workspaceFolders?.length ?? 0) > 0;
  }

  workspaceFolders(): WorkspaceFolderParam[] {
    return (vscode.workspace.workspaceFolders ?? [])
      .filter((f) => f.uri.scheme === 'file')
      .map((f) => {
        const files = vscode.workspace.getConfiguration('files', f.uri).get<Record<string, unknown>>('exclude');
        const search = vscode.workspace.getConfiguration('search', f.uri).get<Record<string, unknown>>('exclude');
        return { path: f.uri.fsPath, name: f.name, exclude: mergeExcludes(files, search) };
      });
  }

  memoryStorageDir(): string | null {
    return this.extension.storageUri ? path.join(this.extension.storageUri.fsPath, 'memory') : null;
  }

  // ---- engine configuration ---------------------------------------------------------------

  private configured: Promise<EngineStatus | null> = Promise.resolve(null);

  /** Runs when a (re)started engine is initialized: configure it, then build the memory. */
  private onEngineStarted(): void {
    this.configured = this.sendConfigure(true);
    void this.refreshModels();
  }

  /** Settings or folders changed: reconfigure a running engine (a stopped one reads them at start). */
  reconfigure(): void {
    this.watcher.reset();
    if (this.client.state !== 'running') return;
    this.configured = this.sendConfigure(true);
  }

  private sendConfigure(thenBuild: boolean): Promise<EngineStatus | null> {
    const params = this.config.engineParams(this.workspaceFolders(), this.memoryStorageDir());
    const run = (async () => {
      const progress = await this.client.progress(ConfigureProgress, (p) => this.log.info(`engine: ${p.message}${p.total ? ` ${p.done}/${p.total}` : ''}`));
      try {
        const status = await this.client.request(ConfigureRequest, { ...params, progressToken: progress.token });
        this.client.lastStatus = status;
        this.refreshStatus();
        if (thenBuild && this.config.autoBuild) this.buildMemoryInBackground();
        return status;
      } catch (e) {
        const message = (e as Error).message;
        this.log.error(`configure failed: ${message}`);
        if (!(e instanceof EngineRequestError && e.cancelled)) {
          void vscode.window.showErrorMessage(`Titan: could not open the model: ${message}`, 'Select Model…', 'Show Logs').then((pick) => {
            if (pick === 'Select Model…') void vscode.commands.executeCommand('titan.selectModel');
            if (pick === 'Show Logs') this.log.show();
          });
        }
        return null;
      } finally {
        progress.dispose();
        this.refreshStatus();
      }
    })();
    return run;
  }

  /** The engine started and configured (starting it if needed). */
  async ready(): Promise<void> {
    await this.client.ensureRunning();
    await this.configured;
  }

  /** Reads new and changed files into the memory, reporting through the status bar only. */
  buildMemoryInBackground(): void {
    if (!this.hasFolder || this.client.state !== 'running') return;
    this.client.request(UpdateMemoryRequest, {}).then(
      (stats) => this.log.info(`memory: ${describeStats(stats)}`),
      (e: Error) => {
        if (e instanceof EngineRequestError && e.cancelled) return;
        this.log.warn(`memory: background update did not finish: ${e.message}`);
      },
    );
  }

  /** Rebuild (or update) with a cancellable progress notification. */
  async updateMemoryWithProgress(rebuild: boolean): Promise<MemoryStatsInfo | null> {
    await this.ready();
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: rebuild ? 'Titan: rebuilding the workspace memory' : 'Titan: updating the workspace memory', cancellable: true },
      async (report, token) => {
        let lastFraction = 0;
        const progress = await this.client.progress(MemoryProgressType, (p) => {
          const fraction = p.filesTotal > 0 ? p.filesDone / p.filesTotal : 0;
          const parts = [p.filesTotal ? `${p.filesDone}/${p.filesTotal} files` : p.message, `${compactCount(p.tokens)} tokens`];
          if (p.tokensPerSecond > 0) parts.push(`${compactCount(p.tokensPerSecond)} tok/s`);
          if (p.etaSeconds !== null) parts.push(`ETA ${formatEta(p.etaSeconds)}`);
          report.report({ message: parts.join(' · '), increment: Math.max(0, (fraction - lastFraction) * 100) });
          lastFraction = Math.max(lastFraction, fraction);
        });
        try {
          const stats = await this.client.request(UpdateMemoryRequest, { rebuild, progressToken: progress.token }, token);
          this.log.info(`memory: ${describeStats(stats)}`);
          void vscode.window.setStatusBarMessage(`Titan: memory ${describeStats(stats)}`, 5000);
          return stats;
        } catch (e) {
          if (e instanceof EngineRequestError && e.cancelled) return null;
          throw e;
        } finally {
          progress.dispose();
        }
      },
    );
  }

  // ---- models ------------------------------------------------------------------------------

  async refreshModels(): Promise<ModelInfo[]> {
    try {
      const extra = [this.config.modelPath, ...this.extension.globalState.get<string[]>(RECENT_MODELS_KEY, [])].filter((p): p is string => !!p);
      this.models = await this.client.request(ListModelsRequest, { extraPaths: extra });
    } catch (e) {
      this.log.warn(`listing models failed: ${(e as Error).message}`);
    }
    this.refreshStatus();
    return this.models;
  }

  modelChoices(): ModelChoice[] {
    const choices: ModelChoice[] = [{ path: '', label: 'code-llama-19m (bundled demo)', detail: 'delta_rule μ 0.5 · window 512 · chunk 64 · exact' }];
    for (const m of this.models) if (!m.demo) choices.push({ path: m.path, label: m.name, detail: m.summary });
    const configured = this.config.modelPath;
    if (configured && !choices.some((c) => c.path === configured)) choices.push({ path: configured, label: path.basename(configured), detail: configured });
    return choices;
  }

  /** Makes a package the model in use ('' = the bundled demo); only known packages are accepted. */
  async selectModelPath(packagePath: string): Promise<void> {
    if (packagePath !== '' && !this.modelChoices().some((c) => c.path === packagePath) && !this.models.some((m) => m.path === packagePath)) {
      this.log.warn(`select model: ${packagePath} is not a known model package`);
      return;
    }
    if (packagePath) await this.remember(RECENT_MODELS_KEY, packagePath);
    await this.config.setModelPath(packagePath);
  }

  async remember(key: typeof RECENT_MODELS_KEY | typeof RECENT_SOURCES_KEY, value: string): Promise<void> {
    const list = [value, ...this.extension.globalState.get<string[]>(key, []).filter((v) => v !== value)].slice(0, 10);
    await this.extension.globalState.update(key, list);
  }

  recentSources(): string[] {
    return this.extension.globalState.get<string[]>(RECENT_SOURCES_KEY, []);
  }

  rememberSource(source: string): Promise<void> {
    return this.remember(RECENT_SOURCES_KEY, source);
  }

  /** Converts `source` with `settings`, with a cancellable progress notification; selects the result. */
  async titanize(source: string, settings: ConversionSettings, options: { token?: vscode.CancellationToken; onProgress?: (done: number, total: number, message: string) => void; select?: boolean } = {}): Promise<TitanizeResult> {
    await this.client.ensureRunning();
    await this.rememberSource(source);
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Titan: titanizing ${path.basename(source)}`, cancellable: true },
      async (report, token) => {
        const cts = new vscode.CancellationTokenSource();
        const subs = [token.onCancellationRequested(() => cts.cancel()), options.token?.onCancellationRequested(() => cts.cancel())];
        let last = 0;
        const progress = await this.client.progress(TitanizeProgress, (p) => {
          const pct = p.total > 0 ? (100 * p.done) / p.total : 0;
          report.report({ message: p.message, increment: Math.max(0, pct - last) });
          last = Math.max(last, pct);
          options.onProgress?.(p.done, p.total, p.message);
        });
        try {
          return await this.client.request(TitanizeRequest, { source, settings, progressToken: progress.token }, cts.token);
        } finally {
          progress.dispose();
          subs.forEach((s) => s?.dispose());
          cts.dispose();
        }
      },
    );
    this.log.info(`titanized ${source} → ${result.model.path} in ${result.seconds.toFixed(1)} s`);
    await this.remember(RECENT_MODELS_KEY, result.model.path);
    await this.refreshModels();
    if (options.select !== false) {
      await this.config.setModelPath(result.model.path);
      const offers = this.hasFolder ? ['Open Chat', 'Align on This Workspace…'] : ['Open Chat'];
      void vscode.window.showInformationMessage(`Titan: ${result.model.name} is ready and now in use (${result.model.summary}).`, ...offers).then((pick) => {
        if (pick === 'Open Chat') void this.chat.reveal(true);
        if (pick === 'Align on This Workspace…') void vscode.commands.executeCommand('titan.alignModel', result.model.path);
      });
    }
    return result;
  }

  /**
   * Aligns `packagePath` on the workspace folders' code, with a cancellable progress notification (step,
   * loss, tokens/s, ETA); registers the merged package and offers to switch to it.
   */
  async align(packagePath: string, settings: AlignSettings, options: { token?: vscode.CancellationToken; onProgress?: (value: AlignProgressValue) => void; resume?: boolean; select?: boolean } = {}): Promise<AlignResult> {
    const workspaces = this.workspaceFolders();
    if (workspaces.length === 0) throw new Error('open a folder first: alignment trains on the workspace’s code');
    await this.client.ensureRunning();
    const name = path.basename(packagePath);
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Titan: aligning ${name} on ${workspaces.map((w) => w.name ?? path.basename(w.path)).join(', ')}`, cancellable: true },
      async (report, token) => {
        const cts = new vscode.CancellationTokenSource();
        const subs = [token.onCancellationRequested(() => cts.cancel()), options.token?.onCancellationRequested(() => cts.cancel())];
        let shown = 0;
        const progress = await this.client.progress(AlignProgress, (p) => {
          options.onProgress?.(p);
          if (p.kind === 'stage') report.report({ message: p.message });
          else if (p.kind === 'step') {
            const pct = p.totalSteps > 0 ? (100 * p.step) / p.totalSteps : 0;
            const loss = p.loss === null ? 'overflow' : p.loss.toFixed(3);
            report.report({ message: `step ${p.step}/${p.totalSteps} · loss ${loss} · ${compactCount(p.tokensPerSecond)} tok/s · ETA ${formatEta(p.eta) || '–'}`, increment: Math.max(0, pct - shown) });
            shown = Math.max(shown, pct);
          }
        });
        try {
          return await this.client.request(
            AlignRequest,
            { packageDir: packagePath, workspaces, exclude: this.config.memoryExclude, settings, resume: options.resume, provider: this.config.executionProvider, threads: this.config.threads, progressToken: progress.token },
            cts.token,
          );
        } finally {
          progress.dispose();
          subs.forEach((s) => s?.dispose());
          cts.dispose();
        }
      },
    );
    const loss = result.validation.before !== null && result.validation.after !== null ? `validation loss ${result.validation.before.toFixed(3)} → ${result.validation.after.toFixed(3)}` : 'no validation';
    this.log.info(`aligned ${packagePath}: ${result.steps.done} steps in ${result.seconds.toFixed(1)} s, ${loss}; ${result.model ? `model ${result.model.path}` : 'no merged package'}; run ${result.out}`);
    if (!result.model) {
      void vscode.window.showWarningMessage(`Titan: ${name} was aligned (${loss}) but no merged model was written: ${result.notes[0] ?? 'see the log'}. The adapter is in ${result.adapter}.`);
      return result;
    }
    await this.remember(RECENT_MODELS_KEY, result.model.path);
    await this.refreshModels();
    if (options.select) await this.config.setModelPath(result.model.path);
    else {
      void vscode.window.showInformationMessage(`Titan: ${result.model.name} is ready (${loss}). Switch to it?`, 'Use Aligned Model', 'Open Chat').then(async (pick) => {
        if (pick === 'Use Aligned Model') await this.config.setModelPath(result.model!.path);
        if (pick === 'Open Chat') void this.chat.reveal(true);
      });
    }
    return result;
  }

  // ---- status ------------------------------------------------------------------------------

  async engineStatus(): Promise<EngineStatus | null> {
    if (this.client.state !== 'running') return this.client.lastStatus;
    try {
      const s = await this.client.request(StatusRequest);
      this.client.lastStatus = s;
      this.refreshStatus();
      return s;
    } catch {
      return this.client.lastStatus;
    }
  }

  chatStatus(): ChatStatus {
    const s = this.client.lastStatus;
    const state = this.client.state;
    const memoryUpdating = !!s?.memory?.updating;
    return {
      engine: state,
      model: s?.model?.name ?? null,
      modelPath: this.config.modelPath ?? '',
      provider: s?.provider?.provider ?? null,
      memory: engineLine(state, s, this.hasFolder),
      memoryUpdating,
      models: this.modelChoices(),
    };
  }

  refreshStatus(): void {
    this.statusBar.update();
    this.chat.postStatus(this.chatStatus());
  }

  // ---- opening things the chat shows ---------------------------------------------------------

  async openSource(source: string, line?: number): Promise<void> {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => ({ name: f.name, path: f.uri.fsPath }));
    const file = resolveSourcePath(source, folders);
    if (!file) {
      void vscode.window.showWarningMessage(`Titan: ${source} is not a file in this workspace.`);
      return;
    }
    const selection = line ? new vscode.Range(line - 1, 0, line - 1, 0) : undefined;
    await vscode.window.showTextDocument(vscode.Uri.file(file), { selection, preview: true });
  }

  /** Links in answers: web links after confirmation, workspace paths as sources; nothing else. */
  async openLink(href: string): Promise<void> {
    let uri: vscode.Uri | null = null;
    try {
      if (/^https?:\/\//i.test(href)) uri = vscode.Uri.parse(href, true);
    } catch {
      uri = null;
    }
    if (uri) {
      const pick = await vscode.window.showInformationMessage(`Open ${uri.toString(true)} in the browser?`, { modal: true, detail: 'The link comes from a model answer.' }, 'Open');
      if (pick === 'Open') await vscode.env.openExternal(uri);
      return;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(href)) {
      this.log.warn(`chat: refused to open a ${href.split(':')[0]}: link from an answer`);
      return;
    }
    const m = /^(.*?)(?:#L?(\d+))?$/.exec(href);
    await this.openSource(decodeURIComponent(m?.[1] ?? href), m?.[2] ? Number(m[2]) : undefined);
  }

  dispose(): void {
    this.subscriptions.splice(0).reverse().forEach((d) => d.dispose());
  }
}

/** The chat's #memory-status line for an engine state. */
function engineLine(state: EngineClient['state'], s: EngineStatus | null, hasFolder: boolean): string {
  switch (state) {
    case 'running':
      return s?.modelLoading ?? (s?.model ? formatMemoryLine(s.memory, hasFolder) : s?.modelError ? `No model: ${s.modelError}` : 'Opening the model…');
    case 'starting':
      return 'Engine starting…';
    case 'restarting':
      return 'Engine restarting…';
    case 'stopped':
      return 'Engine idle: it starts with the first question';
    case 'failed':
      return 'Engine stopped: run "Titan: Restart Engine"';
  }
}

export function describeStats(s: MemoryStatsInfo): string {
  return `${s.filesRead} files read, ${s.filesSkipped} skipped, ${compactCount(s.tokensIngested)} tokens (${compactCount(s.tokensReread)} re-read) in ${s.seconds.toFixed(1)} s${s.tokensPerSecond ? `, ${compactCount(s.tokensPerSecond)} tok/s` : ''}`;
}
