// The conversation of one workspace, kept in workspaceState so it survives reloads; the webview
// also keeps it in its own state for instant restore.
import type * as vscode from 'vscode';
import { parseChatEntries, type ChatEntry } from '../protocol/webview';

const KEY = 'titan.chat.history.v1';
const MAX_ENTRIES = 200;

export class ChatHistory {
  private entries: ChatEntry[];

  constructor(private readonly store: vscode.Memento) {
    // Stored data is re-validated: an older or damaged value is dropped, not trusted.
    this.entries = parseChatEntries(store.get<unknown>(KEY, [])) ?? [];
  }

  all(): ChatEntry[] {
    return [...this.entries];
  }

  add(entry: ChatEntry): void {
    this.entries.push(entry);
    if (this.entries.length > MAX_ENTRIES) this.entries = this.entries.slice(-MAX_ENTRIES);
    void this.store.update(KEY, this.entries);
  }

  clear(): void {
    this.entries = [];
    void this.store.update(KEY, []);
  }
}
