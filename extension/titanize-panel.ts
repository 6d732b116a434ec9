// The Titanize settings form: a webview panel for one source model. Fields are validated inline by
// the engine as the user types; Convert runs the conversion with progress (in the panel and in a
// cancellable notification) and registers the result as the model in use.
import * as vscode from 'vscode';
import { EngineErrorCodes, ValidateSettingsRequest, type ConversionSettings, type FieldError } from '../protocol/engine';
import { parseTitanizeToHost, type HostToTitanize, type TitanizeToHost } from '../protocol/webview';
import { OPERATOR_MODES } from '../engine/titanize/settings';
import type { Ctx } from './context';
import { EngineRequestError } from './engine-client';
import { connectForm, createFormPanel, revealOrCreate } from './form-panel';

export class TitanizePanel implements vscode.Disposable {
  static readonly viewType = 'titan.titanize';
  private static readonly open = new Map<string, TitanizePanel>();
  private cts: vscode.CancellationTokenSource | null = null;
  /** The package this form wrote: the only one its "Align on This Workspace…" may open. */
  private converted: string | null = null;
  private readonly disposables: vscode.Disposable[] = [];

  static show(ctx: Ctx, source: string, label: string): TitanizePanel {
    return revealOrCreate(TitanizePanel.open, source, () => new TitanizePanel(ctx, createFormPanel(ctx, TitanizePanel.viewType, `Titanize: ${label}`), source, label));
  }

  private constructor(
    private readonly ctx: Ctx,
    readonly panel: vscode.WebviewPanel,
    readonly source: string,
    private readonly label: string,
  ) {
    this.disposables.push(
      ...connectForm(ctx, panel, { kind: 'titanize', title: `Titanize ${label}`, logName: 'titanize form', parse: parseTitanizeToHost, handle: (msg) => this.handle(msg), onDispose: () => this.dispose() }),
    );
  }

  private post(msg: HostToTitanize): void {
    void this.panel.webview.postMessage(msg);
  }

  private async handle(msg: TitanizeToHost): Promise<void> {
    switch (msg.type) {
      case 'ready':
        this.post({ type: 'init', source: this.source, sourceLabel: this.label, defaults: this.ctx.config.conversionDefaults, operators: OPERATOR_MODES });
        return;
      case 'validate': {
        const { errors, adapterSettings } = await this.ctx.client.request(ValidateSettingsRequest, { settings: msg.settings, source: this.source });
        this.post({ type: 'validation', id: msg.id, errors, ...(adapterSettings ? { adapterSettings } : {}) });
        return;
      }
      case 'convert':
        await this.convert(msg.id, msg.settings);
        return;
      case 'cancel':
        this.cts?.cancel();
        return;
      case 'browseAdapter': {
        const picked = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use Adapter', title: 'LoRA adapter folder (adapter_config.json + adapter_model.safetensors)' });
        if (picked?.[0]) this.post({ type: 'adapterPicked', path: picked[0].fsPath });
        return;
      }
      case 'openChat':
        await this.ctx.chat.reveal(true);
        return;
      case 'align':
        if (msg.path !== this.converted) return this.ctx.log.warn(`titanize form: refused to align ${msg.path}, which this form did not write`);
        await vscode.commands.executeCommand('titan.alignModel', msg.path);
        return;
    }
  }

  private async convert(id: string, settings: ConversionSettings): Promise<void> {
    if (this.cts) return;
    const cts = new vscode.CancellationTokenSource();
    this.cts = cts;
    try {
      const result = await this.ctx.titanize(this.source, settings, {
        token: cts.token,
        onProgress: (done, total, message) => this.post({ type: 'progress', done, total, message }),
      });
      this.converted = result.model.path;
      this.post({ type: 'done', id, model: result.model.name, path: result.model.path, seconds: result.seconds });
    } catch (e) {
      if (e instanceof EngineRequestError && e.cancelled) this.post({ type: 'cancelled', id });
      else {
        const errors = e instanceof EngineRequestError && e.code === EngineErrorCodes.ModelError ? fieldErrors(e.data) : [];
        this.post({ type: 'failed', id, message: (e as Error).message, errors });
      }
    } finally {
      cts.dispose();
      this.cts = null;
    }
  }

  dispose(): void {
    this.cts?.cancel();
    TitanizePanel.open.delete(this.source);
    this.disposables.forEach((d) => d.dispose());
    this.panel.dispose();
  }
}

function fieldErrors(data: unknown): FieldError[] {
  const errors = (data as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors) ? (errors as FieldError[]) : [];
}
