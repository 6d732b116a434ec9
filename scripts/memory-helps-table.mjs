#!/usr/bin/env node
// The comparison table of scripts/memory-helps.sh: `titan perplexity --json` lines (one per held-out
// file) per model → token-weighted NLL per position bucket, and the differences that answer "does the
// memory help?" (the Titan arm against the control aligned with the same recipe, and against its own
// adapter with μ = 0).
//
//   node scripts/memory-helps-table.mjs name=ppl-name.jsonl …
import * as fs from 'node:fs';

const BEYOND = ['512-4k', '4k+'];

function usage(message) {
  process.stderr.write(`memory-helps-table: ${message}\nusage: node scripts/memory-helps-table.mjs name=ppl.jsonl …\n`);
  process.exit(2);
}

/** Token-weighted NLL over the files, overall and per bucket; the files scored (path → tokens). */
function summarize(name, file) {
  let lines;
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  } catch (e) {
    usage(`cannot read ${file} (${e.code ?? e.message})`);
  }
  if (lines.length === 0) usage(`${file} holds no perplexity results`);
  const buckets = new Map();
  const files = new Map();
  let sum = 0;
  let tokens = 0;
  for (const [i, line] of lines.entries()) {
    let r;
    try {
      r = JSON.parse(line);
    } catch {
      usage(`${file}:${i + 1} is not JSON`);
    }
    if (!Array.isArray(r.buckets) || typeof r.nll !== 'number') usage(`${file}:${i + 1} is not a titan perplexity --json result`);
    files.set(r.file, r.tokens);
    sum += r.nll * r.tokens;
    tokens += r.tokens;
    for (const b of r.buckets) {
      const acc = buckets.get(b.name) ?? { sum: 0, tokens: 0 };
      if (b.tokens > 0) {
        acc.sum += b.nll * b.tokens;
        acc.tokens += b.tokens;
      }
      buckets.set(b.name, acc);
    }
  }
  return { name, nll: sum / tokens, tokens, files, buckets: new Map([...buckets].map(([k, v]) => [k, v.tokens ? v.sum / v.tokens : NaN])), bucketTokens: new Map([...buckets].map(([k, v]) => [k, v.tokens])) };
}

const args = process.argv.slice(2);
if (args.length === 0) usage('no results given');
const models = args.map((a) => {
  const m = /^([^=]+)=(.+)$/.exec(a);
  if (!m) usage(`"${a}" is not name=file.jsonl`);
  return summarize(m[1], m[2]);
});
// Every model must have scored the same files to the same token counts, or the comparison is void.
const ref = models[0];
for (const m of models.slice(1)) {
  const same = m.files.size === ref.files.size && [...ref.files].every(([f, n]) => m.files.get(f) === n);
  if (!same) usage(`${m.name} scored other files or token counts than ${ref.name}`);
}

const bucketNames = [...ref.buckets.keys()];
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(3) : '–');
const signed = (x) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(3)}` : '–');
const out = [];
out.push(`${ref.files.size} held-out files, ${ref.tokens} scored tokens (${bucketNames.map((b) => `${b}: ${ref.bucketTokens.get(b)}`).join(', ')}); NLL in nats/token, token-weighted over the files`);
out.push('');
out.push(`| model | NLL | ${bucketNames.join(' | ')} |`);
out.push(`|---|---|${bucketNames.map(() => '---').join('|')}|`);
for (const m of models) out.push(`| ${m.name} | ${fmt(m.nll)} | ${bucketNames.map((b) => fmt(m.buckets.get(b))).join(' | ')} |`);

const byName = new Map(models.map((m) => [m.name, m]));
const diff = (a, b, label) => {
  const x = byName.get(a);
  const y = byName.get(b);
  if (!x || !y) return;
  out.push(`| ${label} | ${signed(x.nll - y.nll)} | ${bucketNames.map((k) => signed(x.buckets.get(k) - y.buckets.get(k))).join(' | ')} |`);
};
// Titan arms: "titan-aligned" alone, or one per μ ("titan-aligned_mu0.05" …) when several were aligned.
const tags = models.map((m) => /^titan-aligned(_mu.+)?$/.exec(m.name)).filter(Boolean).map((m) => m[1] ?? '');
out.push('');
out.push(`| difference (negative: the first is better) | NLL | ${bucketNames.join(' | ')} |`);
out.push(`|---|---|${bucketNames.map(() => '---').join('|')}|`);
for (const t of tags) {
  diff(`titan-aligned${t}`, 'control-aligned', `titan-aligned${t} − control-aligned (the fair test)`);
  diff(`titan-aligned${t}`, `titan-aligned-mu0${t}`, `titan-aligned${t} − its adapter at μ 0 (the memory in the aligned weights)`);
  diff(`titan-aligned${t}`, 'window', `titan-aligned${t} − window (the issue’s wording)`);
}
diff('control-aligned', 'window', 'control-aligned − window (what the LoRA alone buys)');
for (const m of models) {
  const t = /^titan-before(_mu.+)?$/.exec(m.name);
  if (t) diff(m.name, 'window', `${m.name} − window (the memory before alignment)`);
}

const control = byName.get('control-aligned');
for (const t of control ? tags : []) {
  const titan = byName.get(`titan-aligned${t}`);
  const deltas = BEYOND.filter((b) => ref.buckets.has(b)).map((b) => [b, titan.buckets.get(b) - control.buckets.get(b)]);
  const helps = deltas.length > 0 && deltas.every(([, d]) => d < 0);
  out.push('');
  out.push(`memory helps past the window${t ? ` (μ ${t.slice(3)})` : ''}: ${helps ? 'yes' : 'no'} (titan-aligned${t} − control-aligned: ${deltas.map(([b, d]) => `${b} ${signed(d)}`).join(', ')})`);
}
process.stdout.write(out.join('\n') + '\n');
