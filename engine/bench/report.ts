// The bench's outputs: a terminal table, report.json, report.md (machine, settings, exact commands,
// results, ratios, acceptance checks) and plot.svg.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatContext, type BenchCell, type BenchReport } from './run';
import { benchPlot } from './svg';

const mib = (b: number | null | undefined) => (typeof b === 'number' ? `${(b / 2 ** 20).toFixed(0)}` : '–');
const fixed = (v: number | null | undefined, digits: number) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–');

function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
}

function resultRow(r: BenchCell): string[] {
  if (r.error) return [formatContext(r.context), r.contender, '–', '–', '–', '–', '–', '–', '–', r.error];
  return [formatContext(r.context), r.contender, fixed(r.prefillTokensPerSecond, 0), fixed(r.decodeMsPerToken, 2), fixed(r.decodeTokensPerSecond, 1), fixed(r.prefillCpuMsPerToken, 2), fixed(r.decodeCpuMsPerToken, 2), mib(r.peakRssBytes), mib(r.deviceMemoryBytes), ''];
}

const RESULT_HEADER = ['context', 'contender', 'prefill tok/s', 'decode ms/tok', 'decode tok/s', 'prefill CPU ms/tok', 'decode CPU ms/tok', 'peak RSS MiB', 'device MiB', 'note'];
const RESULT_ALIGN: ('l' | 'r')[] = ['r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'];
const RATIO_HEADER = ['context', 'Titan', 'against', 'decode ×', 'prefill ×', 'decode × (CPU)', 'prefill × (CPU)', 'memory ÷'];
const RATIO_ALIGN: ('l' | 'r')[] = ['r', 'l', 'l', 'r', 'r', 'r', 'r', 'r'];
const ratioRow = (r: BenchReport['ratios'][number]) => [formatContext(r.context), r.contender, r.against, fixed(r.decode, 2), fixed(r.prefill, 2), fixed(r.decodeCpu, 2), fixed(r.prefillCpu, 2), fixed(r.memory, 2)];

/** The plain-text table `titan bench` prints. */
export function formatTable(report: BenchReport): string {
  const lines = table(RESULT_HEADER, report.results.map(resultRow), RESULT_ALIGN);
  if (report.ratios.length) {
    lines.push('');
    lines.push(...table(RATIO_HEADER, report.ratios.map(ratioRow), RATIO_ALIGN));
  }
  return lines.join('\n') + '\n';
}

function mdTable(header: string[], rows: string[][], align: ('l' | 'r')[]): string[] {
  return [`| ${header.join(' | ')} |`, `|${align.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`, ...rows.map((r) => `| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`)];
}

export function formatMarkdown(report: BenchReport): string {
  const m = report.machine;
  const out: string[] = [];
  out.push('# Titan benchmark report', '');
  out.push(`Produced by \`titan bench\` on ${report.createdAt} (${report.seconds.toFixed(0)} s). Every contender ran on the same token stream, in the same run, one process per contender and context; ratios compare figures of this run only.`, '');
  if (!report.complete) out.push(`> **Partial report**: ${report.measurements.done} of ${report.measurements.planned} measurements so far (written along the way; the run was still going or was stopped).`, '');
  out.push('![tokens/s and memory against context length](plot.svg)', '');
  out.push('## Machine', '');
  out.push(
    ...mdTable(
      ['', ''],
      [
        ['CPU', `${m.cpu} (${m.cores} cores)`],
        ['memory', `${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB`],
        ['GPU', m.gpus.length ? m.gpus.join('; ') : 'none'],
        ['OS', m.os],
        ['Node', m.node],
        ['onnxruntime-node', m.onnxruntime],
        ['@huggingface/transformers', m.transformersJs ?? 'not installed'],
        ['execution provider', report.provider],
        ['dtype', report.dtype],
        ['threads', report.threads === null ? 'onnxruntime default (all cores)' : String(report.threads)],
        ['load average at start', m.loadAverage.join(', ')],
      ],
      ['l', 'l'],
    ),
    '',
  );
  for (const n of report.notes) out.push(`> ${n}`, '');
  const md = report.model;
  out.push('## Model and stream', '');
  out.push(`- model: \`${md.source}\` — ${md.modelType}, ${md.layers} layers, hidden ${md.hidden}, ${md.heads} heads / ${md.kvHeads} KV heads, vocabulary ${md.vocab}${md.parameters ? `, ${(md.parameters / 1e6).toFixed(1)}M parameters` : ''}${md.synthetic ? ' (synthetic: random weights with a real model\'s shapes)' : ''}`);
  out.push(`- stream: ${report.stream.tokens} tokens of ${report.stream.source}; every context is a prefix of it`);
  out.push(`- prefill in calls of ${report.settings.prefillChunk} tokens (logits for the last token only); decode: ${report.settings.decodeTokens} greedy tokens after each context, one per call`);
  out.push('- peak RSS: the measuring process\'s high-water mark (getrusage, and /proc sampling every 50 ms), model weights included');
  out.push('- CPU ms/token: CPU time of the measuring process (every thread) per token; unlike wall time, other work on the machine barely changes it', '');
  out.push('## Contenders', '');
  out.push(...mdTable(['id', 'what', 'made by'], report.contenders.map((c) => [c.id, c.label, c.command ? `\`${c.command}\`` : `prebuilt: ${c.dir}`]), ['l', 'l', 'l']), '');
  out.push('## Results', '');
  out.push(...mdTable(RESULT_HEADER, report.results.map(resultRow), RESULT_ALIGN), '');
  if (report.ratios.length) {
    out.push('## Ratios (same run)', '');
    out.push('decode × = their ms/token ÷ Titan\'s; prefill × = Titan\'s tokens/s ÷ theirs; the (CPU) columns divide CPU time per token instead of wall time; memory ÷ = Titan\'s peak RSS ÷ theirs.', '');
    out.push(...mdTable(RATIO_HEADER, report.ratios.map(ratioRow), RATIO_ALIGN), '');
  }
  if (report.quality?.length) {
    const q = report.quality[0];
    out.push('## Quality (same packages)', '');
    out.push(`Held-out negative log-likelihood of \`${q.file}\` (nats/token; context ${q.context ?? 'unbounded'}), as \`titan perplexity\` computes it, by position of the predicted token in its context.`, '');
    const names = q.buckets.map((b) => b.name);
    out.push(...mdTable(['contender', 'tokens', 'NLL', 'perplexity', ...names.map((n) => `NLL ${n}`)], report.quality.map((r) => [r.contender, String(r.tokens), r.error ? r.error : fixed(r.nll, 4), fixed(r.perplexity, 3), ...names.map((n) => fixed(r.buckets.find((b) => b.name === n)?.nll, 4))]), ['l', 'r', 'r', 'r', ...names.map((): 'r' => 'r')]), '');
  }
  if (report.checks.length) {
    out.push('## Acceptance figures (issue 6, CPU)', '');
    out.push(...mdTable(['criterion', 'measured', 'needed', 'result'], report.checks.map((c) => [c.criterion, fixed(c.measured, 2), `${c.criterion.includes('÷') ? '≤' : '≥'} ${c.threshold}`, c.pass === null ? 'not measured' : c.pass ? 'pass' : 'FAIL']), ['l', 'r', 'r', 'l']), '');
  }
  out.push('## Command', '');
  out.push('```sh', report.command, '```', '');
  return out.join('\n');
}

/** Writes report.json, report.md and plot.svg into `dir`; returns their paths. */
export function writeReports(report: BenchReport, dir: string): { json: string; markdown: string; plot: string } {
  fs.mkdirSync(dir, { recursive: true });
  const files = { json: path.join(dir, 'report.json'), markdown: path.join(dir, 'report.md'), plot: path.join(dir, 'plot.svg') };
  const json = JSON.stringify(report, null, 2) + '\n';
  if (!fs.existsSync(files.json) || fs.readFileSync(files.json, 'utf8') !== json) fs.writeFileSync(files.json, json);
  fs.writeFileSync(files.markdown, formatMarkdown(report));
  fs.writeFileSync(files.plot, benchPlot(report));
  return files;
}
