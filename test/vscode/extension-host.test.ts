// Extension-host tests: the Mocha suites under test/vscode/suite/ run inside a real VS Code extension host
// (VS Code 1.139.1 from code-server, opened in Chromium with `extensionTestsPath`), against the extension
// built into dist/ and the bundled demo model. Each Mocha test is reported here as a subtest, so node's
// summary counts them; the run as a whole must also end with exit code 0.
//
// Needs `bash scripts/vscode-e2e-setup.sh` (scripts/test.sh runs it). Output: test-output/vscode/extension-host/.
// TITAN_E2E_GREP=<regexp> runs a subset of the Mocha tests.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { prepareWorkspace, runExtensionHostTests } from './harness';

const EXPECTED_SUITES = ['activation', 'configuration', 'engine', 'ask', 'memory'];

test('extension-host tests in a real VS Code', { timeout: 20 * 60_000 }, async (t) => {
  const started = Date.now();
  const run = await runExtensionHostTests({
    name: 'extension-host',
    workspace: (dir) => prepareWorkspace(dir),
    grep: process.env.TITAN_E2E_GREP,
    timeoutMs: 18 * 60_000,
  });
  t.diagnostic(`extension host run: ${((Date.now() - started) / 1000).toFixed(1)} s, exit code ${run.exitCode}, output ${run.dir}`);
  if (run.report) t.diagnostic(run.report);
  assert.ok(run.results, `the Mocha run wrote no results (exit code ${run.exitCode})\n${run.report}`);
  for (const r of run.results.tests) {
    await t.test(r.fullTitle, { skip: r.state === 'pending' ? 'pending in Mocha' : false }, (st) => {
      st.diagnostic(`${r.state} in ${r.durationMs} ms`);
      for (const n of r.notes ?? []) st.diagnostic(n);
      if (r.state === 'failed') {
        // The Mocha error as the extension host saw it (its stack is in the bundle, not here).
        const err = new Error(r.error ?? 'failed');
        err.stack = r.error ?? 'failed';
        throw err;
      }
    });
  }
  if (!process.env.TITAN_E2E_GREP) {
    const seen = new Set(run.results.tests.map((r) => r.fullTitle.split(' ')[0]));
    const missing = EXPECTED_SUITES.filter((s) => !seen.has(s));
    assert.deepEqual(missing, [], `suites that ran no test: ${missing.join(', ')}`);
  }
  assert.equal(run.results.failures, 0, `${run.results.failures} Mocha test(s) failed`);
  assert.equal(run.exitCode, 0, `the extension host exited with ${run.exitCode}\n${run.report}`);
});
