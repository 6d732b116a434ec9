// Workspace memory with a small generated Titan model: restoring without re-reading, incremental
// updates that equal a full re-read (states and probe logits), cancellation, questions during an
// update, damaged storage, the storage cap, bad workspaces, and the errors users can run into.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ModelRunner } from '../../engine/runtime/session';
import { titanize } from '../../engine/titanize/titanize';
import { writePackage } from '../../engine/titanize/package';
import { UpdateCancelledError, WorkspaceMemory, type MemoryOptions, type MemoryStats } from '../../engine/memory/workspace-memory';
import {
  memoryDirIn, readStoredMemory, runTitan, setMtime, snapshotTree, stateDifference, syntheticSource, tinyTitanPackage, writeSyntheticWorkspace, REPO, TEST_MAG_WEIGHT,
} from '../helpers/workspace';

let tmp: string;
let pkg: string;
let pkgLegacy: string;
let n = 0;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-'));
  // The smallest generated model: these tests are about the stream and the storage, not the weights
  // (the kill test runs a 2-layer model, the question tests the demo model).
  pkg = await tinyTitanPackage(path.join(tmp, 'model'), { max_chunk_size: 32 }, { minimal: true });
  pkgLegacy = await tinyTitanPackage(path.join(tmp, 'model-legacy'), { max_chunk_size: 32, semantics: 'tptt-0.12' }, { minimal: true });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function fresh(label: string): { ws: string; storage: string } {
  const base = path.join(tmp, `${label}-${n++}`);
  fs.mkdirSync(base, { recursive: true });
  return { ws: path.join(base, 'ws'), storage: path.join(base, 'storage') };
}

async function withMemory<T>(options: MemoryOptions, fn: (m: WorkspaceMemory) => Promise<T>): Promise<T> {
  const m = await WorkspaceMemory.open({ provider: 'cpu', ...options });
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}

function build(options: MemoryOptions): Promise<MemoryStats> {
  return withMemory(options, (m) => m.update());
}

/** Next-token logits after `probe`, starting from a stored state. */
async function probeLogits(packageDir: string, blob: Uint8Array, probe: string): Promise<Float32Array> {
  const runner = await ModelRunner.open(packageDir, { provider: 'cpu' });
  try {
    runner.loadState(blob);
    const ids = loadTokenizer(packageDir).encode(probe, { addSpecialTokens: false });
    const [logits] = await runner.forward(ids, [ids.length - 1]);
    return logits;
  } finally {
    await runner.release();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Stream start of each file, from the manifest. */
function fileStarts(files: { path: string; tokens: number }[]): Map<string, number> {
  const out = new Map<string, number>();
  let pos = 0;
  for (const f of files) {
    out.set(f.path, pos);
    pos += f.tokens;
  }
  return out;
}

describe('restoring', () => {
  it('re-reads nothing when nothing changed, in the same session and after reopening', async () => {
    const { ws, storage } = fresh('restore');
    writeSyntheticWorkspace(ws, { count: 12, lines: 30 });
    const options = { packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 1024 };
    await withMemory(options, async (m) => {
      assert.equal(m.status().fresh, false);
      const first = await m.update();
      assert.equal(first.filesRead, 12);
      assert.equal(first.restoredFromCheckpoint, false);
      assert.equal(first.tokensReread, first.tokensIngested);
      assert.ok(first.tokensIngested > 5000, `${first.tokensIngested} tokens`);
      assert.ok(first.checkpoints >= 2 && Math.abs(first.checkpointBytes - first.checkpoints * first.stateBytes) < first.checkpoints * 64, `${first.checkpoints} checkpoints, ${first.checkpointBytes} bytes`);
      const second = await m.update();
      assert.equal(second.tokensReread, 0);
      assert.equal(second.restoredFromCheckpoint, true);
      assert.equal(second.position, first.position);
      const st = m.status();
      assert.equal(st.fresh, true);
      assert.equal(st.position, first.position);
      assert.equal(st.files, 12);
      assert.equal(st.provider, 'cpu');
      assert.match(st.packageKey, /^[0-9a-f]{32}$/);
      assert.ok(st.lastUpdate && !Number.isNaN(Date.parse(st.lastUpdate)));
    });
    const stored = readStoredMemory(memoryDirIn(storage));
    const before = stored.last();
    const files = snapshotTree(memoryDirIn(storage));
    const manifestTime = fs.statSync(path.join(memoryDirIn(storage), 'manifest.json')).mtimeMs;
    await withMemory(options, async (m) => {
      // Reopening restores the newest checkpoint before any update.
      assert.equal(m.status().position, stored.manifest.checkpoints.at(-1)!.position);
      const again = await m.update();
      assert.equal(again.tokensReread, 0);
      assert.equal(again.restoredFromCheckpoint, true);
      assert.equal(again.filesRead, 12);
      // A watcher reporting the memory's own files changes nothing either.
      const own = await m.update({ changedPaths: [path.join(memoryDirIn(storage), 'manifest.json')] });
      assert.equal(own.tokensReread, 0);
    });
    assert.ok(readStoredMemory(memoryDirIn(storage)).last().equals(before));
    // An update without changes writes nothing.
    const now = snapshotTree(memoryDirIn(storage));
    now.delete('.lock-owner');
    files.delete('.lock-owner');
    assert.deepEqual([...now.keys()].sort(), [...files.keys()].sort());
    for (const [name, bytes] of files) assert.ok(bytes.equals(now.get(name)!), `${name} was rewritten`);
    assert.equal(fs.statSync(path.join(memoryDirIn(storage), 'manifest.json')).mtimeMs, manifestTime);
  });

  it('keeps the storage folder out of the stream when it sits inside the workspace, and git-ignores it', async () => {
    const { ws } = fresh('inside');
    writeSyntheticWorkspace(ws, { count: 3, lines: 10 });
    const storage = path.join(ws, '.titan', 'memory');
    const first = await build({ packageDir: pkg, workspaces: [ws], storageDir: storage });
    assert.equal(first.filesRead, 3);
    const second = await build({ packageDir: pkg, workspaces: [ws], storageDir: storage });
    assert.equal(second.filesRead, 3);
    assert.equal(second.tokensReread, 0);
    assert.equal(fs.readFileSync(path.join(storage, '.gitignore'), 'utf8').split('\n').includes('*'), true);
  });
});

describe('incremental updates equal a full read', () => {
  for (const semantics of ['exact', 'tptt-0.12'] as const) {
    it(`after editing a file in the middle of the order (${semantics})`, async () => {
      const packageDir = semantics === 'exact' ? pkg : pkgLegacy;
      const { ws, storage } = fresh(`incr-${semantics}`);
      const files = writeSyntheticWorkspace(ws, { count: 24, lines: 24 });
      const options = { packageDir, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 512 };
      const full1 = await build(options);
      const memDir = memoryDirIn(storage);
      const beforeEdit = readStoredMemory(memDir).manifest;
      const edited = files[9];
      const oldStart = fileStarts(beforeEdit.files).get(edited.rel)!;
      const expectedResume = Math.max(0, ...beforeEdit.checkpoints.map((c) => c.position).filter((p) => p <= oldStart));

      fs.appendFileSync(edited.abs, 'export const edited = 1;\n');
      setMtime(edited.abs, files[files.length - 1].mtime + 100);
      const incr = await build(options);
      assert.equal(incr.restoredFromCheckpoint, true);
      assert.equal(incr.resumedFrom, expectedResume);
      const after = readStoredMemory(memDir);
      const starts = fileStarts(after.manifest.files);
      // The edited file moved to the end; everything from its old place on was read again, nothing before.
      assert.equal(after.manifest.files[after.manifest.files.length - 1].path, edited.rel);
      assert.equal(incr.tokensReread, incr.tokensIngested - expectedResume);
      assert.ok(expectedResume <= oldStart && oldStart - expectedResume < 512 + 512, `resumed ${oldStart - expectedResume} tokens before the edited file`);
      assert.ok(incr.tokensReread < full1.tokensIngested * 0.75, `${incr.tokensReread} of ${incr.tokensIngested} re-read`);
      assert.equal(starts.get(files[10].rel), oldStart, 'the next file took the edited one\'s place');

      const { storage: storage2 } = fresh(`full-${semantics}`);
      const full2 = await build({ ...options, storageDir: storage2 });
      assert.equal(full2.tokensIngested, incr.tokensIngested);
      const a = after.last();
      const b = readStoredMemory(memoryDirIn(storage2)).last();
      const diff = stateDifference(a, b);
      assert.ok(diff <= 1e-5, `incremental and full states differ by ${diff}`);
      const probe = 'export function retryDelay(';
      const la = await probeLogits(packageDir, a, probe);
      const lb = await probeLogits(packageDir, b, probe);
      const ldiff = maxDiff(la, lb);
      assert.ok(ldiff <= 1e-5, `probe logits differ by ${ldiff}`);
    });
  }

  it('after adding and removing files', async () => {
    const { ws, storage } = fresh('add-remove');
    const files = writeSyntheticWorkspace(ws, { count: 16, lines: 20 });
    const options = { packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 256 };
    await build(options);
    const memDir = memoryDirIn(storage);
    const beforeChange = readStoredMemory(memDir).manifest;
    const removedStart = fileStarts(beforeChange.files).get(files[6].rel)!;
    fs.rmSync(files[6].abs);
    const added = path.join(ws, 'src/new.ts');
    fs.writeFileSync(added, syntheticSource(999, 20));
    setMtime(added, files[15].mtime + 50);
    const incr = await build(options);
    assert.ok(incr.resumedFrom <= removedStart && incr.resumedFrom > 0);
    assert.equal(incr.tokensReread, incr.tokensIngested - incr.resumedFrom);
    const stored = readStoredMemory(memDir);
    assert.ok(!stored.manifest.files.some((f) => f.path === files[6].rel));
    assert.equal(stored.manifest.files[stored.manifest.files.length - 1].path, 'src/new.ts');
    const { storage: storage2 } = fresh('add-remove-full');
    await build({ ...options, storageDir: storage2 });
    assert.ok(stateDifference(stored.last(), readStoredMemory(memoryDirIn(storage2)).last()) <= 1e-5);
  });

  it('takes changedPaths from a file watcher without walking the workspace again', async () => {
    const { ws, storage } = fresh('changed-paths');
    const files = writeSyntheticWorkspace(ws, { count: 10, lines: 20 });
    await withMemory({ packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 256 }, async (m) => {
      await m.update();
      fs.appendFileSync(files[4].abs, '// edited\n');
      fs.rmSync(files[7].abs);
      const s = await m.update({ changedPaths: [files[4].abs, files[7].abs] });
      assert.equal(s.filesRead, 9);
      assert.ok(s.tokensReread > 0 && s.tokensReread < s.tokensIngested);
      const stored = readStoredMemory(memoryDirIn(storage)).manifest.files.map((f) => f.path);
      assert.equal(stored[stored.length - 1], files[4].rel);
      assert.ok(!stored.includes(files[7].rel));
      // A path it does not know (a new file) makes it walk the workspace.
      const added = path.join(ws, 'added.ts');
      fs.writeFileSync(added, 'export const added = true;\n');
      const s2 = await m.update({ changedPaths: [added] });
      assert.equal(s2.filesRead, 10);
    });
  });
});

describe('cancellation and concurrent questions', () => {
  it('cancels between segments, keeps what was read, and the next update finishes it exactly', async () => {
    const { ws, storage } = fresh('cancel');
    writeSyntheticWorkspace(ws, { count: 20, lines: 30 });
    const options = { packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 100_000 };
    const controller = new AbortController();
    let cancelledAt = -1;
    await withMemory(options, async (m) => {
      await assert.rejects(
        m.update({
          signal: controller.signal,
          onProgress: (p) => {
            if (p.phase === 'ingest' && p.tokensDone > 3000 && !controller.signal.aborted) controller.abort();
          },
        }),
        (e: unknown) => {
          assert.ok(e instanceof UpdateCancelledError);
          cancelledAt = e.stats.position;
          return e.name === 'CancelledError' && /resumes from there/.test(e.message);
        },
      );
      assert.ok(cancelledAt > 3000);
      assert.equal(m.status().position, cancelledAt);
      assert.equal(m.status().fresh, false);
    });
    const stored = readStoredMemory(memoryDirIn(storage));
    assert.equal(stored.manifest.complete, false);
    assert.equal(stored.manifest.checkpoints.at(-1)!.position, cancelledAt);
    const resumed = await build(options);
    assert.equal(resumed.resumedFrom, cancelledAt);
    assert.equal(resumed.tokensReread, resumed.tokensIngested - cancelledAt);
    const { storage: storage2 } = fresh('cancel-full');
    await build({ ...options, storageDir: storage2 });
    assert.ok(stateDifference(readStoredMemory(memoryDirIn(storage)).last(), readStoredMemory(memoryDirIn(storage2)).last()) <= 1e-5);
  });

  it('answers a question in the middle of an update without disturbing it', async () => {
    const { ws, storage } = fresh('ask-during');
    writeSyntheticWorkspace(ws, { count: 16, lines: 30 });
    const options = { packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 2048 };
    let asked: Promise<unknown> | null = null;
    let answerMemory = -1;
    await withMemory(options, async (m) => {
      await m.update({
        onProgress: (p) => {
          if (!asked && p.phase === 'ingest' && p.tokensDone > 2000) {
            asked = m.ask('what does file00003 export?', { maxNewTokens: 8 }).then((r) => (answerMemory = r.stats.memoryTokens));
          }
        },
      });
      await asked;
    });
    assert.ok(answerMemory > 2000, `the question saw ${answerMemory} tokens of memory`);
    const { storage: storage2 } = fresh('ask-during-full');
    await build({ ...options, storageDir: storage2 });
    assert.ok(stateDifference(readStoredMemory(memoryDirIn(storage)).last(), readStoredMemory(memoryDirIn(storage2)).last()) <= 1e-5);
  });
});

describe('damaged storage', () => {
  it('falls back past a corrupt checkpoint to the previous one, and rebuilds after a corrupt manifest', async () => {
    const { ws, storage } = fresh('corrupt');
    writeSyntheticWorkspace(ws, { count: 10, lines: 30 });
    const options = { packageDir: pkg, workspaces: [ws], storageDir: storage, checkpointEveryTokens: 1024 };
    const first = await build(options);
    const memDir = memoryDirIn(storage);
    const good = readStoredMemory(memDir);
    const lastEntry = good.manifest.checkpoints.at(-1)!;
    const previous = good.manifest.checkpoints.at(-2)!;
    const reference = good.last();
    const file = path.join(memDir, lastEntry.file);
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    fs.writeFileSync(file, bytes);
    const repaired = await build(options);
    assert.equal(repaired.resumedFrom, previous.position);
    assert.equal(repaired.tokensReread, first.tokensIngested - previous.position);
    assert.ok(stateDifference(readStoredMemory(memDir).last(), reference) <= 1e-5);

    fs.writeFileSync(path.join(memDir, 'manifest.json'), '{"format":"titan-memory","version":1,"checksum":"bad"');
    const rebuilt = await build(options);
    assert.equal(rebuilt.restoredFromCheckpoint, false);
    assert.equal(rebuilt.tokensReread, first.tokensIngested);
    assert.ok(stateDifference(readStoredMemory(memDir).last(), reference) <= 1e-5);
    // Leftovers of interrupted writes are cleared at open.
    fs.writeFileSync(path.join(memDir, 'state-000000000007.bin'), 'partial');
    fs.writeFileSync(path.join(memDir, 'manifest.json.1a2b3c4d'), '{');
    await build(options);
    assert.ok(!fs.existsSync(path.join(memDir, 'state-000000000007.bin')));
    assert.ok(!fs.existsSync(path.join(memDir, 'manifest.json.1a2b3c4d')));
  });

  it('keeps the checkpoints under the storage cap, densest near the end of the stream', async () => {
    const { ws, storage } = fresh('cap');
    writeSyntheticWorkspace(ws, { count: 20, lines: 30 });
    const stateBytes = (await build({ packageDir: pkg, workspaces: [ws], storageDir: path.join(storage, 'probe'), checkpointEveryTokens: 1e9 })).stateBytes;
    const cap = stateBytes * 6;
    const s = await build({ packageDir: pkg, workspaces: [ws], storageDir: path.join(storage, 'capped'), checkpointEveryTokens: 512, storageCapBytes: cap });
    assert.ok(s.checkpointBytes <= cap, `${s.checkpointBytes} bytes over the cap of ${cap}`);
    assert.equal(s.checkpoints, 6);
    const positions = readStoredMemory(memoryDirIn(path.join(storage, 'capped'))).manifest.checkpoints.map((c) => c.position);
    assert.equal(positions.at(-1), s.position);
    const gaps = positions.slice(1).map((p, i) => p - positions[i]);
    assert.ok(gaps[0] > gaps[gaps.length - 1], `gaps ${gaps.join(', ')} should shrink towards the end`);
    const files = fs.readdirSync(memoryDirIn(path.join(storage, 'capped'))).filter((f) => f.startsWith('state-'));
    assert.equal(files.length, 6);
  });
});

describe('storage shared by several memories', () => {
  it('evicts other memories over the cap, least recently updated first, but never one in use', async () => {
    const { ws, storage } = fresh('evict');
    writeSyntheticWorkspace(ws, { count: 8, lines: 30 });
    const other = fresh('evict-other').ws;
    writeSyntheticWorkspace(other, { count: 8, lines: 30 });
    const a = await build({ packageDir: pkg, workspaces: [other], storageDir: storage, checkpointEveryTokens: 512 });
    const dirA = a.storage;
    const cap = a.checkpointBytes - 1;
    // Opening another memory while A is open leaves A alone.
    await withMemory({ packageDir: pkg, workspaces: [other], storageDir: storage }, async () => {
      await build({ packageDir: pkgLegacy, workspaces: [ws], storageDir: storage, storageCapBytes: cap });
      assert.ok(fs.existsSync(dirA));
    });
    const b = await build({ packageDir: pkgLegacy, workspaces: [ws], storageDir: storage, storageCapBytes: cap });
    assert.ok(!fs.existsSync(dirA), 'the other memory should have been evicted');
    assert.ok(fs.existsSync(b.storage));
    assert.equal(b.tokensReread, 0);
  });
});

describe('bad input', () => {
  it('reads a workspace of binary blobs, huge one-line files, broken links, FIFOs and non-UTF-8 text, explaining every skip', async () => {
    const { ws, storage } = fresh('bad');
    fs.mkdirSync(path.join(ws, 'src'), { recursive: true });
    fs.writeFileSync(path.join(ws, 'src/good.ts'), syntheticSource(1, 20));
    fs.writeFileSync(path.join(ws, 'README.md'), '# fine\n\nplain text, ünïcödé, 漢字\n');
    const binary = Buffer.alloc(4096);
    for (let i = 0; i < binary.length; i++) binary[i] = (i * 7919) & 0xff;
    fs.writeFileSync(path.join(ws, 'blob.bin'), binary);
    fs.writeFileSync(path.join(ws, 'one-line.js'), `var x = [${'1,'.repeat(200_000)}];`);
    fs.writeFileSync(path.join(ws, 'huge.txt'), 'x\n'.repeat(700_000));
    fs.writeFileSync(path.join(ws, 'latin1.txt'), Buffer.from('Notes written in Latin-1 by an old editor: the caf\u00e9 opens at nine.\n'.repeat(20), 'latin1'));
    fs.writeFileSync(path.join(ws, 'utf16.txt'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('hello\n', 'utf16le')]));
    fs.writeFileSync(path.join(ws, 'package-lock.json'), '{}\n');
    fs.writeFileSync(path.join(ws, 'gen.go'), '// Code generated by stringer. DO NOT EDIT.\npackage x\n');
    fs.writeFileSync(path.join(ws, 'empty.ts'), '');
    fs.symlinkSync('does-not-exist.ts', path.join(ws, 'broken-link.ts'));
    fs.symlinkSync('loop-b', path.join(ws, 'loop-a'));
    fs.symlinkSync('loop-a', path.join(ws, 'loop-b'));
    const fifo = spawnSync('mkfifo', [path.join(ws, 'pipe.txt')]);
    const vanishing = path.join(ws, 'vanishing.ts');
    fs.writeFileSync(vanishing, 'export const soon = "gone";\n');
    setMtime(vanishing, 2_000_000_000);

    const stats = await withMemory({ packageDir: pkg, workspaces: [ws], storageDir: storage, maxFileBytes: 1_000_000 }, (m) =>
      m.update({
        // Deleted after discovery, before ingestion reads it.
        onProgress: (p) => {
          if (p.phase === 'restore') fs.rmSync(vanishing, { force: true });
        },
      }),
    );
    const reasons = Object.fromEntries(stats.filesSkipped.map((s) => [s.path, s.reason]));
    const expected: Record<string, string> = {
      'blob.bin': 'binary',
      'one-line.js': 'minified',
      'huge.txt': 'too-large',
      'latin1.txt': 'invalid-utf8',
      'utf16.txt': 'invalid-utf8',
      'package-lock.json': 'lock-file',
      'gen.go': 'generated',
      'broken-link.ts': 'broken-symlink',
      'vanishing.ts': 'unreadable',
    };
    if (fifo.status === 0) expected['pipe.txt'] = 'unreadable';
    for (const [p, reason] of Object.entries(expected)) assert.equal(reasons[p], reason, `${p}: ${reasons[p]}`);
    assert.ok(['loop-a', 'loop-b'].every((p) => reasons[p] === 'symlink-loop'), JSON.stringify(reasons));
    for (const s of stats.filesSkipped) assert.ok(s.detail.length > 5, `${s.path} skipped without a reason: ${JSON.stringify(s)}`);
    assert.match(stats.filesSkipped.find((s) => s.path === 'vanishing.ts')!.detail, /when read for ingestion/);
    assert.equal(stats.filesRead, 3); // src/good.ts, README.md, empty.ts
    const streamed = readStoredMemory(memoryDirIn(storage)).manifest.files.map((f) => f.path).sort();
    assert.deepEqual(streamed, ['README.md', 'empty.ts', 'src/good.ts']);
  });

  it('explains a chmod 000 file as unreadable (run as an unprivileged user when root)', async (t) => {
    const { ws, storage } = fresh('chmod');
    writeSyntheticWorkspace(ws, { count: 2, lines: 10 });
    fs.writeFileSync(path.join(ws, 'closed.ts'), 'export const secret = 1;\n');
    fs.chmodSync(path.join(ws, 'closed.ts'), 0o000);
    if (process.getuid?.() !== 0) {
      const s = await build({ packageDir: pkg, workspaces: [ws], storageDir: storage });
      assert.equal(s.filesSkipped.find((f) => f.path === 'closed.ts')?.reason, 'unreadable');
      return;
    }
    // root reads chmod 000 files: run `titan memory` as nobody, with folders it may use.
    for (let d = ws; d !== path.dirname(tmp); d = path.dirname(d)) fs.chmodSync(d, 0o755);
    for (const dir of fs.readdirSync(ws, { recursive: true, withFileTypes: true })) if (dir.isDirectory()) fs.chmodSync(path.join(dir.parentPath, dir.name), 0o755);
    fs.mkdirSync(storage, { recursive: true, mode: 0o777 });
    fs.chmodSync(storage, 0o777);
    for (const d of [path.join(tmp, 'model'), pkg]) fs.chmodSync(d, 0o755);
    const probe = spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(path.join(REPO, 'engine/cli.ts'))})`], { uid: 65534, gid: 65534 });
    if (probe.status !== 0) return t.skip('running as root and nobody cannot read the checkout; the unreadable path is covered by the vanishing file above');
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'engine/cli.ts'), 'memory', pkg, '--workspace', ws, '--storage', storage, '--json', '--provider', 'cpu'], {
      uid: 65534, gid: 65534, cwd: REPO, encoding: 'utf8', timeout: 120_000, env: { ...process.env, HOME: storage },
    });
    if (r.status !== 0 && /EACCES|permission/i.test(r.stderr) && !/closed\.ts/.test(r.stderr)) return t.skip(`could not run as nobody here: ${r.stderr.trim().split('\n').pop()}`);
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout) as MemoryStats;
    const closed = s.filesSkipped.find((f) => f.path === 'closed.ts');
    assert.equal(closed?.reason, 'unreadable');
    assert.match(closed!.detail, /permission denied/);
    assert.equal(s.filesRead, 2);
  });
});

describe('errors users can meet', () => {
  it('refuses packages whose state would grow, missing folders, and a memory in use', async () => {
    const { ws, storage } = fresh('errors');
    writeSyntheticWorkspace(ws, { count: 2, lines: 10 });
    const base = writePackage(path.join(tmp, 'model', 'hf'), path.join(tmp, 'base-pkg'), { dtype: 'fp32', window: null, kind: 'base' }).dir;
    await assert.rejects(WorkspaceMemory.open({ packageDir: base, workspaces: [ws], storageDir: storage }), (e: unknown) => e instanceof ModelError && /base-model package/.test(e.message));
    const unbounded = titanize(path.join(tmp, 'model', 'hf'), path.join(tmp, 'unbounded-pkg'), { mag_weight: TEST_MAG_WEIGHT, max_chunk_size: 16 }).pkg.dir;
    await assert.rejects(WorkspaceMemory.open({ packageDir: unbounded, workspaces: [ws], storageDir: storage }), (e: unknown) => e instanceof ModelError && /unbounded softmax window/.test(e.message));
    await assert.rejects(WorkspaceMemory.open({ packageDir: pkg, workspaces: [path.join(ws, 'nope')], storageDir: storage }), (e: unknown) => e instanceof ModelError && /does not exist/.test(e.message));
    await assert.rejects(WorkspaceMemory.open({ packageDir: path.join(tmp, 'nothing'), workspaces: [ws], storageDir: storage }), ModelError);
    await withMemory({ packageDir: pkg, workspaces: [ws], storageDir: storage }, async (m) => {
      await assert.rejects(WorkspaceMemory.open({ packageDir: pkg, workspaces: [ws], storageDir: storage }), (e: unknown) => e instanceof ModelError && /in use by another Titan process/.test(e.message));
      await assert.rejects(m.ask('   '), ModelError);
    });
  });

  it('CLI: one-line errors and usage', async () => {
    const { ws } = fresh('cli-errors');
    writeSyntheticWorkspace(ws, { count: 1, lines: 5 });
    const missing = await runTitan(['memory', path.join(tmp, 'nothing'), '--workspace', ws]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^titan memory: .*not a Titan model package/);
    assert.equal(missing.stderr.trim().split('\n').length, 1);
    const noQuestion = await runTitan(['ask', pkg, '--workspace', ws]);
    assert.equal(noQuestion.code, 2);
    assert.match(noQuestion.stderr, /missing "question"/);
    const help = await runTitan(['ask', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--no-retrieval/);
    assert.match(help.stdout, /--no-memory/);
  });
});
