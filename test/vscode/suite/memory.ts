// Workspace memory: built in the background after activation, and updated incrementally when a file of
// the workspace is edited and saved (the extension's file watcher → the engine's incremental update).
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { compactCount } from '../../../extension/status-text';
import { activeExtension, engineInfo, note, waitFor, workspaceRoot } from './util';

suite('memory', () => {
  suiteSetup(async function () {
    this.timeout(300_000);
    await activeExtension();
  });

  test('the memory is built in the background and covers the workspace files', async function () {
    this.timeout(240_000);
    const info = await waitFor('a fresh memory', engineInfo, (i) => !!i.memory?.fresh && i.memory.files > 0, 240_000, 500);
    const files = (await vscode.workspace.findFiles('**/*.{ts,md}')).length;
    assert.ok(info.memory!.files >= files, `the memory holds ${info.memory!.files} files, the workspace has ${files} .ts/.md files`);
    assert.ok(info.memory!.position > 0, 'the memory has no tokens');
    note(`memory: ${info.memory!.position} tokens, ${info.memory!.files} files; status bar "${info.statusBar}"`);
  });

  test('saving an edited file updates the memory incrementally', async function () {
    this.timeout(180_000);
    const before = await waitFor('a fresh memory', engineInfo, (i) => !!i.memory?.fresh, 120_000, 500);
    const uri = vscode.Uri.joinPath(workspaceRoot(), 'src', 'pricing.ts');
    const doc = await vscode.workspace.openTextDocument(uri);
    const edit = new vscode.WorkspaceEdit();
    // Large enough that the status bar's token count changes visibly.
    const addition = [
      '',
      '// Shipping: orders over 500 ship free; below that, a flat rate per zone plus a weight surcharge.',
      'export type Zone = "domestic" | "europe" | "world";',
      'const ZONE_RATES: Record<Zone, number> = { domestic: 7.5, europe: 14, world: 29 };',
      'const SURCHARGE_PER_KG = 1.25;',
      '',
      'export function shippingCost(orderValue: number, zone: Zone, weightKg: number): number {',
      '  if (orderValue > 500) return 0;',
      '  const surcharge = Math.max(0, weightKg - 2) * SURCHARGE_PER_KG;',
      '  return Math.round((ZONE_RATES[zone] + surcharge) * 100) / 100;',
      '}',
      '',
      'export function describeShipping(orderValue: number, zone: Zone, weightKg: number): string {',
      '  const cost = shippingCost(orderValue, zone, weightKg);',
      '  return cost === 0 ? `free shipping to ${zone}` : `shipping to ${zone}: ${cost.toFixed(2)} for ${weightKg} kg`;',
      '}',
      '',
    ].join('\n');
    edit.insert(uri, doc.positionAt(doc.getText().length), addition);
    assert.ok(await vscode.workspace.applyEdit(edit), 'the edit was not applied');
    assert.ok(await doc.save(), 'the document was not saved');
    const savedAt = Date.now();
    const after = await waitFor(
      `the memory to take in the edit (position ${before.memory!.position})`,
      engineInfo,
      (i) => !!i.memory?.fresh && i.memory.position > before.memory!.position,
      120_000,
      250,
    );
    assert.equal(after.memory!.files, before.memory!.files, 'an edit changes no file count');
    assert.equal(after.pid, before.pid, 'the update is incremental: same engine process');
    // The status bar item's text shows the new token count (titan.debug.engineInfo reports the item's text).
    const shown = `${compactCount(after.memory!.position)} tok`;
    assert.notEqual(after.statusBar, before.statusBar, 'the status bar text did not change');
    assert.ok(after.statusBar.includes(shown) && /fresh/.test(after.statusBar), `the status bar should show "${shown} · fresh": ${after.statusBar}`);
    note(`saved → fresh memory in ${((Date.now() - savedAt) / 1000).toFixed(1)} s: ${before.memory!.position} → ${after.memory!.position} tokens; status bar "${before.statusBar}" → "${after.statusBar}"`);
  });

  test('a new file is added to the memory', async function () {
    this.timeout(180_000);
    const before = await waitFor('a fresh memory', engineInfo, (i) => !!i.memory?.fresh, 120_000, 500);
    const uri = vscode.Uri.joinPath(workspaceRoot(), 'src', 'suppliers.ts');
    await vscode.workspace.fs.writeFile(uri, Buffer.from('// Suppliers by SKU prefix.\nexport const SUPPLIERS: Record<string, string> = { AB: "Acme Bolts", CX: "Cox Crates" };\n'));
    await waitFor(`the memory to count the new file (${before.memory!.files} files)`, engineInfo, (i) => !!i.memory?.fresh && i.memory.files === before.memory!.files + 1, 120_000, 250);
  });
});
