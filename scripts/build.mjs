// Bundles the engine CLI (Node/CJS), the engine worker, the extension host (Node/CJS, vscode external)
// and the webview (browser/ESM) with esbuild.
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';

const watch = process.argv.includes('--watch');
const common = { bundle: true, sourcemap: true, logLevel: 'warning', target: 'node20' };
// Native and data-heavy packages stay outside the bundles and load from node_modules.
// tsx is only reached when running from source (tests), never from the bundles.
const nodeExternal = ['onnxruntime-node', 'onnxruntime-common', 'vscode', '@huggingface/transformers', 'tsx', 'tsx/cjs'];

const builds = [
  { entryPoints: { 'engine/cli': 'engine/cli.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal },
];
if (fs.existsSync('engine/runtime/worker.ts')) builds.push({ entryPoints: { 'engine/worker': 'engine/runtime/worker.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('engine/bench/child.ts')) builds.push({ entryPoints: { 'engine/bench-child': 'engine/bench/child.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('engine/server.ts')) builds.push({ entryPoints: { 'engine/server': 'engine/server.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('engine/server/titanize-worker.ts')) builds.push({ entryPoints: { 'engine/titanize-worker': 'engine/server/titanize-worker.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('engine/train/align-worker.ts')) builds.push({ entryPoints: { 'engine/align-worker': 'engine/train/align-worker.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('extension/extension.ts')) builds.push({ entryPoints: { extension: 'extension/extension.ts' }, platform: 'node', format: 'cjs', outdir: 'dist', external: nodeExternal });
if (fs.existsSync('webview/main.ts')) builds.push({ entryPoints: { 'webview/main': 'webview/main.ts' }, platform: 'browser', format: 'esm', outdir: 'dist', target: 'es2022' });

for (const options of builds) {
  const opts = { ...common, ...options };
  if (watch) await (await esbuild.context(opts)).watch();
  else await esbuild.build(opts);
}
