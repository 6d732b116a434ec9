// Memory use while ingesting a large synthetic workspace: `titan memory` runs as a child process
// with a small generated Titan model, and its resident set size is sampled against the stream
// position it has reached. The state is a fixed size, so RSS must stay flat as the stream grows.
//
// By default the workspace holds about 400,000 tokens (a couple of minutes on CI's two cores);
// TITAN_MEMORY_SCALE_TOKENS=2000000 runs the acceptance size (2 million tokens).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileStreamText } from '../../engine/memory/stream';
import type { MemoryStats } from '../../engine/memory/workspace-memory';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { spawnTitan, tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';

const TARGET_TOKENS = Number(process.env.TITAN_MEMORY_SCALE_TOKENS ?? 400_000);
const LINES = 60;

let tmp: string;
let pkg: string;
let ws: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-scale-'));
  pkg = await tinyTitanPackage(path.join(tmp, 'model'), { max_self_attn_length: 64, max_chunk_size: 128 }, { minimal: true });
  ws = path.join(tmp, 'ws');
  // Files of the same shape tokenize alike: size the workspace from one of them.
  const probe = writeSyntheticWorkspace(path.join(tmp, 'probe'), { count: 1, lines: LINES })[0];
  const tokensPerFile = loadTokenizer(pkg).encode(fileStreamText(probe.rel, fs.readFileSync(probe.abs, 'utf8')), { addSpecialTokens: false }).length;
  writeSyntheticWorkspace(ws, { count: Math.ceil((TARGET_TOKENS * 1.02) / tokensPerFile), lines: LINES });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

it(`keeps resident memory flat while ingesting ${TARGET_TOKENS.toLocaleString('en')} tokens`, { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const storage = path.join(tmp, 'storage');
  const child = spawnTitan(['memory', pkg, '--workspace', ws, '--storage', storage, '--checkpoint-every', '8192', '--provider', 'cpu', '--json']);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  let code: number | null = null;
  let done = false;
  child.on('exit', (c) => {
    code = c;
    done = true;
  });
  // (stream position reached, RSS) pairs; the position is read from the newest checkpoint's name.
  const samples: { position: number; rss: number }[] = [];
  let memDir: string | null = null;
  while (!done) {
    await sleep(200);
    const rss = rssBytes(child.pid!);
    if (rss === null) continue;
    memDir ??= fs.existsSync(storage) ? (fs.readdirSync(storage).map((d) => path.join(storage, d)).find((d) => fs.statSync(d).isDirectory()) ?? null) : null;
    const positions = memDir ? fs.readdirSync(memDir).filter((f) => /^state-\d+\.bin$/.test(f)).map((f) => Number(f.slice(6, -4))) : [];
    samples.push({ position: positions.length ? Math.max(...positions) : 0, rss });
  }
  assert.equal(code, 0, Buffer.concat(err).toString('utf8'));
  const stats = JSON.parse(Buffer.concat(out).toString('utf8')) as MemoryStats;
  assert.ok(stats.tokensIngested >= TARGET_TOKENS, `${stats.tokensIngested} tokens ingested`);

  const total = stats.tokensIngested;
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const peakBetween = (from: number, to: number): number => Math.max(0, ...samples.filter((s) => s.position >= from * total && s.position <= to * total).map((s) => s.rss));
  const marks = [0.1, 0.25, 0.5, 0.75, 1].map((f) => `${Math.round(f * 100)}%: ${mib(peakBetween(f - 0.1, f))}`);
  const early = peakBetween(0.05, 0.35);
  const late = peakBetween(0.65, 1);
  const peak = Math.max(...samples.map((s) => s.rss));
  t.diagnostic(`${total} tokens in ${stats.seconds.toFixed(0)} s (${stats.tokensPerSecond.toFixed(0)} tokens/s), ${stats.filesRead} files, state ${stats.stateBytes} bytes, checkpoints ${stats.checkpointBytes} bytes (${stats.checkpoints})`);
  t.diagnostic(`peak RSS by share of the stream read: ${marks.join(', ')}; overall ${mib(peak)}`);
  assert.ok(early > 0 && late > 0, `too few samples (${samples.length})`);
  // Flat: the last third of the stream needs no more memory than the first third, within allocator noise.
  assert.ok(late <= early + 48 * 2 ** 20, `RSS grew from ${mib(early)} to ${mib(late)} as the stream grew`);
  assert.ok(peak < 1024 * 2 ** 20, `peak RSS ${mib(peak)}`);
});
