// The chat view: renders the conversation and sends the user's intents to the host. Everything
// shown from an answer or a source goes through textContent or the sanitizing markdown renderer.
import { parseHostToChat, type ChatEntry, type ChatStatus, type ChatToHost, type HostToChat } from '../protocol/webview';
import { codeOfAction, createMarkdownRenderer } from './markdown';
import { button, registerControls, type ButtonControl } from './toolkit';
import type { HostApi } from './vscode-api';
import { el } from './dom';

type Source = NonNullable<ChatEntry['sources']>[number];

interface State {
  entries: ChatEntry[];
  draft: string;
}

const MODEL_OTHER = '__other__';
const MODEL_TITANIZE = '__titanize__';

export function startChat(root: HTMLElement, host: HostApi<ChatToHost, State>): void {
  registerControls();
  const markdown = createMarkdownRenderer(window);
  let entries: ChatEntry[] = host.getState()?.entries ?? [];
  let streaming: { id: string; text: string; node: HTMLElement; frame: number | null } | null = null;

  // ---- layout -------------------------------------------------------------------------------
  const header = el('header', 'toolbar');
  const picker = el('select');
  picker.id = 'model-picker';
  picker.title = 'Model';
  picker.setAttribute('aria-label', 'Model');
  const memoryStatus = el('span', 'memory-status', 'Memory: …');
  memoryStatus.id = 'memory-status';
  memoryStatus.setAttribute('role', 'status');
  const rebuild = button('rebuild-memory', 'Rebuild', { appearance: 'secondary', title: 'Rebuild the workspace memory' });
  const clear = button('clear-history', 'Clear', { appearance: 'secondary', title: 'Clear the conversation' });
  header.append(picker, memoryStatus, rebuild, clear);

  const messages = el('main', 'messages');
  messages.id = 'messages';
  messages.setAttribute('role', 'log');
  messages.setAttribute('aria-live', 'polite');

  const composer = el('footer', 'composer');
  const prompt = el('textarea');
  prompt.id = 'prompt';
  prompt.rows = 3;
  prompt.placeholder = 'Ask about this workspace (Enter to send, Shift+Enter for a new line)';
  prompt.setAttribute('aria-label', 'Question');
  prompt.value = host.getState()?.draft ?? '';
  const actions = el('div', 'composer-actions');
  const send: ButtonControl = button('send', 'Ask');
  const stop: ButtonControl = button('stop', 'Stop', { appearance: 'secondary', title: 'Stop the answer' });
  stop.disabled = true;
  actions.append(send, stop);
  composer.append(prompt, actions);
  root.replaceChildren(header, messages, composer);

  const save = () => host.setState({ entries, draft: prompt.value });

  // ---- rendering ----------------------------------------------------------------------------
  function renderSources(sources: readonly Source[]): HTMLElement | null {
    if (!sources.length) return null;
    const box = el('div', 'sources');
    box.append(el('span', 'sources-title', 'Sources'));
    for (const s of sources) {
      const a = el('a', 'source', s.line ? `${s.path}:${s.line}` : s.path);
      a.setAttribute('data-path', s.path);
      if (s.line) a.setAttribute('data-line', String(s.line));
      a.setAttribute('role', 'link');
      a.tabIndex = 0;
      a.title = s.reason + (s.snippet ? `\n\n${s.snippet}` : '');
      box.append(a);
    }
    return box;
  }

  function messageNode(entry: ChatEntry): HTMLElement {
    const node = el('div', `message ${entry.role}`);
    node.setAttribute('data-id', entry.id);
    const content = el('div', 'content');
    if (entry.role === 'assistant') markdown.renderInto(content, entry.text);
    else content.textContent = entry.text;
    node.append(content);
    if (entry.role === 'assistant') {
      const sources = renderSources(entry.sources ?? []);
      if (sources) node.append(sources);
      const meta: string[] = [];
      if (entry.stopReason === 'cancelled') meta.push('stopped');
      else if (entry.stopReason === 'length') meta.push('length limit reached');
      if (entry.stats) meta.push(`${entry.stats.answerTokens} tokens · ${entry.stats.tokensPerSecond.toFixed(1)} tok/s · ${entry.stats.seconds.toFixed(1)} s`);
      if (meta.length) node.append(el('div', 'meta', meta.join(' · ')));
    }
    return node;
  }

  function renderAll(): void {
    messages.replaceChildren(...entries.map(messageNode));
    if (!entries.length) messages.append(el('div', 'empty', 'Ask a question about the files of this workspace.'));
    scrollDown();
  }

  function scrollDown(): void {
    messages.scrollTop = messages.scrollHeight;
  }

  function setBusy(busy: boolean): void {
    send.disabled = busy;
    stop.disabled = !busy;
  }

  function add(entry: ChatEntry): void {
    entries.push(entry);
    if (entries.length > 200) entries = entries.slice(-200);
    messages.querySelector('.empty')?.remove();
    messages.append(messageNode(entry));
    scrollDown();
    save();
  }

  function renderStatus(s: ChatStatus): void {
    memoryStatus.textContent = s.memory;
    memoryStatus.title = s.memory;
    memoryStatus.classList.toggle('updating', s.memoryUpdating);
    const options = s.models.map((m) => {
      const o = el('option', undefined, m.label);
      o.value = m.path;
      o.title = m.detail;
      return o;
    });
    const other = el('option', undefined, 'Other model…');
    other.value = MODEL_OTHER;
    const titanize = el('option', undefined, 'Titanize a model…');
    titanize.value = MODEL_TITANIZE;
    picker.replaceChildren(...options, other, titanize);
    picker.value = s.modelPath ?? '';
    picker.title = s.provider ? `${s.model ?? ''} on ${s.provider}` : (s.model ?? 'Model');
    rebuild.disabled = s.engine !== 'running';
  }

  // ---- streaming ----------------------------------------------------------------------------
  function startAnswer(id: string, question: string): void {
    if (!entries.some((e) => e.id === `${id}-q`)) add({ id: `${id}-q`, role: 'user', text: question, time: Date.now() });
    const node = el('div', 'message assistant streaming');
    node.setAttribute('data-id', id);
    node.append(el('div', 'content'));
    messages.append(node);
    streaming = { id, text: '', node, frame: null };
    setBusy(true);
    scrollDown();
  }

  function appendText(id: string, text: string): void {
    if (!streaming || streaming.id !== id) return;
    streaming.text += text;
    if (streaming.frame !== null) return;
    const s = streaming;
    s.frame = requestAnimationFrame(() => {
      s.frame = null;
      markdown.renderInto(s.node.querySelector('.content') as HTMLElement, s.text);
      scrollDown();
    });
  }

  function finishStreaming(): void {
    if (streaming?.frame) cancelAnimationFrame(streaming.frame);
    streaming?.node.remove();
    streaming = null;
    setBusy(false);
  }

  function onHostMessage(msg: HostToChat): void {
    switch (msg.type) {
      case 'init':
        entries = msg.history;
        streaming = null;
        renderAll();
        setBusy(msg.busy);
        save();
        return;
      case 'status':
        renderStatus(msg.status);
        return;
      case 'answerStart':
        startAnswer(msg.id, msg.question);
        return;
      case 'answerText':
        appendText(msg.id, msg.text);
        return;
      case 'answerEnd': {
        const partial = streaming?.id === msg.id;
        finishStreaming();
        if (!partial && entries.some((e) => e.id === msg.id)) return;
        add({ id: msg.id, role: 'assistant', text: msg.text, sources: msg.sources, stats: msg.stats, stopReason: msg.stopReason, time: Date.now() });
        return;
      }
      case 'answerError': {
        const text = streaming?.id === msg.id ? streaming.text : '';
        finishStreaming();
        if (text) add({ id: msg.id, role: 'assistant', text, stopReason: 'cancelled', time: Date.now() });
        add({ id: `${msg.id}-e`, role: 'error', text: msg.message, time: Date.now() });
        return;
      }
      case 'focusPrompt':
        prompt.focus();
        return;
    }
  }

  // ---- user intents -------------------------------------------------------------------------
  let counter = 0;
  function submit(): void {
    const question = prompt.value.trim();
    if (!question || send.disabled) return;
    prompt.value = '';
    save();
    host.post({ type: 'ask', id: `w${Date.now().toString(36)}${counter++}`, question });
  }

  send.addEventListener('click', submit);
  stop.addEventListener('click', () => host.post({ type: 'stop' }));
  rebuild.addEventListener('click', () => host.post({ type: 'rebuildMemory' }));
  clear.addEventListener('click', () => host.post({ type: 'clearHistory' }));
  prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  prompt.addEventListener('input', save);
  picker.addEventListener('change', () => {
    const v = picker.value;
    if (v === MODEL_TITANIZE) host.post({ type: 'titanize' });
    else host.post({ type: 'selectModel', path: v === MODEL_OTHER ? null : v });
  });

  const activate = (target: Element) => {
    const source = target.closest('a.source');
    if (source) {
      const line = Number(source.getAttribute('data-line'));
      host.post({ type: 'openSource', path: source.getAttribute('data-path') ?? '', ...(line > 0 ? { line } : {}) });
      return true;
    }
    const link = target.closest('a[data-href]');
    if (link) {
      host.post({ type: 'openLink', href: link.getAttribute('data-href') ?? '' });
      return true;
    }
    const action = target.closest('button.code-action');
    if (action) {
      const code = codeOfAction(action) ?? '';
      host.post(action.getAttribute('data-action') === 'insert' ? { type: 'insert', text: code } : { type: 'copy', text: code });
      return true;
    }
    return false;
  };
  messages.addEventListener('click', (e) => {
    // Nothing in an answer navigates the webview: every click becomes a message or nothing.
    const target = e.target as Element;
    if (target.closest('a')) e.preventDefault();
    activate(target);
  });
  messages.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && activate(e.target as Element)) e.preventDefault();
  });

  window.addEventListener('message', (event: MessageEvent) => {
    const msg = parseHostToChat(event.data);
    if (msg) onHostMessage(msg);
  });

  renderAll();
  host.post({ type: 'ready' });
}
