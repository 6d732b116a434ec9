// The Align panel: settings validated inline by the engine (through the host) as the user edits, then
// Align with a live loss plot (training loss per step, validation loss), tokens/s, ETA, μ and Stop;
// a cancelled run can be resumed from its checkpoint; a finished one offers the aligned model.
import { parseHostToAlign, type AlignDefaults, type AlignToHost, type HostToAlign } from '../protocol/webview';
import type { AlignField, AlignFieldError, AlignProgressValue, AlignSettings } from '../protocol/settings';
import { lossPlotModel, renderLossPlot, type LossPoint } from './loss-plot';
import { button, dropdown, registerControls, textField, type ButtonControl, type ValueControl } from './toolkit';
import { el } from './dom';
import { alertLine, fieldRow } from './form-dom';
import type { HostApi } from './vscode-api';

/** Form field → element id (the ids are part of the contract with the UI tests). */
const FIELD_IDS: Record<AlignField, string> = {
  budget: 'budget',
  steps: 'steps',
  minutes: 'minutes',
  lr: 'lr',
  magSchedule: 'mag-schedule',
  batch: 'batch',
  sequence: 'sequence',
};

const LABELS: Record<AlignField, string> = {
  budget: 'Run for',
  steps: 'Steps',
  minutes: 'Minutes',
  lr: 'Learning rate',
  magSchedule: 'μ schedule',
  batch: 'Sequences per step',
  sequence: 'Tokens per sequence',
};

const HELP: Record<AlignField, string> = {
  budget: 'A number of optimizer steps, or a training time (the learning rate decays over it).',
  steps: 'Optimizer steps (each one sequence batch).',
  minutes: 'Training time in minutes; validations included.',
  lr: 'Peak learning rate of AdamW, after warmup, decaying to 0 (the paper: 5e-4).',
  magSchedule: 'Memory-as-Gate weight μ during training: constant (the package’s), gradual (0.01 → μ over 100 steps), or cyclic (0, 0.5, 1).',
  batch: 'Sequences whose gradients are summed per step.',
  sequence: 'Tokens per training sequence.',
};

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function formatRate(n: number): string {
  return n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0);
}

export function startAlign(root: HTMLElement, host: HostApi<AlignToHost, unknown>): void {
  registerControls();
  root.replaceChildren(el('p', 'loading', 'Loading…'));
  let counter = 0;
  const nextId = () => `a${Date.now().toString(36)}${counter++}`;

  function build(init: Extract<HostToAlign, { type: 'init' }>): void {
    const d: AlignDefaults = init.defaults;
    const title = el('h1', undefined, `Align ${init.packageLabel}`);
    const packagePath = el('p', 'source-path', init.packagePath);
    const intro = el(
      'p',
      'intro',
      `LoRA fine-tuning on ${init.workspaceLabel}: the model learns to use its linear-attention memory on your code (next-token loss, about one file in ten held out for validation). The result is a new model; the one you have stays as it is.`,
    );

    const controls = {
      budget: dropdown('budget', [{ value: 'minutes', label: 'minutes of training' }, { value: 'steps', label: 'a number of steps' }], d.budget, LABELS.budget),
      minutes: textField('minutes', { value: String(d.minutes), label: LABELS.minutes }),
      steps: textField('steps', { value: String(d.steps), label: LABELS.steps }),
      lr: textField('lr', { value: String(d.lr), label: LABELS.lr }),
      magSchedule: dropdown('mag-schedule', [{ value: 'constant', label: 'constant' }, { value: 'gradual', label: 'gradual' }, { value: 'cyclic', label: 'cyclic' }], d.magSchedule, LABELS.magSchedule),
      batch: textField('batch', { value: String(d.batch), label: LABELS.batch }),
      sequence: textField('sequence', { value: String(d.sequence), label: LABELS.sequence }),
    } satisfies Record<AlignField, ValueControl>;
    const errorsOf = {} as Record<AlignField, HTMLElement>;
    const rows = {} as Record<AlignField, HTMLElement>;

    const form = el('div', 'form');
    for (const field of Object.keys(controls) as AlignField[]) {
      const { row, error } = fieldRow(LABELS[field], FIELD_IDS[field], [controls[field]], HELP[field]);
      errorsOf[field] = error;
      rows[field] = row;
      form.append(row);
    }
    const general = alertLine('field-error general', 'general-error');

    const start: ButtonControl = button('start', 'Align');
    const resume: ButtonControl = button('resume', 'Resume', { appearance: 'secondary', title: 'Continue the cancelled run from its checkpoint (same settings)' });
    resume.hidden = true;
    const stop: ButtonControl = button('stop', 'Stop', { appearance: 'secondary', title: 'Stop after the current sequence; the checkpoint is kept' });
    stop.disabled = true;
    const buttons = el('div', 'buttons');
    buttons.append(start, resume, stop);

    // Live view: stage line, figures, plot.
    const live = el('div', 'align-live');
    live.hidden = true;
    const stage = el('p', 'align-stage', '', 'align-stage');
    const stats = el('div', 'align-stats');
    const stat = (id: string, label: string) => {
      const box = el('div', 'align-stat');
      const value = el('span', 'align-stat-value', '–', id);
      box.append(el('span', 'align-stat-label', label), value);
      stats.append(box);
      return value;
    };
    const statStep = stat('stat-step', 'Step');
    const statLoss = stat('stat-loss', 'Training loss');
    const statValidation = stat('stat-validation', 'Validation loss');
    const statSpeed = stat('stat-speed', 'Tokens/s');
    const statEta = stat('stat-eta', 'ETA');
    const statMu = stat('stat-mu', 'μ');
    const plot = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    plot.id = 'loss-plot';
    plot.setAttribute('class', 'loss-plot');
    plot.setAttribute('role', 'img');
    plot.setAttribute('aria-label', 'Training and validation loss per step');
    const legend = el('div', 'plot-legend');
    legend.append(el('span', 'legend-train', 'training loss (smoothed)'), el('span', 'legend-train-raw', 'per step'), el('span', 'legend-validation', 'validation loss'));
    live.append(stage, stats, plot, legend);

    const result = el('div', 'result', undefined, 'align-result');
    result.hidden = true;

    root.replaceChildren(title, packagePath, intro, form, general, buttons, live, result);

    const values = (): AlignSettings => ({
      budget: controls.budget.value,
      steps: controls.steps.value,
      minutes: controls.minutes.value,
      lr: controls.lr.value,
      magSchedule: controls.magSchedule.value,
      batch: controls.batch.value,
      sequence: controls.sequence.value,
    });

    let running = false;
    let lastValidation = '';
    let errorCount = 0;
    let timer: number | undefined;
    let train: LossPoint[] = [];
    let validation: LossPoint[] = [];
    let totalSteps: number | null = null;

    function showBudget(): void {
      const byMinutes = controls.budget.value !== 'steps';
      rows.minutes.hidden = !byMinutes;
      rows.steps.hidden = byMinutes;
    }

    function draw(): void {
      const width = Math.max(240, Math.round(plot.getBoundingClientRect().width) || 600);
      renderLossPlot(plot, lossPlotModel(train, validation, { width, height: 220 }, totalSteps));
    }

    function showErrors(errors: readonly AlignFieldError[]): void {
      for (const field of Object.keys(errorsOf) as AlignField[]) {
        const mine = errors.filter((e) => e.field === field).map((e) => e.message);
        errorsOf[field].textContent = mine.join('\n');
        errorsOf[field].hidden = mine.length === 0;
        controls[field].classList.toggle('invalid', mine.length > 0);
      }
      const rest = errors.filter((e) => e.field === null).map((e) => e.message);
      general.textContent = rest.join('\n');
      general.hidden = rest.length === 0;
      errorCount = errors.length;
      start.disabled = running || errorCount > 0;
      resume.disabled = running || errorCount > 0;
    }

    function validateSoon(): void {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        lastValidation = nextId();
        host.post({ type: 'validate', id: lastValidation, settings: values() });
      }, 200);
    }

    function setRunning(on: boolean): void {
      running = on;
      start.disabled = on || errorCount > 0;
      resume.disabled = on || errorCount > 0;
      stop.disabled = !on;
      for (const c of Object.values(controls)) c.disabled = on;
    }

    function begin(resuming: boolean): void {
      if (running) return;
      result.hidden = true;
      if (!resuming) {
        train = [];
        validation = [];
      }
      totalSteps = null;
      live.hidden = false;
      stage.textContent = resuming ? 'Resuming…' : 'Starting…';
      setRunning(true);
      draw();
      host.post({ type: 'start', id: nextId(), settings: values(), resume: resuming });
    }

    function onProgress(v: AlignProgressValue): void {
      live.hidden = false;
      switch (v.kind) {
        case 'stage':
          stage.textContent = v.message;
          return;
        case 'start':
          totalSteps = v.totalSteps;
          // A resumed run re-sends its history from the checkpoint's step on: drop points past it.
          train = train.filter((p) => p.step <= v.startStep);
          validation = validation.filter((p) => p.step <= v.startStep);
          stage.textContent = `Training on ${v.provider}: ${v.trainSequences} sequences (${formatRate(v.trainTokens)} tokens), ${v.validationSequences} held out${v.minutes ? `, for ${v.minutes} min` : v.totalSteps ? `, ${v.totalSteps} steps` : ''}`;
          draw();
          return;
        case 'step':
          train.push({ step: v.step, loss: v.loss });
          totalSteps = v.totalSteps;
          statStep.textContent = `${v.step} / ${v.totalSteps}`;
          statLoss.textContent = v.loss === null ? 'overflow' : v.loss.toFixed(4);
          statSpeed.textContent = formatRate(v.tokensPerSecond);
          statEta.textContent = formatDuration(v.eta);
          statMu.textContent = v.mu.toFixed(3).replace(/\.?0+$/, '') || '0';
          stage.textContent = `Training · lr ${v.lr.toExponential(2)} · ${formatDuration(v.elapsed)} elapsed`;
          draw();
          return;
        case 'eval':
          validation = validation.filter((p) => p.step !== v.step);
          validation.push({ step: v.step, loss: v.loss });
          statValidation.textContent = v.loss === null ? '–' : `${v.loss.toFixed(4)} (ppl ${v.perplexity === null ? '–' : v.perplexity.toFixed(1)})`;
          draw();
          return;
        case 'checkpoint':
          return;
      }
    }

    for (const c of Object.values(controls)) {
      c.addEventListener('input', validateSoon);
      c.addEventListener('change', validateSoon);
    }
    controls.budget.addEventListener('change', showBudget);
    start.addEventListener('click', () => {
      if (!start.disabled) begin(false);
    });
    resume.addEventListener('click', () => {
      if (!resume.disabled) begin(true);
    });
    stop.addEventListener('click', () => {
      if (!running) return;
      stage.textContent = 'Stopping after the current sequence…';
      stop.disabled = true;
      host.post({ type: 'stop' });
    });
    new ResizeObserver(() => {
      if (!live.hidden) draw();
    }).observe(plot);

    window.addEventListener('message', (event: MessageEvent) => {
      const msg = parseHostToAlign(event.data);
      if (!msg) return;
      switch (msg.type) {
        case 'validation':
          if (msg.id !== lastValidation) return;
          showErrors(msg.errors);
          if (!running) {
            resume.hidden = !msg.resumable;
            // Starting over replaces the cancelled run (its checkpoint); say so where the choice is made.
            start.title = msg.resumable ? 'Start over: the cancelled run’s checkpoint is discarded (Resume continues it)' : '';
          }
          return;
        case 'progress':
          onProgress(msg.value);
          return;
        case 'done': {
          setRunning(false);
          resume.hidden = true;
          const loss = msg.before !== null && msg.after !== null ? ` Validation loss ${msg.before.toFixed(4)} → ${msg.after.toFixed(4)}.` : '';
          stage.textContent = `Done: ${msg.steps} steps in ${formatDuration(msg.seconds)}.${loss}`;
          statEta.textContent = '–';
          result.hidden = false;
          const parts: HTMLElement[] = [];
          if (msg.path && msg.model) {
            parts.push(el('p', 'success', `${msg.model} is ready.`), el('p', 'source-path', msg.path));
            const use = button('use-model', 'Use Aligned Model');
            use.addEventListener('click', () => host.post({ type: 'useModel', path: msg.path! }));
            const chat = button('open-chat', 'Open Chat', { appearance: 'secondary' });
            chat.addEventListener('click', () => host.post({ type: 'openChat' }));
            const row = el('div', 'buttons');
            row.append(use, chat);
            parts.push(row);
          } else parts.push(el('p', undefined, 'The adapter was written, but no merged model.'));
          for (const note of msg.notes) parts.push(el('p', 'field-help', note));
          result.replaceChildren(...parts);
          return;
        }
        case 'failed':
          setRunning(false);
          stage.textContent = 'Failed';
          showErrors(msg.errors.length ? msg.errors : [{ field: null, message: msg.message }]);
          return;
        case 'cancelled':
          setRunning(false);
          stage.textContent = msg.message;
          resume.hidden = !msg.resumable;
          return;
        case 'init':
          return;
      }
    });
    showBudget();
    validateSoon();
  }

  window.addEventListener('message', function onInit(event: MessageEvent) {
    const msg = parseHostToAlign(event.data);
    if (msg?.type !== 'init') return;
    window.removeEventListener('message', onInit);
    build(msg);
  });
  host.post({ type: 'ready' });
}
