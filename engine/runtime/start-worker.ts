// Starting one of the engine's worker threads, bundled or from source.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts `<bundledName>` from `dir` (the bundles sit side by side in dist/engine/), or else the first
 * existing TypeScript source among `sources` (tests run from source). Workers do not inherit tsx's
 * loader, nor honour `--import` in execArgv on Node 20, so a source worker starts from a small boot
 * script that registers tsx's CommonJS hook and then loads the file.
 */
export function startWorker(dir: string, bundledName: string, sources: string[], options: WorkerOptions = {}): Worker {
  const bundled = path.join(dir, bundledName);
  if (fs.existsSync(bundled)) return new Worker(bundled, options);
  const source = sources.map((s) => path.join(dir, s)).find((s) => fs.existsSync(s));
  if (!source) throw new Error(`worker script ${bundledName} not found beside ${dir}; run npm run build`);
  return new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(source)});`, { ...options, eval: true });
}
