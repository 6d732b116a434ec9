// The extension's typed configuration: defaults agree with package.json's contributes, bad values
// fall back to defaults, and the engine parameters and exclude sets come out as the engine expects.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULTS, mergeExcludes, TitanConfig, type ConfigurationReader } from '../../extension/config';
import { DEFAULT_MAG_WEIGHT, OPERATOR_MODES } from '../../engine/titanize/settings';

const manifest = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8'));
const properties: Record<string, { default: unknown; enum?: unknown[] }> = manifest.contributes.configuration.properties;

function configOf(values: Record<string, unknown>): TitanConfig {
  const reader: ConfigurationReader = { get: <T>(key: string) => values[key] as T | undefined };
  return new TitanConfig(() => reader);
}

describe('TitanConfig', () => {
  it('declares every setting in package.json with the same default', () => {
    const declared = Object.keys(properties).map((k) => k.replace(/^titan\./, '')).sort();
    assert.deepEqual(declared, Object.keys(DEFAULTS).sort());
    for (const [key, value] of Object.entries(DEFAULTS)) assert.deepEqual(properties[`titan.${key}`].default, value, `titan.${key}`);
  });

  it('offers exactly the engine operator modes', () => {
    assert.deepEqual(properties['titan.conversion.operator'].enum, OPERATOR_MODES);
  });

  it('defaults μ to the engine default (the CLI and the demo conversion use it)', () => {
    assert.equal(DEFAULTS['conversion.magWeight'], DEFAULT_MAG_WEIGHT);
  });

  it('reads defaults when nothing is set', () => {
    const c = configOf({});
    assert.equal(c.executionProvider, 'auto');
    assert.equal(c.modelPath, null);
    assert.equal(c.autoBuild, true);
    assert.equal(c.maxFileBytes, 1024 * 1024);
    assert.equal(c.storageCapBytes, 1024 * 1024 * 1024);
    assert.deepEqual(c.conversionDefaults, { operator: 'delta_rule', magWeight: 0.05, window: 512, chunk: 64, semantics: 'exact', dtype: 'fp32', crossGate: false, adapter: '' });
  });

  it('falls back to defaults for values of the wrong type or out of range', () => {
    const c = configOf({
      executionProvider: 'tpu',
      'engine.threads': -4,
      'memory.maxFileKB': 'lots',
      'memory.storageCapMB': 0,
      'memory.autoBuild': 'yes',
      'memory.exclude': ['**/dist', 42, '', null],
      'conversion.magWeight': 3,
      'conversion.chunk': 4096,
      'conversion.semantics': 'fuzzy',
      'answer.maxNewTokens': 1e9,
      'model.path': '   ',
    });
    assert.equal(c.executionProvider, 'auto');
    assert.equal(c.threads, 0);
    assert.equal(c.maxFileBytes, 1024 * 1024);
    assert.equal(c.storageCapBytes, 1024 * 1024 * 1024);
    assert.equal(c.autoBuild, true);
    assert.deepEqual(c.memoryExclude, ['**/dist']);
    assert.equal(c.conversionDefaults.magWeight, 0.05);
    assert.equal(c.conversionDefaults.chunk, 64);
    assert.equal(c.conversionDefaults.semantics, 'exact');
    assert.equal(c.maxNewTokens, 256);
    assert.equal(c.modelPath, null);
  });

  it('reads set values, an unbounded window, and whole bytes', () => {
    const c = configOf({ executionProvider: 'cpu', 'engine.threads': 3, 'model.path': ' /models/a ', 'memory.maxFileKB': 1.5, 'conversion.window': 0, 'retrieval.enabled': false });
    assert.equal(c.executionProvider, 'cpu');
    assert.equal(c.threads, 3);
    assert.equal(c.modelPath, '/models/a');
    assert.equal(c.maxFileBytes, 1536);
    assert.equal(c.conversionDefaults.window, null);
    assert.equal(c.retrieval, false);
    assert.equal(configOf({ 'conversion.window': null }).conversionDefaults.window, null);
  });

  it('builds the engine configuration', () => {
    const c = configOf({ 'memory.exclude': ['**/fixtures/**'], 'engine.threads': 2, 'memory.maxFiles': 5000, 'memory.maxTokens': 0 });
    const ws = [{ path: '/w', name: 'w', exclude: { '**/node_modules': true } }];
    assert.deepEqual(c.engineParams(ws, '/storage/memory'), {
      modelPath: null, provider: 'auto', threads: 2, workspaces: ws, exclude: ['**/fixtures/**'], memoryStorageDir: '/storage/memory', maxFileBytes: 1024 * 1024, storageCapBytes: 1024 * 1024 * 1024,
      // A cap below 1 is out of bounds: the default instead.
      maxFiles: 5000, maxStreamTokens: 32 * 1024 * 1024,
    });
  });

  it('knows which changes need the engine reconfigured', () => {
    assert.equal(TitanConfig.affectsEngine((s) => s === 'titan.model.path'), true);
    assert.equal(TitanConfig.affectsEngine((s) => s === 'files.exclude'), true);
    assert.equal(TitanConfig.affectsEngine((s) => s === 'titan.conversion.chunk'), false);
    assert.equal(TitanConfig.affectsEngine((s) => s === 'titan.answer.maxNewTokens'), false);
  });

  it('writes the model path through its writer and refuses without one', async () => {
    const written: [string, unknown][] = [];
    const c = new TitanConfig(() => ({ get: () => undefined }), async (k, v) => void written.push([k, v]));
    await c.setModelPath('/models/b');
    assert.deepEqual(written, [['model.path', '/models/b']]);
    await assert.rejects(configOf({}).setModelPath('/x'), /read-only/);
  });
});

describe('mergeExcludes', () => {
  it('merges files.exclude and search.exclude, keeping sibling clauses and dropping disabled globs', () => {
    const files = { '**/.git': true, '**/*.js': { when: '$(basename).ts' }, '**/out': false };
    const search = { '**/node_modules': true, '**/out': true, '**/bower_components': false };
    assert.deepEqual(mergeExcludes(files, search), { '**/.git': true, '**/*.js': { when: '$(basename).ts' }, '**/out': true, '**/node_modules': true });
  });

  it('ignores junk values', () => {
    assert.deepEqual(mergeExcludes(undefined, { a: 'yes', b: 1, c: { when: 3 }, d: true } as Record<string, unknown>), { d: true });
  });
});
