// The reliability tests' own record of what they did: one JSON file per test file under
// test-output/reliability/, which scripts/reliability-report.mjs renders into docs/reliability.md.
// Rewritten after every entry, so a run that dies half-way still leaves what it finished.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../..');
export const RELIABILITY_OUTPUT = path.join(REPO_ROOT, 'test-output', 'reliability');

export type Section = 'fuzz' | 'fault' | 'security' | 'limits';

export interface Entry {
  section: Section;
  /** Short name of the case (a fuzz target, a fault, a class of bad input). */
  name: string;
  /** What was done to the engine: the fault injected, the inputs tried. */
  injected: string;
  /** What must hold afterwards. */
  expected: string;
  outcome: 'pass' | 'fail';
  /** Figures worth reporting: repetitions, kill points, executions, corpus size… */
  figures?: Record<string, number | string>;
  error?: string;
}

const files = new Map<string, Entry[]>();

export function record(file: string, entry: Entry): void {
  const list = files.get(file) ?? [];
  const i = list.findIndex((e) => e.section === entry.section && e.name === entry.name);
  if (i >= 0) list[i] = entry;
  else list.push(entry);
  files.set(file, list);
  fs.mkdirSync(RELIABILITY_OUTPUT, { recursive: true });
  const out = { file, node: process.version, platform: `${process.platform}-${process.arch}`, writtenAt: new Date().toISOString(), entries: list };
  fs.writeFileSync(path.join(RELIABILITY_OUTPUT, `${file}.json`), JSON.stringify(out, null, 2) + '\n');
}

/**
 * Runs one case and records it: 'pass' when `fn` returns, 'fail' (with the error's first line) when
 * it throws, which is then rethrown for the test runner. `fn` may fill in figures as it goes.
 */
export async function tracked<T>(
  file: string,
  entry: Omit<Entry, 'outcome' | 'figures' | 'error'>,
  fn: (figures: Record<string, number | string>) => Promise<T>,
): Promise<T> {
  const figures: Record<string, number | string> = {};
  try {
    const result = await fn(figures);
    record(file, { ...entry, outcome: 'pass', figures });
    return result;
  } catch (e) {
    record(file, { ...entry, outcome: 'fail', figures, error: (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 300) });
    throw e;
  }
}
