// UI test in a real VS Code, driven like a person would through Chromium: the command palette's
// "Titan: Titanize Model…" on the bundled demo model → the settings form → Convert → "Align on This
// Workspace…" for a few seconds with its live loss plot → the chat view →
// a question about the test workspace → the streamed answer and its sources → a screenshot at
// test-output/vscode/chat.png. Then hostile content (a workspace file, the question, and an answer
// containing <script>, <img onerror> and javascript: links) must render as text, and a file edit must
// show up in the status bar's memory figures.
//
// Needs `bash scripts/vscode-e2e-setup.sh` (scripts/test.sh runs it). Output: test-output/vscode/ui/.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Frame, Locator } from 'playwright-core';
import { VscodeSession, outputRoot, prepareWorkspace, sessionDir } from './harness';

/** Sets window.__titanPwned if it ever runs; the test asserts it never does. */
const PWN = (where: string) => `window.__titanPwned='${where}'`;
const HOSTILE_MARKDOWN = (where: string) =>
  [
    `<script>${PWN(`${where}-script`)}</script>`,
    `<img src=x onerror="${PWN(`${where}-img`)}">`,
    `[release notes](javascript:${PWN(`${where}-link`)})`,
    `<a href="javascript:${PWN(`${where}-a`)}">raw link</a>`,
  ].join('\n');

const HOSTILE_FILE = `# Release notes\n\n${HOSTILE_MARKDOWN('file')}\n\nThe shelf release adds bulk discounts.\n`;

test('UI: Titanize the demo model from the palette, ask in the chat, see the streamed answer with sources', { timeout: 20 * 60_000 }, async (t) => {
  const dir = sessionDir('ui');
  const workspace = prepareWorkspace(dir, { 'notes/release-notes.md': HOSTILE_FILE });
  const session = await VscodeSession.open(dir, { name: 'ui', workspace });
  const { page } = session;
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      return await fn();
    } finally {
      t.diagnostic(`${name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  };
  try {
    await step('workbench', () => session.waitForWorkbench());
    const statusItem = page.locator('.statusbar-item', { hasText: 'Titan' }).first();
    await step('status bar item', () => statusItem.waitFor({ state: 'visible', timeout: 90_000 }));

    // ---- Titanize Model… → the demo → the settings form → Convert
    await step('palette: Titanize Model…', () => session.runCommand('Titan: Titanize Model…'));
    const demoRow = page.locator('.quick-input-widget [role=option]', { hasText: 'code-llama-19m' }).first();
    await demoRow.waitFor({ state: 'visible', timeout: 30_000 });
    assert.match((await demoRow.textContent()) ?? '', /demo/i, 'the quick pick offers the bundled demo model');
    await demoRow.click();
    const form = await step('settings form', () => session.webviewWith('#convert', 60_000));
    for (const id of ['#operator', '#mag-weight', '#window', '#chunk', '#semantics', '#dtype', '#cross-gate', '#adapter', '#cancel']) {
      assert.equal(await form.locator(id).count(), 1, `the settings form has ${id}`);
    }
    await waitEnabled(form.locator('#convert'), 60_000);
    await form.locator('#convert').click();
    const result = form.locator('#result');
    await step('conversion', () => result.waitFor({ state: 'visible', timeout: 600_000 }));
    const resultText = (await result.textContent()) ?? '';
    t.diagnostic(`conversion result: ${resultText.trim().replace(/\s+/g, ' ')}`);
    assert.equal(await form.locator('#general-error:not([hidden])').count(), 0, `conversion failed: ${await form.locator('#general-error').textContent()}`);
    await session.screenshot(path.join(dir, 'titanize.png'));

    // ---- Align on This Workspace… from the result: a short run with its live loss plot
    await form.locator('#align-workspace').click();
    const align = await step('align panel', () => session.webviewWith('#start', 60_000));
    for (const id of ['#budget', '#minutes', '#lr', '#mag-schedule', '#batch', '#sequence', '#stop', 'svg#loss-plot']) assert.equal(await align.locator(id).count(), 1, `the align panel has ${id}`);
    await align.locator('#minutes input').fill('0.1');
    await align.locator('#batch input').fill('1');
    await align.locator('#sequence input').fill('64');
    await waitEnabled(align.locator('#start'), 60_000);
    await align.locator('#start').click();
    await step('align: first step on the plot', () => align.locator('#loss-plot path.plot-train').waitFor({ state: 'attached', timeout: 300_000 }));
    assert.match((await align.locator('#stat-speed').textContent()) ?? '', /\d/, 'tokens/s shown');
    assert.ok(!(await align.locator('#stop').evaluate((b) => b.hasAttribute('disabled'))), 'Stop is live while training');
    const alignResult = align.locator('#align-result');
    await step('alignment', () => alignResult.waitFor({ state: 'visible', timeout: 300_000 }));
    assert.ok((await align.locator('#loss-plot .plot-validation-dot').count()) >= 2, 'validation before and after on the plot');
    assert.equal(await align.locator('#use-model').count(), 1, 'the aligned model is offered');
    t.diagnostic(`alignment: ${((await align.locator('#align-stage').textContent()) ?? '').trim()}`);
    await session.screenshot(path.join(dir, 'align.png'));

    // ---- the chat view
    await step('palette: Open Chat', () => session.runCommand('Titan: Open Chat'));
    const chat = await step('chat view', () => session.webviewWith('#prompt', 60_000));
    const memory = chat.locator('#memory-status');
    await step('memory fresh', () => session.waitForStatusBar(/tok · fresh/));
    await memory.filter({ hasText: /fresh/ }).waitFor({ timeout: 30_000 });
    const statusFresh = (await statusItem.textContent()) ?? '';
    assert.match(statusFresh, /Titan · .*code-llama-19m.* · cpu · .* tok · fresh/, `status bar: ${statusFresh}`);

    // ---- a question, its streamed answer and its sources
    await watchStreaming(chat);
    await chat.locator('#prompt').fill('Where is the bulk discount applied in pricing.ts?');
    await chat.locator('#send').click();
    const answer = chat.locator('.message.assistant:not(.streaming)').last();
    await step('answer', () => answer.waitFor({ timeout: 300_000 }));
    const renders = await streamingRenders(chat);
    t.diagnostic(`streamed renders of the answer before it ended: ${renders.length} (text lengths ${renders.slice(0, 12).join(', ')}${renders.length > 12 ? ', …' : ''})`);
    assert.ok(renders.length >= 2, `the answer should stream in pieces (saw ${renders.length} partial renders)`);
    const answerText = ((await answer.locator('.content').textContent()) ?? '').trim();
    assert.ok(answerText.length > 0, 'the answer is empty');
    const sources = answer.locator('.sources a.source');
    assert.ok((await sources.count()) > 0, 'the answer lists no sources');
    const sourcePaths = await sources.evaluateAll((links) => links.map((a) => a.getAttribute('data-path') ?? ''));
    t.diagnostic(`answer (${answerText.length} chars): ${JSON.stringify(answerText.slice(0, 200))}; sources: ${sourcePaths.join(', ')}`);
    assert.ok(sourcePaths.some((p) => p.endsWith('pricing.ts')), `sources should include src/pricing.ts: ${sourcePaths.join(', ')}`);
    for (const p of sourcePaths) assert.ok(fs.existsSync(path.isAbsolute(p) ? p : path.join(workspace, p)), `source ${p} is a workspace file`);

    // ---- a source opens the file at its line (beside the chat, for the screenshot)
    await session.runCommand('View: Close All Editors');
    await page.locator('.tab', { hasText: 'Titanize' }).waitFor({ state: 'detached', timeout: 30_000 });
    const pricing = sources.filter({ hasText: 'pricing.ts' }).first();
    await pricing.click();
    await page.locator('.tab.active', { hasText: 'pricing.ts' }).waitFor({ timeout: 30_000 });
    const shot = await session.screenshot(path.join(outputRoot, 'chat.png'));
    t.diagnostic(`screenshot: ${shot}`);

    // ---- the engine dies during an answer: the chat shows a clear error, the engine restarts, the next
    // question is answered
    const [enginePid, ...others] = session.enginePids();
    assert.ok(enginePid && others.length === 0, `one engine process in the server's group (found ${[enginePid, ...others].join(', ')})`);
    const errorsBefore = await chat.locator('.message.error').count();
    await chat.locator('#prompt').fill('Explain step by step how Inventory.remove and needsRestock work together.');
    await chat.locator('#send').click();
    await step('answer streaming', () => chat.locator('.message.assistant.streaming .content').filter({ hasText: /\S/ }).waitFor({ timeout: 120_000 }));
    process.kill(enginePid, 'SIGKILL');
    const crashError = chat.locator('.message.error').nth(errorsBefore);
    await step('error in the chat', () => crashError.waitFor({ timeout: 30_000 }));
    const crashText = ((await crashError.textContent()) ?? '').trim();
    t.diagnostic(`error shown after SIGKILL of pid ${enginePid}: ${crashText}`);
    assert.match(crashText, /engine stopped unexpectedly/i, `a clear error: ${crashText}`);
    await session.screenshot(path.join(dir, 'crash.png'));
    await step('engine restarted', () => session.waitForStatusBar(/tok · fresh/, 180_000));
    const restarted = session.enginePids();
    assert.ok(restarted.length === 1 && restarted[0] !== enginePid, `a new engine process (before ${enginePid}, now ${restarted.join(', ')})`);
    const answersBefore = await chat.locator('.message.assistant:not(.streaming)').count();
    await chat.locator('#prompt').fill('What does restockReport print?');
    await chat.locator('#send').click();
    const next = chat.locator('.message.assistant:not(.streaming)').nth(answersBefore);
    await step('answer after the restart', () => next.waitFor({ timeout: 300_000 }));
    assert.ok(((await next.locator('.content').textContent()) ?? '').trim().length > 0, 'the answer after the restart is empty');
    assert.equal(await chat.locator('.message.error').count(), errorsBefore + 1, 'no new error after the restart');

    // ---- hostile content renders as text
    // (1) the question itself and (2) a workspace file quoted in the sources, through the real extension path;
    await chat.locator('#prompt').fill(`What do the release notes say? ${HOSTILE_MARKDOWN('question')}`);
    const answersBeforeHostile = await chat.locator('.message.assistant:not(.streaming)').count();
    await chat.locator('#send').click();
    const hostileAnswer = chat.locator('.message.assistant:not(.streaming)').nth(answersBeforeHostile);
    await step('hostile answer', () => hostileAnswer.waitFor({ timeout: 300_000 }));
    const hostileSources = await hostileAnswer.locator('.sources a.source').evaluateAll((links) => links.map((a) => a.getAttribute('data-path') ?? ''));
    assert.ok(hostileSources.some((p) => p.endsWith('release-notes.md')), `the hostile file should be among the sources: ${hostileSources.join(', ')}`);
    // (3) an answer with the same content: the demo model does not write HTML, so the answer arrives the way
    // the host delivers one (a message to the webview's window, of the protocol's answerEnd shape).
    await chat.locator('body').evaluate((_body, text) => {
      const sources = [{ path: 'notes/release-notes.md', line: 3, reason: 'retrieved', snippet: text }];
      const stats = { promptTokens: 1, answerTokens: 1, seconds: 1, tokensPerSecond: 1 };
      window.postMessage({ type: 'answerEnd', id: 'hostile-answer', text: `Here they are:\n\n${text}\n\n\`\`\`html\n${text}\n\`\`\``, sources, stats, stopReason: 'eos' }, '*');
    }, HOSTILE_MARKDOWN('answer'));
    const injected = chat.locator('.message.assistant[data-id="hostile-answer"]');
    await injected.waitFor({ timeout: 10_000 });
    const dom = await chat.locator('#messages').evaluate((messages) => {
      const all = Array.from(messages.querySelectorAll('*'));
      return {
        scripts: messages.querySelectorAll('script').length,
        images: messages.querySelectorAll('img').length,
        iframes: messages.querySelectorAll('iframe, object, embed').length,
        handlers: all.flatMap((e) => Array.from(e.attributes).filter((a) => /^on/i.test(a.name)).map((a) => `${e.tagName}[${a.name}]`)),
        jsHrefs: all.filter((e) => /^\s*javascript:/i.test(e.getAttribute('href') ?? '') || /^\s*javascript:/i.test(e.getAttribute('src') ?? '')).length,
        text: messages.textContent ?? '',
        pwned: (window as unknown as { __titanPwned?: string }).__titanPwned ?? null,
      };
    });
    t.diagnostic(`hostile DOM check: ${JSON.stringify({ ...dom, text: undefined })}`);
    assert.equal(dom.scripts, 0, 'no <script> element in the messages');
    assert.equal(dom.images, 0, 'no <img> element in the messages');
    assert.equal(dom.iframes, 0, 'no embedded frames in the messages');
    assert.deepEqual(dom.handlers, [], 'no event-handler attributes in the messages');
    assert.equal(dom.jsHrefs, 0, 'no javascript: href or src in the messages');
    assert.equal(dom.pwned, null, `hostile code ran: window.__titanPwned = ${dom.pwned}`);
    for (const where of ['question', 'answer']) {
      assert.ok(dom.text.includes(`<script>${PWN(`${where}-script`)}</script>`), `the ${where}'s <script> is shown as text`);
      assert.ok(dom.text.includes(`onerror="${PWN(`${where}-img`)}"`), `the ${where}'s <img onerror> is shown as text`);
    }
    // Clicking the inert link does not navigate or run it.
    const link = injected.locator('a', { hasText: 'release notes' }).first();
    if ((await link.count()) > 0) await link.click();
    assert.equal(await chat.locator('body').evaluate(() => (window as unknown as { __titanPwned?: string }).__titanPwned ?? null), null, 'clicking the link ran nothing');
    await session.screenshot(path.join(dir, 'hostile.png'));

    // ---- an edit in the editor, saved, shows up in the status bar's memory figures
    const statusBefore = await statusItem.filter({ hasText: /tok · fresh/ }).textContent({ timeout: 120_000 });
    await page.locator('.tab.active', { hasText: 'pricing.ts' }).click();
    await page.locator('.monaco-editor .view-lines').first().click();
    await page.keyboard.press('Control+End');
    for (const line of [
      '// Shipping is free for orders over 500; below that it costs a flat 7.5 per order,',
      '// plus 1.25 for every kilogram above 2 kg, rounded to cents, for every destination zone.',
      '// Returns within 30 days are refunded in full, minus the shipping cost of the return.',
    ]) {
      await page.keyboard.press('Enter');
      await page.keyboard.type(line);
    }
    await page.keyboard.press('Control+S');
    await step('status bar after an edit', () =>
      page.waitForFunction(
        (before) => {
          const item = Array.from(document.querySelectorAll('.statusbar-item')).find((e) => e.textContent?.includes('Titan'));
          const text = item?.textContent ?? '';
          return text !== before && /tok · fresh/.test(text) ? text : false;
        },
        statusBefore,
        { timeout: 180_000, polling: 250 },
      ),
    );
    const statusAfter = (await statusItem.textContent()) ?? '';
    t.diagnostic(`status bar: "${statusBefore}" → "${statusAfter}"`);
    assert.ok(fs.readFileSync(path.join(workspace, 'src', 'pricing.ts'), 'utf8').includes('Returns within 30 days'), 'the edit was saved');
    assert.notEqual(statusAfter, statusBefore);
  } catch (e) {
    throw new Error(await session.dump((e as Error).message), { cause: e });
  } finally {
    await session.close();
  }
});

async function waitEnabled(button: Locator, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (await button.evaluate((b) => (b as HTMLButtonElement).disabled || b.hasAttribute('disabled'))) {
    if (Date.now() > deadline) throw new Error(`${await button.getAttribute('id')} stayed disabled for ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Records, inside the chat webview, the text length of each render of a streaming answer. */
async function watchStreaming(chat: Frame): Promise<void> {
  await chat.locator('#messages').evaluate((messages) => {
    const w = window as unknown as { __titanRenders: number[] };
    w.__titanRenders = [];
    new MutationObserver(() => {
      const streaming = messages.querySelector('.message.assistant.streaming .content');
      const n = streaming?.textContent?.length ?? 0;
      if (n > 0 && w.__titanRenders[w.__titanRenders.length - 1] !== n) w.__titanRenders.push(n);
    }).observe(messages, { childList: true, subtree: true, characterData: true });
  });
}

async function streamingRenders(chat: Frame): Promise<number[]> {
  return chat.locator('#messages').evaluate(() => (window as unknown as { __titanRenders: number[] }).__titanRenders ?? []);
}
