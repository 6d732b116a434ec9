// The Align panel's live loss plot: training loss per step (raw, faint, and smoothed) and validation
// loss at each validation, drawn as inline SVG built with DOM calls — no inline styles (the CSP allows
// none), no remote resources, colours from the theme through CSS classes in titan.css.
//
// lossPlotModel is the geometry alone (plain data, unit-tested); renderLossPlot draws it.

export interface LossPoint {
  step: number;
  /** null: not a finite number (an overflowed fp16 step); the line has a gap there. */
  loss: number | null;
}

export interface PlotTick {
  /** Position in plot coordinates. */
  at: number;
  label: string;
}

export interface LossPlotModel {
  width: number;
  height: number;
  /** The plotting area inside the axes. */
  area: { left: number; top: number; right: number; bottom: number };
  trainRaw: string;
  trainSmooth: string;
  validation: string;
  validationDots: { x: number; y: number; step: number; loss: number }[];
  xTicks: PlotTick[];
  yTicks: PlotTick[];
  /** No finite loss yet: the plot shows only its frame. */
  empty: boolean;
}

const MARGIN = { left: 44, right: 10, top: 10, bottom: 24 };
/** Weight of the newest point in the smoothed training line (an exponential moving average). */
const SMOOTHING = 0.3;

/** A step of 1, 2 or 5 × 10ⁿ giving about `count` intervals over `span`. */
export function niceStep(span: number, count: number): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const m = raw / power;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
}

function formatLoss(v: number, step: number): string {
  const decimals = Math.max(0, Math.min(4, -Math.floor(Math.log10(step))));
  return v.toFixed(decimals);
}

/** "M x y L x y …", starting a new segment after each gap. */
function pathOf(points: readonly { x: number; y: number | null }[]): string {
  let d = '';
  let pen = false;
  for (const p of points) {
    if (p.y === null) {
      pen = false;
      continue;
    }
    d += `${d ? ' ' : ''}${pen ? 'L' : 'M'}${p.x.toFixed(1)} ${p.y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** Exponential moving average over the finite values (gaps keep their place and do not reset it). */
export function smoothed(points: readonly LossPoint[], weight = SMOOTHING): LossPoint[] {
  let avg: number | null = null;
  return points.map((p) => {
    if (p.loss === null || !Number.isFinite(p.loss)) return { step: p.step, loss: null };
    avg = avg === null ? p.loss : weight * p.loss + (1 - weight) * avg;
    return { step: p.step, loss: avg };
  });
}

/**
 * The plot's geometry for the points so far. The x axis runs from the first step to `totalSteps`
 * when known (the run's end), else to the last step; the y axis spans every finite loss, padded.
 */
export function lossPlotModel(train: readonly LossPoint[], validation: readonly LossPoint[], size: { width: number; height: number }, totalSteps?: number | null): LossPlotModel {
  const { width, height } = size;
  const area = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  const finite = (p: LossPoint): p is { step: number; loss: number } => p.loss !== null && Number.isFinite(p.loss);
  const values = [...train, ...validation].filter(finite).map((p) => p.loss);
  const steps = [...train, ...validation].map((p) => p.step);
  const x0 = steps.length ? Math.min(0, ...steps) : 0;
  const x1 = Math.max(x0 + 1, totalSteps ?? 0, ...steps);
  let y0 = values.length ? Math.min(...values) : 0;
  let y1 = values.length ? Math.max(...values) : 1;
  if (y1 - y0 < 1e-9) {
    y0 -= 0.5;
    y1 += 0.5;
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const x = (step: number) => area.left + ((step - x0) / (x1 - x0)) * (area.right - area.left);
  const y = (loss: number) => area.bottom - ((loss - y0) / (y1 - y0)) * (area.bottom - area.top);
  const place = (points: readonly LossPoint[]) => points.map((p) => ({ x: x(p.step), y: finite(p) ? y(p.loss) : null }));

  const yStep = niceStep(y1 - y0, 4);
  const yTicks: PlotTick[] = [];
  for (let v = Math.ceil(y0 / yStep) * yStep; v <= y1 + 1e-12; v += yStep) yTicks.push({ at: y(v), label: formatLoss(v, yStep) });
  const xStep = Math.max(1, niceStep(x1 - x0, 5));
  const xTicks: PlotTick[] = [];
  for (let s = Math.ceil(x0 / xStep) * xStep; s <= x1 + 1e-9; s += xStep) xTicks.push({ at: x(s), label: String(Math.round(s)) });

  return {
    width,
    height,
    area,
    trainRaw: pathOf(place(train)),
    trainSmooth: pathOf(place(smoothed(train))),
    validation: pathOf(place(validation)),
    validationDots: validation.filter(finite).map((p) => ({ x: x(p.step), y: y(p.loss), step: p.step, loss: p.loss })),
    xTicks,
    yTicks,
    empty: values.length === 0,
  };
}

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, className?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (className) e.setAttribute('class', className);
  return e;
}

/** Draws `model` into `target` (replacing what it held). */
export function renderLossPlot(target: SVGSVGElement, model: LossPlotModel): void {
  const { area } = model;
  target.setAttribute('viewBox', `0 0 ${model.width} ${model.height}`);
  const parts: SVGElement[] = [];
  for (const t of model.yTicks) {
    parts.push(svg('line', { x1: area.left, x2: area.right, y1: t.at.toFixed(1), y2: t.at.toFixed(1) }, 'plot-grid'));
    const label = svg('text', { x: area.left - 4, y: (t.at + 3).toFixed(1), 'text-anchor': 'end' }, 'plot-label');
    label.textContent = t.label;
    parts.push(label);
  }
  for (const t of model.xTicks) {
    const label = svg('text', { x: t.at.toFixed(1), y: area.bottom + 14, 'text-anchor': 'middle' }, 'plot-label');
    label.textContent = t.label;
    parts.push(label);
  }
  parts.push(svg('path', { d: `M${area.left} ${area.top} L${area.left} ${area.bottom} L${area.right} ${area.bottom}`, fill: 'none' }, 'plot-axis'));
  if (model.trainRaw) parts.push(svg('path', { d: model.trainRaw, fill: 'none' }, 'plot-train-raw'));
  if (model.trainSmooth) parts.push(svg('path', { d: model.trainSmooth, fill: 'none' }, 'plot-train'));
  if (model.validation) parts.push(svg('path', { d: model.validation, fill: 'none' }, 'plot-validation'));
  for (const d of model.validationDots) {
    const dot = svg('circle', { cx: d.x.toFixed(1), cy: d.y.toFixed(1), r: 3 }, 'plot-validation-dot');
    const title = svg('title', {});
    title.textContent = `validation loss ${d.loss.toFixed(4)} at step ${d.step}`;
    dot.append(title);
    parts.push(dot);
  }
  if (model.empty) {
    const note = svg('text', { x: (area.left + area.right) / 2, y: (area.top + area.bottom) / 2, 'text-anchor': 'middle' }, 'plot-label');
    note.textContent = 'The loss appears here as training runs.';
    parts.push(note);
  }
  target.replaceChildren(...parts);
}
