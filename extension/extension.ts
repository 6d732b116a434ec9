// Activation only wires things together: one context object, the command table, the background
// memory build. Activation errors are shown (VS Code does not show them).
import * as vscode from 'vscode';
import { registerCommands } from './commands';
import { Ctx } from './context';

let ctx: Ctx | undefined;

export function activate(extension: vscode.ExtensionContext): void {
  try {
    ctx = new Ctx(extension);
    extension.subscriptions.push(ctx, ...registerCommands(ctx));
    ctx.log.info(`Titan ${extension.extension.packageJSON.version as string} activated (${vscode.env.appName} ${vscode.version}, ${vscode.env.uiKind === vscode.UIKind.Web ? 'web' : 'desktop'})`);
    // With a folder open and auto-build on, the engine starts now and reads the workspace in the
    // background; otherwise it starts on first use.
    if (ctx.hasFolder && ctx.config.autoBuild) void ctx.client.ensureRunning().catch((e: Error) => ctx?.log.error(`engine start failed: ${e.message}`));
  } catch (e) {
    void vscode.window.showErrorMessage(`Titan failed to activate: ${(e as Error).message}`);
    throw e;
  }
}

export async function deactivate(): Promise<void> {
  const c = ctx;
  ctx = undefined;
  await c?.client.stop();
}
