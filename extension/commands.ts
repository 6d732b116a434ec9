// Every command, as a table of named factories: (ctx) => handler. Commands that need the engine
// get a "not running" fallback when it has stopped for good, instead of failing obscurely.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { StopRequest, type AlignSettings, type ConversionSettings } from '../protocol/engine';
import { AlignPanel } from './align-panel';
import type { AskOutcome } from './chat-view';
import type { Ctx } from './context';
import { TitanizePanel } from './titanize-panel';

type Handler = (...args: unknown[]) => unknown;

interface CommandSpec {
  /** The handler while the engine can run. */
  enabled: (ctx: Ctx) => Handler;
  /** Needs the engine: when it has stopped for good, `disabled` (default: a "not running" message) runs instead. */
  needsEngine?: boolean;
  disabled?: (ctx: Ctx) => Handler;
}

function notRunning(ctx: Ctx): Handler {
  return async () => {
    const pick = await vscode.window.showErrorMessage(`Titan: the engine is not running (${ctx.client.lastExit ?? 'stopped'}).`, 'Restart Engine', 'Show Logs');
    if (pick === 'Restart Engine') await vscode.commands.executeCommand('titan.restartEngine');
    if (pick === 'Show Logs') ctx.log.show();
    return undefined;
  };
}

const DEMO_SOURCE = (ctx: Ctx) => path.join(ctx.extension.extensionPath, 'media', 'models', 'code-llama-19m');

/** Picks a Hugging Face model folder: the bundled demo, a recent one, or the open dialog. */
async function pickSource(ctx: Ctx): Promise<string | undefined> {
  type Item = vscode.QuickPickItem & { source?: string; browse?: boolean };
  const demo = DEMO_SOURCE(ctx);
  const items: Item[] = [{ label: '$(package) code-llama-19m', description: 'bundled demo model', source: demo }];
  const recent = ctx.recentSources().filter((s) => s !== demo && fs.existsSync(s));
  if (recent.length) items.push({ label: 'Recent', kind: vscode.QuickPickItemKind.Separator }, ...recent.map((s) => ({ label: `$(history) ${path.basename(s)}`, description: s, source: s })));
  items.push({ label: '', kind: vscode.QuickPickItemKind.Separator }, { label: '$(folder-opened) Browse for a Hugging Face model folder…', browse: true });
  const pick = await vscode.window.showQuickPick(items, { title: 'Titanize Model', placeHolder: 'The model to convert (a folder with config.json, *.safetensors and tokenizer.json)' });
  if (!pick) return undefined;
  if (pick.browse) {
    const uri = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Titanize', title: 'Hugging Face model folder' });
    return uri?.[0]?.fsPath;
  }
  return pick.source;
}

function sourceLabel(ctx: Ctx, source: string): string {
  return path.resolve(source) === path.resolve(DEMO_SOURCE(ctx)) ? 'code-llama-19m (demo)' : path.basename(source);
}

export const COMMANDS: Record<string, CommandSpec> = {
  /**
   * No argument: pick a source, then the settings form. A string or Uri: the form for that folder.
   * `{ source, settings }`: convert without the form and resolve to { path, name } (for tests and scripts).
   */
  'titan.titanizeModel': {
    needsEngine: true,
    enabled: (ctx) => async (arg?: unknown) => {
      if (arg && typeof arg === 'object' && !(arg instanceof vscode.Uri) && 'source' in arg) {
        const { source, settings, select } = arg as { source: string; settings?: ConversionSettings; select?: boolean };
        const result = await ctx.titanize(source, settings ?? ctx.config.conversionDefaults, { select });
        return { path: result.model.path, name: result.model.name, seconds: result.seconds };
      }
      const source = arg instanceof vscode.Uri ? arg.fsPath : typeof arg === 'string' ? arg : await pickSource(ctx);
      if (!source) return undefined;
      TitanizePanel.show(ctx, source, sourceLabel(ctx, source));
      return undefined;
    },
  },
  /**
   * No argument: the Align panel for the model in use. A package path (string or Uri): the panel for it.
   * `{ package, settings, resume?, select? }`: align without the panel and resolve to
   * { path, name, steps, before, after } (for tests and scripts; path null when no merged model was written).
   */
  'titan.alignModel': {
    needsEngine: true,
    enabled: (ctx) => async (arg?: unknown) => {
      if (arg && typeof arg === 'object' && !(arg instanceof vscode.Uri) && 'package' in arg) {
        const { package: pkg, settings, resume, select } = arg as { package: string; settings?: AlignSettings; resume?: boolean; select?: boolean };
        const r = await ctx.align(pkg, settings ?? {}, { resume, select });
        return { path: r.model?.path ?? null, name: r.model?.name ?? null, steps: r.steps.done, before: r.validation.before, after: r.validation.after };
      }
      if (!ctx.hasFolder) {
        void vscode.window.showInformationMessage('Titan: open a folder first; alignment trains the model on the workspace’s code.');
        return undefined;
      }
      let pkg = arg instanceof vscode.Uri ? arg.fsPath : typeof arg === 'string' ? arg : undefined;
      if (!pkg) {
        await ctx.ready();
        pkg = (await ctx.engineStatus())?.model?.path;
      }
      if (!pkg) {
        void vscode.window.showWarningMessage('Titan: no model is open to align; select one first (Titan: Select Model…).');
        return undefined;
      }
      AlignPanel.show(ctx, pkg, path.basename(pkg));
      return undefined;
    },
  },
  'titan.openChat': {
    enabled: (ctx) => async () => ctx.chat.reveal(true),
  },
  /** With a question argument, resolves to the outcome: { id, answer, sources, stopReason } or { id, error }. */
  'titan.askWorkspace': {
    needsEngine: true,
    enabled: (ctx) => async (arg?: unknown): Promise<AskOutcome | undefined> => {
      const question = typeof arg === 'string' ? arg : await vscode.window.showInputBox({ title: 'Ask About Workspace', prompt: 'A question about the files of this workspace', ignoreFocusOut: true });
      if (!question?.trim()) return undefined;
      await ctx.chat.reveal(false);
      return ctx.chat.ask(question.trim());
    },
    disabled: (ctx) => async () => ({ id: 'not-running', error: `the Titan engine is not running (${ctx.client.lastExit ?? 'stopped'})` }),
  },
  'titan.rebuildMemory': {
    needsEngine: true,
    enabled: (ctx) => async () => {
      if (!ctx.hasFolder) {
        void vscode.window.showInformationMessage('Titan: open a folder first; the memory reads the workspace folders.');
        return null;
      }
      try {
        return await ctx.updateMemoryWithProgress(true);
      } catch (e) {
        void vscode.window.showErrorMessage(`Titan: the memory rebuild failed: ${(e as Error).message}`);
        return null;
      }
    },
  },
  /** No argument: a quick pick of the known models. A package path ('' = demo): select it. */
  'titan.selectModel': {
    enabled: (ctx) => async (arg?: unknown) => {
      if (typeof arg === 'string') {
        await ctx.config.setModelPath(arg);
        return arg;
      }
      if (ctx.client.state === 'running') await ctx.refreshModels();
      type Item = vscode.QuickPickItem & { path?: string; action?: 'browse' | 'titanize' };
      const current = ctx.config.modelPath ?? '';
      const items: Item[] = ctx.modelChoices().map((c) => ({ label: `${c.path === current ? '$(check) ' : ''}${c.label}`, description: c.detail, path: c.path }));
      items.push({ label: '', kind: vscode.QuickPickItemKind.Separator }, { label: '$(folder-opened) Browse for a Titan package folder…', action: 'browse' }, { label: '$(wand) Titanize a Hugging Face model…', action: 'titanize' });
      const pick = await vscode.window.showQuickPick(items, { title: 'Select Model', placeHolder: 'The model Titan answers with' });
      if (!pick) return undefined;
      if (pick.action === 'titanize') return vscode.commands.executeCommand('titan.titanizeModel');
      let chosen = pick.path;
      if (pick.action === 'browse') {
        const uri = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use Model', title: 'Titan package folder (titan-package.json)' });
        if (!uri?.[0]) return undefined;
        chosen = uri[0].fsPath;
        if (!fs.existsSync(path.join(chosen, 'titan-package.json'))) {
          const titanize = await vscode.window.showWarningMessage(`${path.basename(chosen)} is not a Titan package. Titanize it?`, 'Titanize…');
          if (titanize) return vscode.commands.executeCommand('titan.titanizeModel', chosen);
          return undefined;
        }
        await ctx.remember('titan.recentModels', chosen);
      }
      await ctx.config.setModelPath(chosen ?? '');
      return chosen;
    },
  },
  'titan.stop': {
    enabled: (ctx) => async () => {
      const stoppedAnswer = ctx.chat.stop();
      if (ctx.client.state !== 'running') return { stopped: stoppedAnswer ? 1 : 0 };
      const r = await ctx.client.request(StopRequest).catch(() => ({ stopped: 0 }));
      return { stopped: Math.max(r.stopped, stoppedAnswer ? 1 : 0) };
    },
  },
  'titan.restartEngine': {
    enabled: (ctx) => async () => {
      await ctx.client.restart();
      return ctx.client.pid;
    },
  },
  'titan.showLogs': {
    enabled: (ctx) => () => ctx.log.show(),
  },
  /** Test hook: what the engine holds now. */
  'titan.debug.engineInfo': {
    enabled: (ctx) => async () => {
      const status = await ctx.engineStatus();
      return {
        pid: ctx.client.pid,
        state: ctx.client.state,
        restarts: ctx.client.restarts,
        model: status?.model?.name ?? null,
        modelPath: status?.model?.path ?? null,
        provider: status?.provider?.provider ?? null,
        busy: status?.busy ?? [],
        memory: status?.memory ? { position: status.memory.position, files: status.memory.files, fresh: status.memory.fresh, lastUpdate: status.memory.lastUpdate, updating: status.memory.updating !== null, error: status.memory.error } : null,
        statusBar: ctx.statusBar.text,
        fileChangesSent: ctx.watcher.sent,
      };
    },
  },
  /** Test hook: SIGKILL the engine process (as a crash would); resolves to the killed pid. */
  'titan.debug.killEngine': {
    enabled: (ctx) => () => ctx.client.kill(),
  },
};

export function registerCommands(ctx: Ctx): vscode.Disposable[] {
  return Object.entries(COMMANDS).map(([name, spec]) => {
    const enabled = spec.enabled(ctx);
    const disabled = (spec.disabled ?? notRunning)(ctx);
    return vscode.commands.registerCommand(name, async (...args: unknown[]) => {
      try {
        if (spec.needsEngine && ctx.client.state === 'failed') return await disabled(...args);
        return await enabled(...args);
      } catch (e) {
        const message = (e as Error).message;
        ctx.log.error(`${name}: ${message}`);
        void vscode.window.showErrorMessage(`Titan: ${message}`);
        return undefined;
      }
    });
  });
}
