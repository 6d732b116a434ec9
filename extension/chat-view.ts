// The chat: a webview view in Titan's activity-bar container. The host runs every question (from
// the webview, the command palette or a test) and streams the answer into the view; the webview only
// renders and sends the user's intents, each checked against the protocol before use.
import * as vscode from 'vscode';
import { AskProgress, AskRequest, type AskResult, type Source } from '../protocol/engine';
import { explainRejection, parseChatToHost, type ChatEntry, type ChatStatus, type ChatToHost, type HostToChat } from '../protocol/webview';
import type { Ctx } from './context';
import { EngineCrashedError, EngineNotRunningError, EngineRequestError } from './engine-client';
import { renderWebviewHtml, webviewOptions } from './webview-html';

export interface AskOutcome {
  id: string;
  answer?: string;
  sources?: Source[];
  stopReason?: AskResult['stopReason'];
  /** Set when the question failed; the chat shows it as an error message. */
  error?: string;
}

let counter = 0;
function newId(prefix: string): string {
  return `${prefix}${Date.now().toString(36)}${(counter++).toString(36)}`;
}

export class ChatView implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewType = 'titan.chat';
  private view: vscode.WebviewView | undefined;
  private current: { id: string; question: string; text: string; cts: vscode.CancellationTokenSource } | null = null;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly ctx: Ctx) {}

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    view.webview.options = webviewOptions(this.ctx.extensionUri);
    view.webview.html = renderWebviewHtml(view.webview, this.ctx.extensionUri, 'chat', 'Titan Chat');
    this.disposables.push(
      view.webview.onDidReceiveMessage((raw: unknown) => this.onMessage(raw)),
      view.onDidDispose(() => {
        if (this.view === view) this.view = undefined;
      }),
    );
  }

  get visible(): boolean {
    return this.view?.visible ?? false;
  }

  private post(msg: HostToChat): void {
    void this.view?.webview.postMessage(msg);
  }

  postStatus(status: ChatStatus): void {
    this.post({ type: 'status', status });
  }

  async reveal(focusPrompt = false): Promise<void> {
    await vscode.commands.executeCommand(`${ChatView.viewType}.focus`);
    if (focusPrompt) this.post({ type: 'focusPrompt' });
  }

  private onMessage(raw: unknown): void {
    const msg = parseChatToHost(raw);
    if (!msg) {
      this.ctx.log.warn(`chat: dropped an invalid message from the webview (${explainRejection('chat', raw)})`);
      return;
    }
    void this.handle(msg).catch((e: Error) => this.ctx.log.error(`chat: ${msg.type} failed: ${e.message}`));
  }

  private async handle(msg: ChatToHost): Promise<void> {
    switch (msg.type) {
      case 'ready': {
        this.post({ type: 'init', history: this.ctx.history.all(), busy: this.current !== null });
        if (this.current) {
          this.post({ type: 'answerStart', id: this.current.id, question: this.current.question });
          if (this.current.text) this.post({ type: 'answerText', id: this.current.id, text: this.current.text });
        }
        this.ctx.refreshStatus();
        return;
      }
      case 'ask':
        await this.ask(msg.question, msg.id);
        return;
      case 'stop':
        this.stop();
        return;
      case 'openSource':
        await this.ctx.openSource(msg.path, msg.line);
        return;
      case 'openLink':
        await this.ctx.openLink(msg.href);
        return;
      case 'copy':
        await vscode.env.clipboard.writeText(msg.text);
        void vscode.window.setStatusBarMessage('Titan: copied to the clipboard', 2000);
        return;
      case 'insert':
        await this.insert(msg.text);
        return;
      case 'selectModel':
        if (msg.path === null) await vscode.commands.executeCommand('titan.selectModel');
        else await this.ctx.selectModelPath(msg.path);
        return;
      case 'rebuildMemory':
        await vscode.commands.executeCommand('titan.rebuildMemory');
        return;
      case 'titanize':
        await vscode.commands.executeCommand('titan.titanizeModel');
        return;
      case 'clearHistory':
        this.ctx.history.clear();
        this.post({ type: 'init', history: [], busy: this.current !== null });
        return;
    }
  }

  private async insert(text: string): Promise<void> {
    const editor = vscode.window.activeTextEditor ?? vscode.window.visibleTextEditors[0];
    if (!editor) {
      void vscode.window.showInformationMessage('Titan: open an editor to insert the code into.');
      return;
    }
    await editor.edit((b) => {
      for (const sel of editor.selections) b.replace(sel, text);
    });
  }

  /** Stops the answer in progress (if any). */
  stop(): boolean {
    if (!this.current) return false;
    this.current.cts.cancel();
    return true;
  }

  get busy(): boolean {
    return this.current !== null;
  }

  /** Asks a question and streams the answer into the chat; never throws (failures are in `error`). */
  async ask(question: string, id = newId('q')): Promise<AskOutcome> {
    // One answer at a time: a new question stops the previous one.
    this.stop();
    const cts = new vscode.CancellationTokenSource();
    const turn = { id, question, text: '', cts };
    this.current = turn;
    this.ctx.history.add({ id: `${id}-q`, role: 'user', text: question, time: Date.now() });
    this.post({ type: 'answerStart', id, question });
    let progress: { token: string; dispose: () => void } | null = null;
    try {
      progress = await this.ctx.client.progress(AskProgress, ({ text }) => {
        turn.text += text;
        this.post({ type: 'answerText', id, text });
      });
      const result = await this.ctx.client.request(
        AskRequest,
        { question, retrieval: this.ctx.config.retrieval, memory: true, maxNewTokens: this.ctx.config.maxNewTokens, progressToken: progress.token },
        cts.token,
      );
      const entry: ChatEntry = { id, role: 'assistant', text: result.answer, sources: result.sources, stats: result.stats, stopReason: result.stopReason, time: Date.now() };
      this.ctx.history.add(entry);
      this.post({ type: 'answerEnd', id, text: result.answer, sources: result.sources, stats: result.stats, stopReason: result.stopReason });
      return { id, answer: result.answer, sources: result.sources, stopReason: result.stopReason };
    } catch (e) {
      const message = describeAskError(e);
      this.ctx.log.error(`ask failed: ${message}`);
      if (turn.text) this.ctx.history.add({ id, role: 'assistant', text: turn.text, time: Date.now(), stopReason: 'cancelled' });
      this.ctx.history.add({ id: `${id}-e`, role: 'error', text: message, time: Date.now() });
      this.post({ type: 'answerError', id, message });
      return { id, error: message };
    } finally {
      progress?.dispose();
      cts.dispose();
      if (this.current === turn) this.current = null;
    }
  }

  dispose(): void {
    this.stop();
    this.disposables.forEach((d) => d.dispose());
  }
}

export function describeAskError(e: unknown): string {
  if (e instanceof EngineCrashedError) return `${e.message} while answering. The engine is restarting; ask again in a moment.`;
  if (e instanceof EngineNotRunningError) return e.message;
  if (e instanceof EngineRequestError) return e.message;
  return e instanceof Error ? e.message : String(e);
}
