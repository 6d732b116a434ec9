// The Titanize settings form: fields validated inline by the engine (through the host) as the user
// edits, then Convert with progress and Cancel.
import { parseHostToTitanize, type FormDefaults, type HostToTitanize, type TitanizeToHost } from '../protocol/webview';
import type { ConversionSettings, FieldError, SettingsField } from '../protocol/settings';
import { button, checkbox, dropdown, registerControls, textField, type ButtonControl, type CheckControl, type ValueControl } from './toolkit';
import { el } from './dom';
import { alertLine, fieldRow } from './form-dom';
import type { HostApi } from './vscode-api';

/** Form field → element id (the ids are part of the contract with the UI tests). */
const FIELD_IDS: Record<SettingsField, string> = {
  operator: 'operator',
  magWeight: 'mag-weight',
  window: 'window',
  chunk: 'chunk',
  semantics: 'semantics',
  dtype: 'dtype',
  crossGate: 'cross-gate',
  adapter: 'adapter',
};

const HELP: Record<SettingsField, string> = {
  operator: 'How the linear branch updates its state (operator_mode).',
  magWeight: 'Memory-as-Gate weight μ of the linear branch, in [0, 1].',
  window: 'Softmax window W in tokens (max_self_attn_length); empty = unbounded.',
  chunk: 'Tokens per chunk of the linear branch (max_chunk_size), at most 512.',
  semantics: 'exact: a true recurrence; tptt-0.12: the reference library, quirks included.',
  dtype: 'Weight precision of the package (int4: 4-bit projection weights, fastest decode on the CPU).',
  crossGate: 'Add the product of the two weighted branches.',
  adapter: 'Optional LoRA adapter folder merged into the projections.',
};

const LABELS: Record<SettingsField, string> = {
  operator: 'Operator',
  magWeight: 'MaG weight (μ)',
  window: 'Window',
  chunk: 'Chunk size',
  semantics: 'Semantics',
  dtype: 'Precision',
  crossGate: 'Cross gate',
  adapter: 'Adapter',
};

export function startTitanize(root: HTMLElement, host: HostApi<TitanizeToHost, unknown>): void {
  registerControls();
  root.replaceChildren(el('p', 'loading', 'Loading…'));
  let counter = 0;
  const nextId = () => `t${Date.now().toString(36)}${counter++}`;

  function build(init: Extract<HostToTitanize, { type: 'init' }>): void {
    const d: FormDefaults = init.defaults;
    const title = el('h1', undefined, `Titanize ${init.sourceLabel}`);
    const sourcePath = el('p', 'source-path', init.source);
    const intro = el('p', 'intro', 'Every attention layer gains a LiZA linear-attention branch mixed in by Memory-as-Gate; the result is a Titan package the chat can use.');

    const operators = init.operators.map((o) => ({ value: o, label: o }));
    const controls = {
      operator: dropdown('operator', operators, d.operator, LABELS.operator),
      magWeight: textField('mag-weight', { value: String(d.magWeight), label: LABELS.magWeight }),
      window: textField('window', { value: d.window === null ? '' : String(d.window), placeholder: 'unbounded', label: LABELS.window }),
      chunk: textField('chunk', { value: String(d.chunk), label: LABELS.chunk }),
      semantics: dropdown('semantics', [{ value: 'exact', label: 'exact' }, { value: 'tptt-0.12', label: 'tptt-0.12' }], d.semantics, LABELS.semantics),
      dtype: dropdown('dtype', [{ value: 'fp32', label: 'fp32' }, { value: 'fp16', label: 'fp16' }, { value: 'int4', label: 'int4 weights (CPU)' }], d.dtype, LABELS.dtype),
      crossGate: checkbox('cross-gate', 'Add the cross gate', d.crossGate),
      adapter: textField('adapter', { value: d.adapter, placeholder: 'none', label: LABELS.adapter }),
    } satisfies Record<SettingsField, ValueControl | CheckControl>;
    const errorsOf = {} as Record<SettingsField, HTMLElement>;

    const form = el('div', 'form');
    for (const field of Object.keys(controls) as SettingsField[]) {
      const line: HTMLElement[] = [controls[field]];
      if (field === 'adapter') {
        const browse = button('browse-adapter', 'Browse…', { appearance: 'secondary', title: 'Choose an adapter folder' });
        browse.addEventListener('click', () => host.post({ type: 'browseAdapter' }));
        line.push(browse);
      }
      const { row, error } = fieldRow(LABELS[field], FIELD_IDS[field], line, HELP[field]);
      errorsOf[field] = error;
      form.append(row);
    }
    const general = alertLine('field-error general', 'general-error');

    const progressBox = el('div', 'progress');
    progressBox.hidden = true;
    const bar = el('progress');
    bar.id = 'progress';
    bar.max = 100;
    bar.value = 0;
    const progressText = el('span', 'progress-text');
    progressText.id = 'progress-text';
    progressBox.append(bar, progressText);

    const convert: ButtonControl = button('convert', 'Convert');
    const cancel: ButtonControl = button('cancel', 'Cancel', { appearance: 'secondary' });
    cancel.disabled = true;
    const buttons = el('div', 'buttons');
    buttons.append(convert, cancel);

    const result = el('div', 'result');
    result.id = 'result';
    result.hidden = true;

    root.replaceChildren(title, sourcePath, intro, form, general, progressBox, buttons, result);

    const values = (): ConversionSettings => ({
      operator: controls.operator.value,
      magWeight: controls.magWeight.value,
      window: controls.window.value,
      chunk: controls.chunk.value,
      semantics: controls.semantics.value,
      dtype: controls.dtype.value,
      crossGate: controls.crossGate.checked,
      adapter: controls.adapter.value,
    });

    let lastValidation = '';
    /** The adapter folder whose recorded settings were put into the fields. */
    let prefilledFor = '';
    let converting = false;
    let timer: number | undefined;

    function showErrors(errors: readonly FieldError[]): void {
      for (const field of Object.keys(errorsOf) as SettingsField[]) {
        const mine = errors.filter((e) => e.field === field).map((e) => e.message);
        errorsOf[field].textContent = mine.join('\n');
        errorsOf[field].hidden = mine.length === 0;
        controls[field].classList.toggle('invalid', mine.length > 0);
      }
      const rest = errors.filter((e) => e.field === null).map((e) => e.message);
      general.textContent = rest.join('\n');
      general.hidden = rest.length === 0;
      convert.disabled = converting || errors.length > 0;
    }

    function validateSoon(): void {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        lastValidation = nextId();
        host.post({ type: 'validate', id: lastValidation, settings: values() });
      }, 200);
    }

    function setConverting(on: boolean): void {
      converting = on;
      convert.disabled = on;
      cancel.disabled = !on;
      for (const c of Object.values(controls)) c.disabled = on;
      progressBox.hidden = !on && bar.value === 0;
    }

    for (const c of Object.values(controls)) {
      c.addEventListener('input', validateSoon);
      c.addEventListener('change', validateSoon);
    }
    convert.addEventListener('click', () => {
      if (converting || convert.disabled) return;
      result.hidden = true;
      bar.value = 0;
      progressText.textContent = 'Starting…';
      setConverting(true);
      host.post({ type: 'convert', id: nextId(), settings: values() });
    });
    cancel.addEventListener('click', () => {
      if (!converting) return;
      progressText.textContent = 'Cancelling…';
      host.post({ type: 'cancel' });
    });

    window.addEventListener('message', (event: MessageEvent) => {
      const msg = parseHostToTitanize(event.data);
      if (!msg) return;
      switch (msg.type) {
        case 'validation':
          if (msg.id !== lastValidation) return;
          // A newly chosen adapter that records its training settings fills the fields with them, once.
          if (msg.adapterSettings && controls.adapter.value !== prefilledFor && !converting) {
            prefilledFor = controls.adapter.value;
            const a = msg.adapterSettings;
            if (a.operator !== undefined && init.operators.includes(a.operator)) controls.operator.value = a.operator;
            if (a.magWeight !== undefined) controls.magWeight.value = String(a.magWeight);
            if (a.window !== undefined) controls.window.value = a.window === null ? '' : String(a.window);
            if (a.chunk !== undefined) controls.chunk.value = String(a.chunk);
            if (a.semantics !== undefined) controls.semantics.value = a.semantics;
            if (a.crossGate !== undefined) controls.crossGate.checked = a.crossGate;
            validateSoon();
            return;
          }
          showErrors(msg.errors);
          return;
        case 'progress':
          progressBox.hidden = false;
          bar.value = msg.total > 0 ? Math.round((100 * msg.done) / msg.total) : 0;
          progressText.textContent = msg.message;
          return;
        case 'done': {
          setConverting(false);
          bar.value = 100;
          progressText.textContent = `Done in ${msg.seconds.toFixed(1)} s`;
          result.hidden = false;
          const openChat = button('open-chat', 'Open Chat');
          openChat.addEventListener('click', () => host.post({ type: 'openChat' }));
          // The paper's recipe is inject, then align: offered here, on the open workspace's code.
          const align = button('align-workspace', 'Align on This Workspace…', { appearance: 'secondary', title: 'LoRA fine-tuning on this workspace, so the model learns to use its memory' });
          align.addEventListener('click', () => host.post({ type: 'align', path: msg.path }));
          const actions = el('div', 'buttons');
          actions.append(openChat, align);
          result.replaceChildren(el('p', 'success', `${msg.model} is ready and now in use.`), el('p', 'source-path', msg.path), actions);
          return;
        }
        case 'failed':
          setConverting(false);
          progressText.textContent = 'Failed';
          showErrors(msg.errors.length ? msg.errors : [{ field: null, message: msg.message }]);
          return;
        case 'cancelled':
          setConverting(false);
          bar.value = 0;
          progressText.textContent = 'Cancelled';
          progressBox.hidden = false;
          return;
        case 'adapterPicked':
          controls.adapter.value = msg.path;
          validateSoon();
          return;
        case 'init':
          return;
      }
    });
    validateSoon();
  }

  window.addEventListener('message', function onInit(event: MessageEvent) {
    const msg = parseHostToTitanize(event.data);
    if (msg?.type !== 'init') return;
    window.removeEventListener('message', onInit);
    build(msg);
  });
  host.post({ type: 'ready' });
}
