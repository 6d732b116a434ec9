// Summarizes onnxruntime profile files (from `titan stream --profile PREFIX`): per graph, the number
// of runs, wall time per run against the sum of kernel times (the gap is dispatch and sync), and the
// ops that take the most time, by execution provider.
// Usage: node scripts/ort-profile-summary.mjs <profile.json>…
import * as fs from 'node:fs';

for (const file of process.argv.slice(2)) {
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const byOp = new Map();
  let kernelTotal = 0;
  for (const e of kernels) {
    const key = `${e.args.provider ?? '?'} ${e.args.op_name}`;
    const v = byOp.get(key) ?? { us: 0, count: 0 };
    v.us += e.dur;
    v.count += 1;
    byOp.set(key, v);
    kernelTotal += e.dur;
  }
  const wall = runs.reduce((a, e) => a + e.dur, 0);
  const n = Math.max(1, runs.length);
  console.log(`== ${file}`);
  console.log(`runs ${runs.length}; wall ${(wall / n / 1000).toFixed(2)} ms/run; kernels ${(kernelTotal / n / 1000).toFixed(2)} ms/run over ${(kernels.length / n).toFixed(0)} kernels/run`);
  const top = [...byOp.entries()].sort((a, b) => b[1].us - a[1].us).slice(0, 25);
  for (const [key, v] of top) console.log(`  ${key.padEnd(44)} ${(v.us / n / 1000).toFixed(3).padStart(9)} ms/run  ${(v.count / n).toFixed(0).padStart(5)} calls/run`);
  // Events of other categories: where a provider records device-side timings, they show here. The
  // WebGPU provider's GPU timestamps are named node&op&shader program; they are summed by op/program.
  const others = new Map();
  for (const e of events) {
    if (e.cat === 'Session' || e.cat === 'Node' || typeof e.dur !== 'number') continue;
    const parts = String(e.name).split('&');
    const key = `[${e.cat}] ${parts.length >= 3 ? `${parts[1]}/${parts[2]}` : String(e.name).replace(/[_\d]+$/, '')}`;
    const v = others.get(key) ?? { us: 0, count: 0 };
    v.us += e.dur;
    v.count += 1;
    others.set(key, v);
  }
  const othersTotal = [...others.values()].reduce((a, v) => a + v.us, 0);
  if (others.size) console.log(`  other events (per run; ${(othersTotal / n / 1000).toFixed(2)} ms/run in all):`);
  for (const [key, v] of [...others.entries()].sort((a, b) => b[1].us - a[1].us).slice(0, 25)) {
    console.log(`    ${key.slice(0, 60).padEnd(60)} ${(v.us / n / 1000).toFixed(3).padStart(9)} ms/run  ${(v.count / n).toFixed(0).padStart(5)} events/run`);
  }
}
