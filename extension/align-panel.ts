// The Align panel: a webview for aligning one package on the open workspace's code. Settings are
// validated inline by the engine; Align runs the alignment with progress in the panel (a live loss
// plot) and in a cancellable notification, which outlives the panel; Stop (here, in the notification,
// or Titan: Stop) keeps the checkpoint and Resume continues it; the result is offered as the model.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { EngineErrorCodes, ValidateAlignSettingsRequest, type AlignFieldError, type AlignSettings } from '../protocol/engine';
import { ALIGN_DEFAULTS } from '../protocol/settings';
import { parseAlignToHost, type AlignToHost, type HostToAlign } from '../protocol/webview';
import type { Ctx } from './context';
import { EngineRequestError } from './engine-client';
import { connectForm, createFormPanel, revealOrCreate } from './form-panel';

export class AlignPanel implements vscode.Disposable {
  static readonly viewType = 'titan.align';
  private static readonly open = new Map<string, AlignPanel>();
  private cts: vscode.CancellationTokenSource | null = null;
  private readonly disposables: vscode.Disposable[] = [];
  private disposed = false;

  static show(ctx: Ctx, packagePath: string, label: string): AlignPanel {
    return revealOrCreate(AlignPanel.open, packagePath, () => new AlignPanel(ctx, createFormPanel(ctx, AlignPanel.viewType, `Align: ${label}`), packagePath, label));
  }

  private constructor(
    private readonly ctx: Ctx,
    readonly panel: vscode.WebviewPanel,
    readonly packagePath: string,
    private readonly label: string,
  ) {
    this.disposables.push(
      ...connectForm(ctx, panel, { kind: 'align', title: `Align ${label}`, logName: 'align panel', parse: parseAlignToHost, handle: (msg) => this.handle(msg), onDispose: () => this.dispose() }),
    );
  }

  private post(msg: HostToAlign): void {
    if (!this.disposed) void this.panel.webview.postMessage(msg);
  }

  private async handle(msg: AlignToHost): Promise<void> {
    switch (msg.type) {
      case 'ready': {
        const folders = this.ctx.workspaceFolders();
        this.post({
          type: 'init',
          packagePath: this.packagePath,
          packageLabel: this.label,
          workspaceLabel: folders.length ? folders.map((f) => f.name ?? path.basename(f.path)).join(', ') : 'no folder (open one first)',
          defaults: { ...ALIGN_DEFAULTS },
        });
        return;
      }
      case 'validate': {
        const { errors, resumable } = await this.ctx.client.request(ValidateAlignSettingsRequest, { settings: msg.settings, packageDir: this.packagePath, workspaces: this.ctx.workspaceFolders().map((f) => f.path) });
        if (!this.ctx.hasFolder) errors.push({ field: null, message: 'open a folder first: alignment trains on the workspace’s code' });
        this.post({ type: 'validation', id: msg.id, errors, resumable });
        return;
      }
      case 'start':
        await this.start(msg.id, msg.settings, msg.resume);
        return;
      case 'stop':
        this.cts?.cancel();
        return;
      case 'useModel':
        await this.ctx.selectModelPath(msg.path);
        return;
      case 'openChat':
        await this.ctx.chat.reveal(true);
        return;
    }
  }

  private async start(id: string, settings: AlignSettings, resume: boolean): Promise<void> {
    if (this.cts) return;
    const cts = new vscode.CancellationTokenSource();
    this.cts = cts;
    try {
      const result = await this.ctx.align(this.packagePath, settings, { token: cts.token, resume, onProgress: (value) => this.post({ type: 'progress', value }) });
      this.post({
        type: 'done',
        id,
        model: result.model?.name ?? null,
        path: result.model?.path ?? null,
        seconds: result.seconds,
        steps: result.steps.done,
        before: result.validation.before,
        after: result.validation.after,
        notes: result.notes.slice(0, 10),
      });
    } catch (e) {
      if (e instanceof EngineRequestError && e.cancelled) {
        const resumable = await this.ctx.client
          .request(ValidateAlignSettingsRequest, { settings, packageDir: this.packagePath, workspaces: this.ctx.workspaceFolders().map((f) => f.path) })
          .then((r) => r.resumable, () => false);
        this.post({ type: 'cancelled', id, message: resumable ? 'Stopped; the checkpoint is kept — Resume continues from it.' : 'Stopped.', resumable });
      } else {
        const errors = e instanceof EngineRequestError && e.code === EngineErrorCodes.ModelError ? fieldErrors(e.data) : [];
        this.post({ type: 'failed', id, message: (e as Error).message, errors });
      }
    } finally {
      cts.dispose();
      this.cts = null;
    }
  }

  /** Closing the panel leaves a run going: the notification keeps its progress and its Cancel. */
  dispose(): void {
    this.disposed = true;
    AlignPanel.open.delete(this.packagePath);
    this.disposables.forEach((d) => d.dispose());
    this.panel.dispose();
  }
}

function fieldErrors(data: unknown): AlignFieldError[] {
  const errors = (data as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors) ? (errors as AlignFieldError[]) : [];
}
