// Configuration: the contributed settings exist with their documented defaults, the workspace's
// settings are read, and a change reaches the engine (memory.exclude reconfigures the memory).
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { EXTENSION_ID, activeExtension, engineInfo, note, waitFor } from './util';

const CONTRACT_SETTINGS = [
  'titan.executionProvider',
  'titan.conversion.operator',
  'titan.conversion.magWeight',
  'titan.conversion.window',
  'titan.conversion.chunk',
  'titan.conversion.semantics',
  'titan.conversion.dtype',
  'titan.memory.autoBuild',
  'titan.memory.maxFileKB',
  'titan.memory.storageCapMB',
  'titan.memory.exclude',
  'titan.retrieval.enabled',
  'titan.engine.threads',
  'titan.model.path',
];

suite('configuration', () => {
  suiteSetup(async () => {
    await activeExtension();
  });

  test('every contract setting is contributed, with the documented defaults', () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const blocks = Array.isArray(pkg.contributes.configuration) ? pkg.contributes.configuration : [pkg.contributes.configuration];
    const props: Record<string, { default?: unknown; enum?: unknown[] }> = Object.assign({}, ...blocks.map((b: { properties: object }) => b.properties));
    const missing = CONTRACT_SETTINGS.filter((k) => !(k in props));
    assert.deepEqual(missing, [], `settings not contributed: ${missing.join(', ')}`);
    assert.deepEqual(props['titan.executionProvider'].enum, ['auto', 'webgpu', 'cuda', 'cpu']);
    assert.equal(props['titan.memory.autoBuild'].default, true);
    assert.equal(props['titan.model.path'].default, '');
  });

  test('settings are read from the workspace and from the defaults', () => {
    const cfg = vscode.workspace.getConfiguration('titan');
    // test/vscode/fixtures/workspace/.vscode/settings.json sets these two.
    assert.equal(cfg.get('executionProvider'), 'cpu');
    assert.equal(cfg.get('engine.threads'), 2);
    assert.equal(cfg.inspect('memory.autoBuild')?.defaultValue, true);
    assert.equal(cfg.get('memory.autoBuild'), true);
  });

  test('the engine runs on the configured execution provider', async () => {
    const info = await waitFor('the engine to open the demo model', engineInfo, (i) => i.pid !== null && !!i.model && !!i.provider, 240_000, 500);
    assert.equal(info.provider, 'cpu');
  });

  test('a change to titan.memory.exclude reconfigures the workspace memory', async function () {
    this.timeout(240_000);
    const cfg = () => vscode.workspace.getConfiguration('titan');
    const before = await waitFor('the first memory build', engineInfo, (i) => !!i.memory && i.memory.fresh && i.memory.files > 0, 180_000, 500);
    const srcFiles = (await vscode.workspace.findFiles('src/**')).length;
    assert.ok(srcFiles >= 3, `the fixture workspace should have source files under src/ (found ${srcFiles})`);
    try {
      await cfg().update('memory.exclude', ['src/**'], vscode.ConfigurationTarget.Workspace);
      const excluded = await waitFor(
        `the memory to drop src/ (had ${before.memory!.files} files)`,
        engineInfo,
        (i) => !!i.memory && i.memory.fresh && i.memory.files <= before.memory!.files - srcFiles,
        120_000,
        500,
      );
      assert.ok(excluded.memory!.files >= 1, 'files outside src/ stay in the memory');
      note(`memory.exclude ["src/**"]: ${before.memory!.files} → ${excluded.memory!.files} files`);
    } finally {
      await cfg().update('memory.exclude', undefined, vscode.ConfigurationTarget.Workspace);
    }
    await waitFor(`the memory to hold src/ again (${before.memory!.files} files)`, engineInfo, (i) => !!i.memory && i.memory.fresh && i.memory.files === before.memory!.files, 120_000, 500);
  });
});
