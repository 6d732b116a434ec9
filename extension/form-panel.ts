// What the settings forms in editor tabs (Titanize, Align) share: the panel, its HTML, and messages
// checked against the protocol before the form's handler sees them.
import * as vscode from 'vscode';
import { explainRejection } from '../protocol/webview';
import type { Ctx } from './context';
import { renderWebviewHtml, webviewOptions } from './webview-html';

/** A form panel in the active column; it keeps its state while hidden (a long run reports into it). */
export function createFormPanel(ctx: Ctx, viewType: string, tabTitle: string): vscode.WebviewPanel {
  return vscode.window.createWebviewPanel(viewType, tabTitle, vscode.ViewColumn.Active, { ...webviewOptions(ctx.extensionUri), retainContextWhenHidden: true });
}

/**
 * Renders form `kind` into `panel` and hands each message that `parse` accepts to `handle` (others are
 * logged and dropped, as are handler failures); `onDispose` runs when the user closes the panel.
 */
export function connectForm<M extends { type: string }>(
  ctx: Ctx,
  panel: vscode.WebviewPanel,
  form: { kind: 'titanize' | 'align'; title: string; logName: string; parse: (raw: unknown) => M | null; handle: (msg: M) => Promise<void>; onDispose: () => void },
): vscode.Disposable[] {
  panel.webview.html = renderWebviewHtml(panel.webview, ctx.extensionUri, form.kind, form.title);
  return [
    panel.webview.onDidReceiveMessage((raw: unknown) => {
      const msg = form.parse(raw);
      if (!msg) return ctx.log.warn(`${form.logName}: dropped an invalid message (${explainRejection(form.kind, raw)})`);
      void form.handle(msg).catch((e: Error) => ctx.log.error(`${form.logName}: ${msg.type} failed: ${e.message}`));
    }),
    panel.onDidDispose(form.onDispose),
  ];
}

/** One form per subject: reveals the open one for `key`, or creates it (its dispose removes it from `open`). */
export function revealOrCreate<P extends { panel: vscode.WebviewPanel }>(open: Map<string, P>, key: string, create: () => P): P {
  const existing = open.get(key);
  if (existing) {
    existing.panel.reveal();
    return existing;
  }
  const created = create();
  open.set(key, created);
  return created;
}
