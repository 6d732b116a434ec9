// Interleaved A/B timing of packages in one process: round after round, every package prefills the same
// context and decodes the same number of greedy tokens; the median over rounds is reported. On a shared
// machine whose load swings minute to minute, interleaving puts every package under the same load,
// which one-shot measurements (titan bench runs each contender once) cannot.
//
//   node --import tsx scripts/decode-ab.ts [--rounds 7] [--context 1024] [--decode 32] [--threads 1] id=DIR …
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadTokenizer } from '../engine/model/tokenizer';
import { ModelRunner } from '../engine/runtime/session';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rounds: { type: 'string', default: '7' }, context: { type: 'string', default: '1024' }, decode: { type: 'string', default: '32' }, threads: { type: 'string', default: '1' } },
});
const rounds = Number(values.rounds);
const context = Number(values.context);
const decodeTokens = Number(values.decode);
const threads = Number(values.threads);
const packages = positionals.map((p) => {
  const eq = p.indexOf('=');
  if (eq < 1) throw new Error(`expected id=DIR, got ${p}`);
  return { id: p.slice(0, eq), dir: p.slice(eq + 1) };
});
if (!packages.length || ![rounds, context, decodeTokens, threads].every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write('usage: decode-ab.ts [--rounds N] [--context N] [--decode N] [--threads N] id=DIR …\n');
  process.exit(2);
}

/** The stream the bench uses by default: the engine's own sources, repeated. */
function stream(tokens: number, tokenizerDir: string): number[] {
  const root = path.join(__dirname, '..', 'engine');
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.name.endsWith('.ts')) files.push(path.join(dir, e.name));
    }
  };
  walk(root);
  const ids = loadTokenizer(tokenizerDir).encode(files.map((f) => fs.readFileSync(f, 'utf8')).join('\n'));
  const out: number[] = [];
  while (out.length < tokens) out.push(...ids.slice(0, tokens - out.length));
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};

async function main(): Promise<void> {
  const ids = stream(context, packages[0].dir);
  const models = [];
  for (const p of packages) models.push(await ModelRunner.open(p.dir, { provider: 'cpu', threads }));
  const samples = packages.map(() => ({ decodeWall: [] as number[], decodeCpu: [] as number[], prefillWall: [] as number[], prefillCpu: [] as number[] }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, model] of models.entries()) {
      model.reset();
      let c0 = process.cpuUsage();
      let t0 = performance.now();
      for (let at = 0; at < ids.length; at += 512) {
        const part = ids.slice(at, at + 512);
        await model.forward(part, [part.length - 1]);
      }
      samples[i].prefillWall.push((performance.now() - t0) / ids.length);
      samples[i].prefillCpu.push(cpuMs(c0) / ids.length);
      let next = ids[ids.length - 1];
      c0 = process.cpuUsage();
      t0 = performance.now();
      for (let k = 0; k < decodeTokens; k++) {
        const [row] = await model.forward([next], [0]);
        let best = 0;
        for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
        next = best;
      }
      samples[i].decodeWall.push((performance.now() - t0) / decodeTokens);
      samples[i].decodeCpu.push(cpuMs(c0) / decodeTokens);
    }
  }
  for (const m of models) await m.release();
  const [first] = samples;
  process.stdout.write(`context ${context}, ${decodeTokens} decoded tokens, ${rounds} interleaved rounds, ${threads} thread(s); medians (× = speed against ${packages[0].id})\n`);
  process.stdout.write('id'.padEnd(24) + 'decode ms/tok  CPU ms/tok   ×wall  ×CPU | prefill tok/s  CPU ms/tok   ×wall  ×CPU\n');
  for (const [i, p] of packages.entries()) {
    const s = samples[i];
    const cols = [
      median(s.decodeWall).toFixed(2).padStart(13),
      median(s.decodeCpu).toFixed(2).padStart(11),
      (median(first.decodeWall) / median(s.decodeWall)).toFixed(2).padStart(7),
      (median(first.decodeCpu) / median(s.decodeCpu)).toFixed(2).padStart(5),
      '|',
      (1000 / median(s.prefillWall)).toFixed(0).padStart(13),
      median(s.prefillCpu).toFixed(3).padStart(11),
      (median(first.prefillWall) / median(s.prefillWall)).toFixed(2).padStart(7),
      (median(first.prefillCpu) / median(s.prefillCpu)).toFixed(2).padStart(5),
    ];
    process.stdout.write(p.id.padEnd(24) + cols.join(' ') + '\n');
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(1);
});
