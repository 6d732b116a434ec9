// The engine as it ships: the esbuild bundles in dist/engine/ (cli.js, server.js and their worker
// scripts), rebuilt when a source file is newer. Reliability and security tests run these rather than
// the sources through tsx, whose own IPC and loader would blur what the engine itself does.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from './record';

export const CLI_BUNDLE = path.join(REPO_ROOT, 'dist/engine/cli.js');
export const SERVER_BUNDLE = path.join(REPO_ROOT, 'dist/engine/server.js');

function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, fs.statSync(p).mtimeMs);
  }
  return t;
}

let checked = false;

/** Builds dist/ unless both engine bundles are newer than every engine and protocol source. */
export function ensureEngineBundle(): void {
  if (checked) return;
  const built = Math.min(...[CLI_BUNDLE, SERVER_BUNDLE].map((f) => (fs.existsSync(f) ? fs.statSync(f).mtimeMs : 0)));
  if (built < Math.max(newest(path.join(REPO_ROOT, 'engine')), newest(path.join(REPO_ROOT, 'protocol')))) {
    execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts/build.mjs')], { cwd: REPO_ROOT, stdio: 'inherit' });
  }
  checked = true;
}
