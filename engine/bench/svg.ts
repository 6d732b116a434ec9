// The bench plot as SVG: one panel per metric, context length on a log x axis, one line per
// contender. Hand-written because it is a few dozen elements; every series is a <g> carrying
// data-contender and data-metric, so the file can be checked (and restyled) without parsing paths.
import type { BenchReport } from './run';
import { formatContext } from './run';

export interface Series {
  id: string;
  label: string;
  points: [number, number][];
}

export interface Panel {
  metric: string;
  title: string;
  yLabel: string;
  logY: boolean;
  series: Series[];
}

const COLORS = ['#d62728', '#ff7f0e', '#1f77b4', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const num = (v: number) => (Math.round(v * 100) / 100).toString();

/** Tick values for a log axis: 1-2-5 steps over [lo, hi]. */
function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  return ticks.length >= 2 ? ticks : [lo, hi];
}

/** About five round ticks over [0, hi]. */
function linearTicks(hi: number): number[] {
  const raw = hi / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  const top = Math.ceil(hi / step - 1e-9) * step;
  for (let i = 0; i * step <= top * 1.0001; i++) ticks.push(i * step);
  return ticks;
}

function formatTick(v: number): string {
  if (v >= 1e6) return `${num(v / 1e6)}M`;
  if (v >= 1e3) return `${num(v / 1e3)}k`;
  return num(v);
}

function panelSvg(panel: Panel, x0: number, y0: number, w: number, h: number, xs: number[], colorOf: (id: string) => string): string {
  const left = 58;
  const right = 12;
  const top = 28;
  const bottom = 40;
  const pw = w - left - right;
  const ph = h - top - bottom;
  const ys = panel.series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => Number.isFinite(v) && v > 0);
  const xmin = Math.min(...xs);
  const xmax = Math.max(...xs);
  const lx = (x: number) => (xmax === xmin ? pw / 2 : ((Math.log(x) - Math.log(xmin)) / (Math.log(xmax) - Math.log(xmin))) * pw);
  let yTicks: number[];
  let ly: (y: number) => number;
  if (ys.length === 0) {
    yTicks = [];
    ly = () => ph;
  } else if (panel.logY) {
    const lo = 10 ** Math.floor(Math.log10(Math.min(...ys)));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...ys)));
    yTicks = logTicks(lo, hi);
    ly = (y) => ph - ((Math.log(y) - Math.log(lo)) / (Math.log(hi) - Math.log(lo) || 1)) * ph;
  } else {
    yTicks = linearTicks(Math.max(...ys) * 1.05);
    const hi = yTicks[yTicks.length - 1] || 1;
    ly = (y) => ph - (y / hi) * ph;
  }
  const parts: string[] = [];
  parts.push(`<g class="panel" data-metric="${escapeXml(panel.metric)}" transform="translate(${x0},${y0})">`);
  parts.push(`<text x="${left + pw / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(panel.title)}</text>`);
  parts.push(`<g transform="translate(${left},${top})">`);
  parts.push(`<rect x="0" y="0" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (const t of yTicks) {
    const y = num(ly(t));
    parts.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="-6" y="${y}" dy="4" text-anchor="end" font-size="10">${formatTick(t)}</text>`);
  }
  for (const x of xs) {
    const px = num(lx(x));
    parts.push(`<line x1="${px}" x2="${px}" y1="0" y2="${ph}" stroke="#f0f0f0"/>`);
    parts.push(`<text x="${px}" y="${ph + 14}" text-anchor="middle" font-size="10">${formatContext(x)}</text>`);
  }
  parts.push(`<text x="${pw / 2}" y="${ph + 32}" text-anchor="middle" font-size="11">context length (tokens, log scale)</text>`);
  parts.push(`<text transform="translate(-44,${ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${escapeXml(panel.yLabel)}</text>`);
  for (const s of panel.series) {
    const pts = s.points.filter(([, y]) => Number.isFinite(y) && (!panel.logY || y > 0)).map(([x, y]) => [num(lx(x)), num(ly(y))]);
    const color = colorOf(s.id);
    parts.push(`<g class="series" data-contender="${escapeXml(s.id)}" data-metric="${escapeXml(panel.metric)}" data-points="${pts.length}">`);
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((p) => p.join(',')).join(' ')}"/>`);
    for (const [x, y] of pts) parts.push(`<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`);
    parts.push('</g>');
  }
  parts.push('</g></g>');
  return parts.join('\n');
}

/** A plot of several panels side by side with one shared legend below them. */
export function renderPlot(title: string, subtitle: string, panels: Panel[], xs: number[]): string {
  const pw = 330;
  const ph = 300;
  const ids: { id: string; label: string }[] = [];
  for (const p of panels) for (const s of p.series) if (!ids.some((i) => i.id === s.id)) ids.push({ id: s.id, label: s.label });
  const colorOf = (id: string) => COLORS[ids.findIndex((i) => i.id === id) % COLORS.length];
  const width = pw * panels.length + 20;
  const legendRows = Math.ceil(ids.length / 2);
  const height = 52 + ph + 16 + legendRows * 18 + 10;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`);
  out.push(`<text x="${width / 2}" y="38" text-anchor="middle" font-size="11" fill="#555">${escapeXml(subtitle)}</text>`);
  panels.forEach((p, i) => out.push(panelSvg(p, 10 + i * pw, 48, pw, ph, xs, colorOf)));
  out.push(`<g class="legend" transform="translate(${20},${48 + ph + 16})">`);
  ids.forEach((s, i) => {
    const x = (i % 2) * (width / 2);
    const y = Math.floor(i / 2) * 18;
    out.push(`<g class="legend-item" data-contender="${escapeXml(s.id)}"><line x1="${x}" x2="${x + 22}" y1="${y}" y2="${y}" stroke="${colorOf(s.id)}" stroke-width="3"/><text x="${x + 28}" y="${y + 4}" font-size="11">${escapeXml(s.label)}</text></g>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** The bench plot: prefill tokens/s, decode tokens/s and peak resident memory against context. */
export function benchPlot(report: BenchReport): string {
  const metric = (pick: (r: BenchReport['results'][number]) => number | undefined) =>
    report.contenders.map((c) => ({
      id: c.id,
      label: c.label,
      points: report.results.filter((r) => r.contender === c.id && !r.error && pick(r) !== undefined).map((r): [number, number] => [r.context, pick(r)!]),
    }));
  const panels: Panel[] = [
    { metric: 'prefill', title: 'Prefill', yLabel: 'tokens/s (log)', logY: true, series: metric((r) => r.prefillTokensPerSecond) },
    { metric: 'decode', title: 'Decode', yLabel: 'tokens/s (log)', logY: true, series: metric((r) => r.decodeTokensPerSecond) },
    ...(report.results.some((r) => typeof r.decodeCpuMsPerToken === 'number')
      ? [{ metric: 'decode-cpu', title: 'Decode CPU time', yLabel: 'CPU ms per token (log)', logY: true, series: metric((r) => r.decodeCpuMsPerToken) }]
      : []),
    { metric: 'memory', title: 'Peak resident memory', yLabel: 'MiB', logY: false, series: metric((r) => (r.peakRssBytes === undefined ? undefined : r.peakRssBytes / 2 ** 20)) },
  ];
  if (report.results.some((r) => typeof r.deviceMemoryBytes === 'number')) {
    panels.push({ metric: 'device-memory', title: 'Device memory', yLabel: 'MiB', logY: false, series: metric((r) => (typeof r.deviceMemoryBytes === 'number' ? r.deviceMemoryBytes / 2 ** 20 : undefined)) });
  }
  const m = report.model;
  const title = `titan bench: ${path(m.source)} (${m.layers} layers, hidden ${m.hidden}) on ${report.provider}, ${report.dtype}`;
  const subtitle = `${report.machine.cpu}, ${report.machine.cores} cores · ${report.createdAt.slice(0, 10)} · decode ${report.settings.decodeTokens} tokens after each context`;
  return renderPlot(title, subtitle, panels, report.settings.contexts);
}

function path(p: string): string {
  return p.split(/[\\/]/).filter(Boolean).pop() ?? p;
}
