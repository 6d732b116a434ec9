// Alignment from VS Code: titan.alignModel aligns the model in use (the demo model's package) on the
// workspace's code for two short steps in the real engine, registers the merged package as a model,
// and the chat switches to it and back. Kept to two 64-token steps so it takes well under a minute.
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { activeExtension, engineInfo, note, waitFor } from './util';

interface AlignOutcome {
  path: string | null;
  name: string | null;
  steps: number;
  before: number | null;
  after: number | null;
}

suite('align', () => {
  suiteSetup(async function () {
    this.timeout(300_000);
    await activeExtension();
    await waitFor('the model', engineInfo, (i) => !!i.modelPath, 240_000, 500);
  });

  test('titan.alignModel aligns the model in use on the workspace; the result becomes selectable', async function () {
    this.timeout(300_000);
    const before = await engineInfo();
    const t0 = Date.now();
    const r = (await vscode.commands.executeCommand('titan.alignModel', { package: before.modelPath, settings: { budget: 'steps', steps: 2, batch: 1, sequence: 64 } })) as AlignOutcome | undefined;
    assert.ok(r?.path, `no aligned model: ${JSON.stringify(r)}`);
    assert.equal(r.steps, 2);
    assert.ok(r.before !== null && r.after !== null, 'validation before and after');
    assert.match(r.name ?? '', new RegExp(`^${path.basename(before.modelPath!)}-aligned-`));
    note(`aligned ${path.basename(before.modelPath!)} in ${((Date.now() - t0) / 1000).toFixed(1)} s: validation loss ${r.before.toFixed(3)} → ${r.after.toFixed(3)}`);

    await vscode.commands.executeCommand('titan.selectModel', r.path);
    await waitFor('the aligned model to open', engineInfo, (i) => i.modelPath === r.path, 120_000, 500);
    await vscode.commands.executeCommand('titan.selectModel', '');
    await waitFor('the demo model again', engineInfo, (i) => i.modelPath === before.modelPath, 120_000, 500);
  });
});
