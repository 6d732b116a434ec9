// Entry point that VS Code's extension host loads through `extensionTestsPath` (bundled by the harness into
// out/test/index.js). Runs the Mocha suites below with the TDD interface inside the real extension host,
// and writes every test's result to $TITAN_E2E_RESULTS for the node:test file that launched it.
import * as fs from 'node:fs';
import Mocha from 'mocha';
import { currentNotes } from './util';

interface Result {
  title: string;
  fullTitle: string;
  state: 'passed' | 'failed' | 'pending';
  durationMs: number;
  error?: string;
  notes?: string[];
}

export async function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'tdd', color: false, timeout: 60_000, reporter: 'spec' });
  if (process.env.TITAN_E2E_GREP) mocha.grep(process.env.TITAN_E2E_GREP);
  // Install suite()/test()/… as globals, then load the suites (order = run order).
  mocha.suite.emit('pre-require', globalThis, 'titan-e2e', mocha);
  await import('./activation');
  await import('./configuration');
  await import('./engine');
  await import('./ask');
  await import('./memory');
  await import('./align');

  const started = Date.now();
  const results: Result[] = [];
  const add = (t: Mocha.Test, state: Result['state'], err?: Error) => {
    const notes = currentNotes.splice(0);
    results.push({
      title: t.title,
      fullTitle: t.fullTitle(),
      state,
      durationMs: t.duration ?? 0,
      ...(err ? { error: `${err.message}\n${err.stack ?? ''}`.slice(0, 4000) } : {}),
      ...(notes.length ? { notes } : {}),
    });
  };
  await new Promise<void>((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const file = process.env.TITAN_E2E_RESULTS;
      if (file) {
        const summary = {
          tests: results,
          passes: results.filter((r) => r.state === 'passed').length,
          failures: results.filter((r) => r.state === 'failed').length,
          pending: results.filter((r) => r.state === 'pending').length,
          durationMs: Date.now() - started,
        };
        fs.writeFileSync(file, JSON.stringify(summary, null, 2));
      }
      if (failures > 0) reject(new Error(`${failures} extension-host test(s) failed`));
      else resolve();
    });
    runner.on('test', () => void currentNotes.splice(0));
    runner.on('pass', (t) => add(t, 'passed'));
    runner.on('fail', (t, err) => {
      // Hook failures arrive as the hook ("before all" …), reported as a failed test of that name.
      add(t as Mocha.Test, 'failed', err);
    });
    runner.on('pending', (t) => add(t, 'pending'));
  });
}
