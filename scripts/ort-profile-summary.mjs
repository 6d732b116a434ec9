// Summarizes onnxruntime profile files (from `titan stream --profile PREFIX`): per graph, the number
// of runs, wall time per run against the sum of kernel times (the gap is dispatch and sync), and the
// ops that take the most time, by execution provider.
// Usage: node scripts/ort-profile-summary.mjs <profile.json>…
import * as fs from 'node:fs';

/** Total duration and count of `events` per key, largest total first. */
function tally(events, keyOf) {
  const byKey = new Map();
  for (const e of events) {
    const key = keyOf(e);
    const v = byKey.get(key) ?? { us: 0, count: 0 };
    v.us += e.dur;
    v.count += 1;
    byKey.set(key, v);
  }
  return [...byKey.entries()].sort((a, b) => b[1].us - a[1].us);
}

for (const file of process.argv.slice(2)) {
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const kernelTotal = kernels.reduce((a, e) => a + e.dur, 0);
  const wall = runs.reduce((a, e) => a + e.dur, 0);
  const n = Math.max(1, runs.length);
  const perRun = (us) => (us / n / 1000).toFixed(3).padStart(9);
  const count = (c) => (c / n).toFixed(0).padStart(5);
  console.log(`== ${file}`);
  console.log(`runs ${runs.length}; wall ${(wall / n / 1000).toFixed(2)} ms/run; kernels ${(kernelTotal / n / 1000).toFixed(2)} ms/run over ${(kernels.length / n).toFixed(0)} kernels/run`);
  for (const [key, v] of tally(kernels, (e) => `${e.args.provider ?? '?'} ${e.args.op_name}`).slice(0, 25)) {
    console.log(`  ${key.padEnd(44)} ${perRun(v.us)} ms/run  ${count(v.count)} calls/run`);
  }
  // Events of other categories: where a provider records device-side timings, they show here. The
  // WebGPU provider's GPU timestamps are named node&op&shader program; they are summed by op/program.
  const others = events.filter((e) => e.cat !== 'Session' && e.cat !== 'Node' && typeof e.dur === 'number');
  if (!others.length) continue;
  const othersTotal = others.reduce((a, e) => a + e.dur, 0);
  console.log(`  other events (per run; ${(othersTotal / n / 1000).toFixed(2)} ms/run in all):`);
  const otherKey = (e) => {
    const parts = String(e.name).split('&');
    return `[${e.cat}] ${parts.length >= 3 ? `${parts[1]}/${parts[2]}` : String(e.name).replace(/[_\d]+$/, '')}`;
  };
  for (const [key, v] of tally(others, otherKey).slice(0, 25)) {
    console.log(`    ${key.slice(0, 60).padEnd(60)} ${perRun(v.us)} ms/run  ${count(v.count)} events/run`);
  }
}
