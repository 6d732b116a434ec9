// Questions about the workspace with the bundled demo model: a full round trip through the real
// engine (memory + retrieval), and an engine crash in the middle of an answer.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { activeExtension, engineInfo, note, sleep, waitFor, workspaceRoot } from './util';

/** What titan.askWorkspace returns when given the question as its argument (the chat's ask outcome). */
interface AskOutcome {
  id: string;
  answer?: string;
  sources?: { path: string; line?: number; reason: string }[];
  error?: string;
}

function ask(question: string): Promise<AskOutcome> {
  return vscode.commands.executeCommand<AskOutcome>('titan.askWorkspace', question) as Promise<AskOutcome>;
}

/** A source path as the engine reports it (relative to the folder, or absolute) → a file on disk. */
function sourceFile(p: string): string {
  return path.isAbsolute(p) ? p : path.join(workspaceRoot().fsPath, p);
}

suite('ask', () => {
  suiteSetup(async function () {
    this.timeout(300_000);
    await activeExtension();
    await waitFor('the model and a fresh memory', engineInfo, (i) => !!i.model && !!i.memory?.fresh && i.memory.files > 0, 240_000, 500);
  });

  test('titan.askWorkspace answers a question about the workspace, with sources from it', async function () {
    this.timeout(180_000);
    const started = Date.now();
    const outcome = await ask('Where is the bulk discount applied to an order total?');
    note(`answered in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(outcome.answer?.slice(0, 120))}; sources: ${outcome.sources?.map((s) => `${s.path}:${s.line ?? ''}`).join(', ')}`);
    assert.equal(outcome.error, undefined, `the question failed: ${outcome.error}`);
    assert.equal(typeof outcome.answer, 'string');
    assert.ok(outcome.answer!.trim().length > 0, 'the answer is empty');
    assert.ok(Array.isArray(outcome.sources) && outcome.sources.length > 0, 'the answer has no sources');
    for (const s of outcome.sources!) assert.ok(fs.existsSync(sourceFile(s.path)), `source ${s.path} is not a file of the workspace`);
    assert.ok(
      outcome.sources!.some((s) => s.path.endsWith('pricing.ts')),
      `retrieval should cite src/pricing.ts for "bulk discount" (sources: ${outcome.sources!.map((s) => s.path).join(', ')})`,
    );
  });

  test('killing the engine during an answer: a clear error, a restart, and the next question is answered', async function () {
    this.timeout(300_000);
    const before = await engineInfo();
    const answering = ask('Explain step by step how Inventory.remove and needsRestock work together, with an example.');
    // Kill once the answer is under way (the engine reports the ask as busy), a moment after it starts.
    await waitFor('the answer to start', engineInfo, (i) => !!i.busy?.includes('ask'), 30_000, 50);
    await sleep(300);
    await vscode.commands.executeCommand('titan.debug.killEngine');
    const killedAt = Date.now();
    const failed = await answering;
    note(`error shown: ${failed.error}`);
    assert.ok(failed.error, `the interrupted question should fail, but it answered: ${JSON.stringify(failed.answer)}`);
    assert.match(failed.error!, /engine/i, `the error should say the engine stopped: ${failed.error}`);
    assert.doesNotMatch(failed.error!, /\bat \S+:\d+:\d+|undefined|\[object Object\]/, `the error should be one clear line: ${failed.error}`);
    const after = await waitFor('the engine to restart', engineInfo, (i) => typeof i.pid === 'number' && i.pid !== before.pid && i.restarts === before.restarts + 1 && !!i.model, 120_000, 500);
    assert.ok(after.pid);
    note(`engine back (pid ${before.pid} → ${after.pid}) ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
    const next = await ask('What does restockReport print?');
    assert.equal(next.error, undefined, `the next question failed: ${next.error}`);
    assert.ok(next.answer && next.answer.trim().length > 0, 'the next answer is empty');
    note(`next answer: ${JSON.stringify(next.answer.slice(0, 120))}`);
  });
});
