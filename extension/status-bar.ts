// The status bar item `titan.status`: model, execution provider and memory state; opens the chat.
import * as vscode from 'vscode';
import type { Ctx } from './context';
import { formatStatusBar } from './status-text';

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  /** The text last shown (also reported by titan.debug.engineInfo). */
  text = '';

  constructor(private readonly ctx: Ctx) {
    this.item = vscode.window.createStatusBarItem('titan.status', vscode.StatusBarAlignment.Left, 10);
    this.item.name = 'Titan';
    this.item.command = 'titan.openChat';
    this.update();
    this.item.show();
  }

  update(): void {
    const view = formatStatusBar(this.ctx.client.state, this.ctx.client.lastStatus, this.ctx.hasFolder);
    this.text = view.text;
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.severity === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : view.severity === 'warning' ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
