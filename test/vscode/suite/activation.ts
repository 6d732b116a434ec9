// Activation: the extension loads in the real extension host, activates, and registers its commands.
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { EXTENSION_ID, activeExtension } from './util';

const CONTRACT_COMMANDS = [
  'titan.titanizeModel',
  'titan.alignModel',
  'titan.openChat',
  'titan.askWorkspace',
  'titan.rebuildMemory',
  'titan.selectModel',
  'titan.stop',
  'titan.debug.engineInfo',
  'titan.debug.killEngine',
];

suite('activation', () => {
  test('the extension is present and activates without error', async () => {
    const ext = await activeExtension();
    assert.equal(ext.id, EXTENSION_ID);
    assert.equal(ext.isActive, true);
    assert.equal(ext.packageJSON.publisher, 'titan-dev');
  });

  test('every contract command is registered', async () => {
    await activeExtension();
    const all = new Set(await vscode.commands.getCommands(true));
    const missing = CONTRACT_COMMANDS.filter((c) => !all.has(c));
    assert.deepEqual(missing, [], `commands not registered: ${missing.join(', ')}`);
  });

  test('the manifest declares the commands under the Titan category and the chat view', () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const commands: { command: string; category?: string; title: string }[] = pkg.contributes.commands;
    for (const id of CONTRACT_COMMANDS.filter((c) => !c.startsWith('titan.debug.'))) {
      const c = commands.find((x) => x.command === id);
      assert.ok(c, `${id} is not in contributes.commands`);
      assert.equal(c.category, 'Titan', `${id} has category ${c.category}`);
    }
    const containers = pkg.contributes.viewsContainers?.activitybar ?? [];
    assert.ok(containers.some((c: { id: string }) => c.id === 'titan'), 'no activity-bar view container "titan"');
    const views = pkg.contributes.views?.titan ?? [];
    assert.ok(views.some((v: { id: string; type?: string }) => v.id === 'titan.chat' && v.type === 'webview'), 'no webview view titan.chat');
  });

  test('the debug commands are hidden from the command palette', () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const palette: { command: string; when?: string }[] = pkg.contributes.menus?.commandPalette ?? [];
    for (const id of ['titan.debug.engineInfo', 'titan.debug.killEngine']) {
      const entry = palette.find((m) => m.command === id);
      assert.ok(entry && entry.when === 'false', `${id} should have { "when": "false" } in menus.commandPalette`);
    }
  });
});
