// The extension's plain logic, without VS Code: which file events reach the engine (excludes, VCS
// folders, other folders), how they are batched, where a cited source may open, what the status bar
// and the chat's memory line say, and how the Titanize form's values become TPTT settings.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { EngineStatus, FileChange } from '../../protocol/engine';
import { ChangeBatcher, ChangeFilter } from '../../extension/file-changes';
import { resolveSourcePath } from '../../extension/source-paths';
import { compactCount, formatMemoryLine, formatStatusBar } from '../../extension/status-text';
import { fieldOfMessage, readForm, validateForm } from '../../engine/server/settings-form';
import { validateTpttSettings } from '../../engine/titanize/settings';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-ext-'));
  for (const f of ['a/src/x.ts', 'a/src/x.js', 'a/lib/y.js', 'b/docs/readme.md']) {
    fs.mkdirSync(path.join(tmp, path.dirname(f)), { recursive: true });
    fs.writeFileSync(path.join(tmp, f), '');
  }
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('ChangeFilter', () => {
  it('follows each folder\'s excludes, the memory excludes and skips VCS folders', () => {
    const a = path.join(tmp, 'a');
    const b = path.join(tmp, 'b');
    const filter = new ChangeFilter(
      [
        { path: a, exclude: { '**/node_modules': true, '**/*.js': { when: '$(basename).ts' }, dist: true } },
        { path: b, exclude: {} },
      ],
      ['**/*.md.bak'],
      false,
    );
    assert.equal(filter.accepts(path.join(a, 'src/x.ts')), true);
    assert.equal(filter.accepts(path.join(a, 'src/x.js')), false, 'x.js has a sibling x.ts');
    assert.equal(filter.accepts(path.join(a, 'lib/y.js')), true, 'y.js has no y.ts');
    assert.equal(filter.accepts(path.join(a, 'node_modules/p/index.js')), false);
    assert.equal(filter.accepts(path.join(a, 'pkg/node_modules/p/index.js')), false);
    assert.equal(filter.accepts(path.join(a, 'dist/bundle.js')), false);
    assert.equal(filter.accepts(path.join(a, '.git/index')), false);
    assert.equal(filter.accepts(path.join(b, 'docs/readme.md')), true);
    assert.equal(filter.accepts(path.join(b, 'docs/readme.md.bak')), false);
    assert.equal(filter.accepts(path.join(b, 'dist/bundle.js')), true, 'folder b has no dist exclude');
    assert.equal(filter.accepts(path.join(tmp, 'elsewhere.ts')), false, 'outside every folder');
    assert.equal(filter.accepts(a), false, 'the folder itself');
  });
});

describe('ChangeBatcher', () => {
  it('merges events per path: the latest wins, created stays created', () => {
    const flushed: FileChange[][] = [];
    const batcher = new ChangeBatcher((c) => flushed.push(c), 60_000, 60_000);
    batcher.add('/w/a.ts', 'created');
    batcher.add('/w/a.ts', 'changed');
    batcher.add('/w/b.ts', 'changed');
    batcher.add('/w/b.ts', 'deleted');
    batcher.add('/w/c.ts', 'changed');
    assert.equal(batcher.size, 3);
    batcher.fire();
    batcher.fire();
    batcher.dispose();
    assert.deepEqual(flushed, [[{ path: '/w/a.ts', kind: 'created' }, { path: '/w/b.ts', kind: 'deleted' }, { path: '/w/c.ts', kind: 'changed' }]]);
  });

  it('flushes a burst once after it goes quiet', async () => {
    let resolve!: (c: FileChange[]) => void;
    const flushed = new Promise<FileChange[]>((r) => (resolve = r));
    let calls = 0;
    const batcher = new ChangeBatcher((c) => {
      calls++;
      resolve(c);
    }, 20, 1000);
    for (let i = 0; i < 50; i++) batcher.add(`/w/f${i % 5}.ts`, 'changed');
    const changes = await flushed;
    assert.equal(changes.length, 5);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(calls, 1);
    batcher.dispose();
  });
});

describe('resolveSourcePath', () => {
  const one = [{ name: 'a', path: '/work/a' }];

  it('resolves relative, absolute and multi-root stream paths inside the workspace', () => {
    assert.equal(resolveSourcePath('src/x.ts', one), path.resolve('/work/a/src/x.ts'));
    assert.equal(resolveSourcePath('./src/x.ts', one), path.resolve('/work/a/src/x.ts'));
    assert.equal(resolveSourcePath('/work/a/src/x.ts', one), path.resolve('/work/a/src/x.ts'));
    const folders = [{ name: 'a', path: path.join(tmp, 'a') }, { name: 'b', path: path.join(tmp, 'b') }];
    assert.equal(resolveSourcePath('b/docs/readme.md', folders), path.join(tmp, 'b/docs/readme.md'));
    assert.equal(resolveSourcePath('src/x.ts', folders), path.join(tmp, 'a/src/x.ts'), 'a plain path is looked up in each folder');
  });

  it('refuses anything outside the workspace folders', () => {
    assert.equal(resolveSourcePath('../../etc/passwd', one), null);
    assert.equal(resolveSourcePath('src/../../secret', one), null);
    assert.equal(resolveSourcePath('/etc/passwd', one), null);
    assert.equal(resolveSourcePath('/work/ab/x.ts', one), null, 'a sibling folder with the same prefix');
    assert.equal(resolveSourcePath('a\0b', one), null);
    assert.equal(resolveSourcePath('', one), null);
    assert.equal(resolveSourcePath('src/x.ts', []), null);
  });
});

describe('status texts', () => {
  const status = (memory: EngineStatus['memory']): EngineStatus => ({
    model: { path: '/m', name: 'code-llama-19m-titan', kind: 'titan', demo: true, dtype: 'fp32', modelType: 'llama', summary: 'delta_rule μ 0.5', createdAt: null },
    provider: { provider: 'cpu', reason: 'cpu (requested)' },
    modelLoading: null,
    modelError: null,
    memory,
    busy: [],
  });

  it('formats counts', () => {
    assert.equal(compactCount(950), '950');
    assert.equal(compactCount(12345), '12k');
    assert.equal(compactCount(1234), '1.2k');
    assert.equal(compactCount(2_000_000), '2M');
  });

  it('shows model, provider and memory in the status bar', () => {
    const fresh = formatStatusBar('running', status({ position: 12345, files: 40, fresh: true, lastUpdate: null, updating: null, error: null }), true);
    assert.equal(fresh.text, '$(database) Titan · code-llama-19m-titan · cpu · 12k tok · fresh');
    const updating = formatStatusBar('running', status({ position: 500, files: 4, fresh: false, lastUpdate: null, error: null, updating: { phase: 'read', filesDone: 2, filesTotal: 4, tokens: 300, tokensTotal: 600, position: 500, tokensPerSecond: 1500, etaSeconds: 12, currentFile: 'a.ts', message: '' } }), true);
    assert.equal(updating.text, '$(sync~spin) Titan · code-llama-19m-titan · cpu · 500 tok · 2/4 files · 300 tok · 1.5k tok/s · ETA 12 s');
    assert.match(formatStatusBar('running', status(null), false).text, /^\$\(database\) Titan · code-llama-19m-titan · cpu · no folder$/);
    assert.equal(formatStatusBar('failed', null, true).severity, 'error');
    assert.match(formatStatusBar('restarting', null, true).text, /^\$\(sync~spin\) Titan · restarting/);
    assert.match(formatStatusBar('starting', null, true).text, /^\$\(sync~spin\) Titan/);
  });

  it('warns when the GPU failed and the model runs on the CPU, and lists memory notices', () => {
    const fallback = 'webgpu failed during a run: device lost';
    const s = { ...status({ position: 100, files: 2, fresh: true, lastUpdate: null, updating: null, error: null, notices: ['the memory stream reached its cap'] }), provider: { provider: 'cpu' as const, reason: `cpu (fallback: ${fallback})`, fallback } };
    const view = formatStatusBar('running', s, true);
    assert.equal(view.text, '$(warning) Titan · code-llama-19m-titan · cpu (GPU failed) · 100 tok · fresh');
    assert.equal(view.severity, 'warning');
    assert.match(view.tooltip, /GPU fallback: webgpu failed during a run: device lost/);
    assert.match(view.tooltip, /Notice: the memory stream reached its cap/);
  });

  it('words the chat\'s memory line', () => {
    assert.equal(formatMemoryLine({ position: 12345, files: 40, fresh: false, lastUpdate: null, updating: null, error: null }, true), 'Memory: 12k tokens · 40 files · stale');
    assert.match(formatMemoryLine(null, false), /No folder open/);
    assert.match(formatMemoryLine({ position: 0, files: 0, fresh: false, lastUpdate: null, updating: null, error: 'disk full' }, true), /unavailable: disk full/);
  });
});

describe('Titanize form → TPTT settings', () => {
  it('reads numbers from text fields and leaves the rest for the validator to name', () => {
    const r = readForm({ operator: 'delta_rule', magWeight: '0.25', window: '', chunk: '32', semantics: 'exact', dtype: 'fp16', crossGate: true, adapter: '' });
    assert.deepEqual(r.input, { operator_mode: 'delta_rule', mag_weight: 0.25, max_self_attn_length: null, max_chunk_size: 32, semantics: 'exact', cross_gate: true });
    assert.equal(r.dtype, 'fp16');
    assert.equal(r.adapter, null);
    assert.deepEqual(r.errors, []);
    assert.equal(readForm({ magWeight: 'abc' }).input.mag_weight as unknown, 'abc');
  });

  it('maps every validator message to its field', () => {
    const messages = validateTpttSettings({ operator_mode: 'x', mag_weight: 2, max_self_attn_length: 0.5, max_chunk_size: 0, semantics: 'y' as never, cross_gate: 'no' as never, recurrent_config: { order: 9 }, lora_config: { r: 0, lora_alpha: 0, lora_dropout: 0, target_modules: [] } });
    const fields = messages.map(fieldOfMessage);
    assert.ok(!fields.includes(null), `unmapped: ${messages.filter((m) => fieldOfMessage(m) === null).join(' | ')}`);
    assert.deepEqual(new Set(fields), new Set(['magWeight', 'window', 'chunk', 'semantics', 'operator', 'crossGate', 'adapter']));
  });

  it('checks the adapter folder and the source model', () => {
    const errors = validateForm({ adapter: 'relative/dir' }, path.join(tmp, 'missing-model'));
    assert.deepEqual(errors.map((e) => e.field), [null, 'adapter']);
  });
});
