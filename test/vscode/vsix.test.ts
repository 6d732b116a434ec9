// The VSIX: built with vsce (npm run package-vsix), installed into the test VS Code with
// `server-main.js --install-extension`, listed by `--list-extensions`, and working once installed: a
// workbench with no development extension opens the chat from the installed copy, whose engine starts
// (its onnxruntime-node binaries came with the VSIX).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { serverCli } from '../../scripts/vscode-server.mjs';
import { VscodeSession, buildVsix, prepareWorkspace, requireSetup, sessionDir } from './harness';

test('the VSIX builds, installs into the test VS Code and runs from there', { timeout: 15 * 60_000 }, async (t) => {
  requireSetup();
  const dir = sessionDir('vsix');
  const dataDir = path.join(dir, 'data');

  const built = Date.now();
  const vsix = await buildVsix(path.join(dir, 'titan.vsix'));
  const size = fs.statSync(vsix).size;
  t.diagnostic(`VSIX: ${vsix}, ${(size / 1e6).toFixed(1)} MB, built in ${((Date.now() - built) / 1000).toFixed(1)} s`);

  const install = serverCli(dataDir, ['--install-extension', vsix, '--force']);
  assert.equal(install.status, 0, `--install-extension failed (${install.status}): ${install.stderr || install.stdout}`);
  assert.match(install.stdout, /titan-dev\.titan|successfully installed/i, install.stdout);

  const list = serverCli(dataDir, ['--list-extensions', '--show-versions']);
  assert.equal(list.status, 0, `--list-extensions failed: ${list.stderr}`);
  const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version;
  assert.ok(list.stdout.split('\n').map((l) => l.trim()).includes(`titan-dev.titan@${version}`), `--list-extensions does not list titan-dev.titan@${version}:\n${list.stdout}`);

  // The installed copy, not the repo: no extensionDevelopmentPath.
  const workspace = prepareWorkspace(dir);
  const session = await VscodeSession.open(dir, { name: 'vsix', workspace, dataDir, extensionDevelopmentPath: null });
  try {
    await session.waitForWorkbench();
    await session.runCommand('Titan: Open Chat');
    const chat = await session.webviewWith('#messages', 90_000);
    // The engine from the VSIX converts and opens the demo model and reads the workspace with it (every
    // token goes through onnxruntime-node as the VSIX ships it): the memory ends fresh.
    const started = Date.now();
    const text = await session.waitForStatusBar(/tok · fresh/);
    await chat.locator('#memory-status').filter({ hasText: /fresh/ }).waitFor({ timeout: 30_000 });
    t.diagnostic(`installed extension: memory fresh ${((Date.now() - started) / 1000).toFixed(1)} s after the chat opened; status bar "${text.trim()}"`);
    assert.match(text, /code-llama-19m.* · cpu · [\d.]+k? tok · fresh/, `the status bar should name the model, provider and memory: ${text}`);
    await session.screenshot(path.join(dir, 'installed.png'));
  } catch (e) {
    throw new Error(await session.dump((e as Error).message), { cause: e });
  } finally {
    await session.close();
  }
});
