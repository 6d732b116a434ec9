// The engine process: spawned on activation (a real child process), and restarted with a new pid
// after it is killed (titan.debug.killEngine sends SIGKILL, as a crash would).
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { activeExtension, engineInfo, note, waitFor } from './util';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

suite('engine', () => {
  suiteSetup(async () => {
    await activeExtension();
  });

  test('the engine process is spawned and reports its pid, model and provider', async () => {
    const info = await waitFor('the engine to start', engineInfo, (i) => typeof i.pid === 'number' && i.pid > 0 && !!i.model, 240_000, 500);
    assert.ok(alive(info.pid!), `pid ${info.pid} is not a live process`);
    assert.notEqual(info.pid, process.pid, 'the engine runs in its own process, not in the extension host');
    assert.match(String(info.model), /code-llama-19m/);
    assert.equal(info.provider, 'cpu');
    note(`engine pid ${info.pid}, model ${info.model}, provider ${info.provider}`);
  });

  test('titan.debug.killEngine: the engine restarts with a new pid and the restart is counted', async function () {
    this.timeout(180_000);
    const before = await waitFor('a running engine', engineInfo, (i) => typeof i.pid === 'number' && !!i.model, 120_000, 500);
    const killedAt = Date.now();
    await vscode.commands.executeCommand('titan.debug.killEngine');
    await waitFor(`pid ${before.pid} to exit`, () => alive(before.pid!), (a) => !a, 10_000, 100);
    const after = await waitFor(
      'the engine to restart',
      engineInfo,
      (i) => typeof i.pid === 'number' && i.pid !== before.pid && i.restarts === before.restarts + 1 && !!i.model,
      120_000,
      500,
    );
    assert.ok(alive(after.pid!), `the new engine pid ${after.pid} is not alive`);
    note(`killed pid ${before.pid}; pid ${after.pid} running with the model ${((Date.now() - killedAt) / 1000).toFixed(1)} s later (restarts ${before.restarts} → ${after.restarts})`);
  });
});
