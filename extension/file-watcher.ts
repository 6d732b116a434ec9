// Saves, creates and deletes in the workspace folders → (filtered, debounced) → the engine's
// incremental memory update. Filters follow files.exclude, search.exclude and titan.memory.exclude
// of each folder; multi-root workspaces get one watcher per folder.
import * as vscode from 'vscode';
import { FilesChangedNotification } from '../protocol/engine';
import type { Ctx } from './context';
import { ChangeBatcher, ChangeFilter } from './file-changes';

export class FileWatcher implements vscode.Disposable {
  private watchers: vscode.Disposable[] = [];
  private filter: ChangeFilter | null = null;
  private readonly batcher: ChangeBatcher;
  /** Changes sent to the engine since activation (reported by titan.debug.engineInfo). */
  sent = 0;

  constructor(private readonly ctx: Ctx) {
    this.batcher = new ChangeBatcher((changes) => {
      this.sent += changes.length;
      ctx.log.debug(`memory: ${changes.length} file change(s) → engine`);
      ctx.client.notify(FilesChangedNotification, { changes });
    });
    this.reset();
  }

  /** Rebuilds watchers and filters (folders or exclude settings changed). */
  reset(): void {
    this.watchers.forEach((w) => w.dispose());
    this.watchers = [];
    const folders = this.ctx.workspaceFolders();
    this.filter = new ChangeFilter(folders.map((f) => ({ path: f.path, exclude: f.exclude ?? {} })), this.ctx.config.memoryExclude);
    for (const folder of vscode.workspace.workspaceFolders ?? []) {
      if (folder.uri.scheme !== 'file') continue;
      const w = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(folder, '**/*'));
      this.watchers.push(
        w,
        w.onDidCreate((u) => this.onEvent(u, 'created')),
        w.onDidChange((u) => this.onEvent(u, 'changed')),
        w.onDidDelete((u) => this.onEvent(u, 'deleted')),
      );
    }
    // Saves from the editor also arrive here, even where the file watcher is slow or excluded.
    this.watchers.push(vscode.workspace.onDidSaveTextDocument((d) => this.onEvent(d.uri, 'changed')));
  }

  private onEvent(uri: vscode.Uri, kind: 'created' | 'changed' | 'deleted'): void {
    // titan.memory.autoBuild off: the memory changes only when the user asks (Rebuild Workspace Memory).
    if (!this.ctx.config.autoBuild) return;
    if (uri.scheme !== 'file' || !this.filter?.accepts(uri.fsPath)) return;
    this.batcher.add(uri.fsPath, kind);
  }

  dispose(): void {
    this.watchers.forEach((w) => w.dispose());
    this.batcher.dispose();
  }
}
