// The memory's caps (engine/limits.ts) reached in a real `titan memory` process: a workspace far
// larger than the file cap, a file far larger than the size cap (2 GiB, sparse), files past the
// stream's token cap, checkpoints past the storage cap. Each run must succeed, skip or stop with a
// reason and a notice that names the cap, stay within bounded memory, and stay stable (a second run
// neither re-reads nor changes anything). Bad cap values are one-line usage errors.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { DEFAULT_MEMORY_LIMITS } from '../../engine/limits';
import type { MemoryStats } from '../../engine/memory/workspace-memory';
import { syntheticSource, tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';
import { CLI_BUNDLE, ensureEngineBundle } from './engine-bundle';
import { tracked } from './record';

const FILE = 'limits';
const MAX_RSS = path.join(__dirname, 'max-rss.cjs');
/** Peak memory a run may reach: far below the 2 GiB file, far above the engine's own ~200 MiB. */
const RSS_BOUND_KIB = 1024 * 1024;
let tmp = '';
let pkg = '';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Peak resident memory, KiB. */
  maxRss: number;
}

function titan(args: string[]): Promise<Run> {
  const rssFile = path.join(tmp, `rss-${Math.random().toString(36).slice(2)}`);
  const child = spawn(process.execPath, ['--require', MAX_RSS, CLI_BUNDLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TITAN_MAX_RSS_FILE: rssFile } });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    const maxRss = fs.existsSync(rssFile) ? Number(fs.readFileSync(rssFile, 'utf8')) : NaN;
    resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), maxRss });
  }));
}

async function memory(ws: string, storage: string, extra: string[]): Promise<{ stats: MemoryStats; run: Run }> {
  const run = await titan(['memory', pkg, '--workspace', ws, '--storage', storage, '--provider', 'cpu', '--json', ...extra]);
  assert.equal(run.code, 0, run.stderr);
  assert.ok(run.maxRss < RSS_BOUND_KIB, `peak memory ${run.maxRss} KiB`);
  return { stats: JSON.parse(run.stdout) as MemoryStats, run };
}

before(async () => {
  ensureEngineBundle();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-limits-'));
  pkg = await tinyTitanPackage(path.join(tmp, 'model'), {}, { minimal: true });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('a workspace far over the file cap: discovery stops at the cap with a notice, in bounded memory', { timeout: 120_000 }, async () => {
  await tracked(FILE, {
    section: 'limits',
    name: 'huge workspace (file cap)',
    injected: '20,000 source files in 40 folders, titan memory --max-files 400',
    expected: 'success; at most 400 files in the memory; a notice naming the cap and --max-files; peak memory under 1 GiB',
  }, async (figures) => {
    const ws = path.join(tmp, 'huge-ws');
    const text = syntheticSource(1, 3);
    for (let d = 0; d < 40; d++) {
      const dir = path.join(ws, `pkg${d}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < 500; f++) fs.writeFileSync(path.join(dir, `m${f}.ts`), `${text}export const id${d}_${f} = ${f};\n`);
    }
    const storage = path.join(tmp, 'huge-storage');
    const { stats, run } = await memory(ws, storage, ['--max-files', '400']);
    assert.ok(stats.filesRead > 0 && stats.filesRead <= 400, `${stats.filesRead} files read`);
    const notice = stats.notices.find((n) => /more files than the memory's cap of 400 .*--max-files/.test(n));
    assert.ok(notice, `no file-cap notice in ${JSON.stringify(stats.notices)}`);
    assert.match(run.stderr, /notice: the workspace has more files than the memory's cap of 400/);
    Object.assign(figures, { 'files in the workspace': 20_000, 'files read': stats.filesRead, 'tokens': stats.tokensIngested, 'peak RSS MiB': Math.round(run.maxRss / 1024), 'discovery s': stats.discoverySeconds.toFixed(2) });
  });
});

it('a 2 GiB file is skipped unread, a file past the token cap is left out with a notice, and the stream stays stable', { timeout: 120_000 }, async () => {
  await tracked(FILE, {
    section: 'limits',
    name: 'huge single file, stream token cap',
    injected: 'a 2 GiB (sparse) file among 8 source files and one 60 KiB source file (the newest); titan memory --max-tokens 100 above the small files\' total',
    expected: 'the 2 GiB file skipped as too-large naming the size cap, without being read (peak memory under 1 GiB); the files past the token cap skipped as token-limit with a notice naming --max-tokens; tokens ≤ the cap; a second run re-reads nothing and keeps the same stream',
  }, async (figures) => {
    const ws = path.join(tmp, 'big-file-ws');
    const small = writeSyntheticWorkspace(ws, { count: 8, lines: 30 });
    // The small files' tokens, read alone: the cap lets exactly them in.
    const alone = (await memory(ws, path.join(tmp, 'big-file-probe'), [])).stats.tokensIngested;
    const cap = alone + 100;
    // The newest file is the big one, so it comes last in the stream order and meets the cap.
    const big = path.join(ws, 'src', 'generated-table.ts');
    fs.writeFileSync(big, syntheticSource(99, 2000));
    fs.utimesSync(big, small[small.length - 1].mtime + 100, small[small.length - 1].mtime + 100);
    const huge = path.join(ws, 'logs', 'server.log');
    fs.mkdirSync(path.dirname(huge), { recursive: true });
    const fd = fs.openSync(huge, 'w');
    fs.ftruncateSync(fd, 2 * 1024 ** 3);
    fs.closeSync(fd);
    const storage = path.join(tmp, 'big-file-storage');
    const { stats, run } = await memory(ws, storage, ['--max-tokens', String(cap)]);
    const skip = (p: string) => stats.filesSkipped.find((s) => s.path === p);
    assert.equal(skip('logs/server.log')?.reason, 'too-large');
    assert.match(skip('logs/server.log')!.detail, new RegExp(`${2 * 1024 ** 3} bytes, over the limit of ${DEFAULT_MEMORY_LIMITS.maxFileBytes}`));
    assert.equal(skip('src/generated-table.ts')?.reason, 'token-limit');
    assert.equal(stats.tokensIngested, alone);
    assert.equal(stats.filesRead, 8);
    assert.ok(stats.notices.some((n) => new RegExp(`reached its cap of ${cap} tokens .*--max-tokens.*the newest file is left out`).test(n)), JSON.stringify(stats.notices));

    const again = await memory(ws, storage, ['--max-tokens', String(cap)]);
    assert.equal(again.stats.tokensReread, 0);
    assert.equal(again.stats.position, stats.position);
    assert.equal(again.stats.filesRead, 8);
    Object.assign(figures, { 'huge file bytes': 2 * 1024 ** 3, 'token cap': cap, 'tokens in memory': stats.tokensIngested, 'peak RSS MiB': Math.round(Math.max(run.maxRss, again.run.maxRss) / 1024), 're-read by the second run': again.stats.tokensReread });
  });
});

it('checkpoints past the storage cap are thinned with a notice; one state over the cap keeps only the newest', { timeout: 120_000 }, async () => {
  await tracked(FILE, {
    section: 'limits',
    name: 'storage cap',
    injected: 'titan memory --checkpoint-every 256 with --storage-cap at 3 state sizes, and at half a state size',
    expected: 'success both times; checkpoints stay under the cap (or only the newest when one state exceeds it); a notice naming the cap and --storage-cap',
  }, async (figures) => {
    const ws = path.join(tmp, 'cap-ws');
    writeSyntheticWorkspace(ws, { count: 10, lines: 30 });
    const probe = await memory(ws, path.join(tmp, 'cap-probe'), []);
    const stateBytes = probe.stats.stateBytes;

    const thin = await memory(ws, path.join(tmp, 'cap-thin'), ['--checkpoint-every', '256', '--storage-cap', String(3 * stateBytes)]);
    assert.ok(thin.stats.checkpointBytes <= 3 * stateBytes, `${thin.stats.checkpointBytes} bytes of checkpoints`);
    assert.ok(thin.stats.checkpoints >= 2);
    assert.ok(thin.stats.notices.some((n) => /reached the memory's storage cap of .*older checkpoint\(s\) removed/.test(n)), JSON.stringify(thin.stats.notices));

    const tiny = await memory(ws, path.join(tmp, 'cap-tiny'), ['--checkpoint-every', '256', '--storage-cap', String(Math.floor(stateBytes / 2))]);
    assert.equal(tiny.stats.checkpoints, 1);
    assert.ok(tiny.stats.notices.some((n) => /larger than the memory's storage cap .*--storage-cap.*only the newest checkpoint is kept/.test(n)), JSON.stringify(tiny.stats.notices));
    Object.assign(figures, { 'state bytes': stateBytes, 'checkpoints kept at 3 states': thin.stats.checkpoints, 'checkpoint bytes at 3 states': thin.stats.checkpointBytes, 'checkpoints kept at half a state': tiny.stats.checkpoints });
  });
});

it('cap values that make no sense are one-line errors', { timeout: 60_000 }, async () => {
  await tracked(FILE, {
    section: 'limits',
    name: 'invalid cap values',
    injected: 'titan memory --max-files 0, --max-tokens -5, --storage-cap 1.5, --max-file-bytes abc',
    expected: 'each exits non-zero with one line naming the option; nothing is written',
  }, async (figures) => {
    const ws = path.join(tmp, 'cap-ws');
    const cases = [['--max-files', '0'], ['--max-tokens', '-5'], ['--storage-cap', '1.5'], ['--max-file-bytes', 'abc']];
    for (const [flag, value] of cases) {
      const storage = path.join(tmp, `bad-${flag.slice(2)}`);
      const r = await titan(['memory', pkg, '--workspace', ws, '--storage', storage, '--provider', 'cpu', `${flag}=${value}`]);
      assert.notEqual(r.code, 0);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^titan memory: ${flag} must be an integer`));
      assert.ok(!fs.existsSync(storage), `${storage} was created`);
    }
    figures['values tried'] = cases.length;
  });
});
