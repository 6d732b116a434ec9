// titan align end to end on a tiny random Titan model: the held-out loss goes down; the adapter and
// the merged package are written, and the adapter re-merged by `titan titanize --adapter` gives the
// merged package's logits exactly; a cancelled run resumes from its checkpoint to the same weights as
// an uninterrupted run; μ follows its schedule; instruction data trains; bad input is a one-line error.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensorsHeader } from '../../engine/model/safetensors';
import { align, AlignCancelledError, type AlignEvent, type AlignOptions, type StepRecord } from '../../engine/train/align';
import { runAlignJob } from '../../engine/train/align-job';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { readPackage } from '../../engine/titanize/package';
import { loadDataset, scoreFrom } from '../../engine/train/data';
import { loraSlots, shapeA, shapeB } from '../../engine/train/lora';
import { TrainingSessions } from '../../engine/train/sessions';
import { demoTitanPackage, runTitan, tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';

let root: string;
let pkg: string;
let ws: string;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-align-'));
  pkg = await tinyTitanPackage(path.join(root, 'tiny'), { operator_mode: 'delta_rule' });
  ws = path.join(root, 'ws');
  writeSyntheticWorkspace(ws, { count: 16, lines: 50 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

function options(out: string, extra: Partial<AlignOptions> = {}): AlignOptions {
  return {
    packageDir: pkg,
    data: { kind: 'workspace', dir: ws },
    out,
    steps: 6,
    lr: 3e-3,
    weightDecay: 0.01,
    clip: 1,
    batch: 2,
    sequence: 64,
    lora: { r: 4, alpha: 8, dropout: 0.05, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], rslora: false },
    mag: { schedule: 'constant' },
    seed: 3,
    evalSequences: 8,
    provider: 'cpu',
    threads: 1,
    ...extra,
  };
}

describe('titan align (tiny model)', () => {
  test('the CLI trains, lowers the held-out loss and writes adapter + merged package; titanize --adapter reproduces it', async (t) => {
    const out = path.join(root, 'cli-out');
    const run = await runTitan(['align', pkg, '--data', `workspace:${ws}`, '--steps', '12', '--seq', '64', '--batch', '2', '--lr', '3e-3', '--rank', '4', '--alpha', '8', '--out', out, '--threads', '1', '--eval-sequences', '8', '--json'], { timeoutMs: 600_000 });
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    t.diagnostic(`validation loss ${report.validation.before.loss.toFixed(4)} → ${report.validation.after.loss.toFixed(4)} in ${report.seconds.toFixed(1)} s (${report.tokensPerSecond.toFixed(0)} tokens/s)`);
    assert.ok(report.validation.after.loss < report.validation.before.loss - 0.01, 'held-out loss must go down');
    assert.match(run.stderr, /step 12\/12 {2}loss \d\.\d{4} {2}lr .* tok\/s .*ETA/);
    assert.match(run.stderr, /validation at step 0: loss/);
    // Adapter: tptt's key layout, every layer × q/k/v/o × A/B, shapes [r, in] / [out, r].
    const keys = readSafetensorsHeader(path.join(out, 'adapter', 'adapter_model.safetensors'));
    assert.equal(keys.length, 2 * 4 * 2);
    const qa = keys.find((k) => k.name === 'model.model.layers.1.self_attn.base_attn.q_proj.lora_A.default.weight')!;
    assert.deepEqual(qa.shape, [4, 64]);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter', 'adapter_config.json'), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.peft_type, 'LORA');
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'adapter', 'config.json'), 'utf8')).model_type, 'tptt');
    // The adapter through titanize --adapter gives the merged package's logits exactly.
    const again = path.join(root, 'retitanized');
    const hf = path.join(path.dirname(pkg), 'hf');
    const conv = await runTitan(['titanize', hf, '--adapter', path.join(out, 'adapter'), '--out', again, '--window', '64', '--chunk', '16']);
    assert.equal(conv.code, 0, conv.stderr);
    const ids = '5,17,99,3,250,41,7,7,180,66,12,200,31,9,140,2,77,5,61,101';
    const logits = async (dir: string) => JSON.parse((await runTitan(['logits', dir, '--ids', ids, '--positions', '0,9,19', '--json'])).stdout);
    const [a, b, base] = await Promise.all([logits(report.mergedPackage), logits(again), logits(pkg)]);
    assert.deepEqual(a.logits ?? a, b.logits ?? b, 'titanize --adapter must give the merged package exactly');
    assert.notDeepEqual(a.logits ?? a, base.logits ?? base, 'the alignment must change the model');
  });

  test('a cancelled run resumes from its checkpoint to the weights of an uninterrupted run', async () => {
    const straight = path.join(root, 'straight');
    await align(options(straight, { checkpointEvery: 2 }));
    const resumed = path.join(root, 'resumed');
    const controller = new AbortController();
    await assert.rejects(
      align({ ...options(resumed, { checkpointEvery: 2 }), signal: controller.signal, onEvent: (e) => e.type === 'step' && e.step === 3 && controller.abort() }),
      (e: Error) => e instanceof AlignCancelledError && /cancelled after step 3 of 6; .* --resume/.test(e.message),
    );
    const state = JSON.parse(fs.readFileSync(path.join(resumed, 'checkpoint', 'trainer-state.json'), 'utf8'));
    assert.equal(state.step, 3);
    await assert.rejects(align(options(resumed, { checkpointEvery: 2 })), /holds a checkpoint of an earlier run; pass --resume/);
    await assert.rejects(align(options(resumed, { checkpointEvery: 2, lr: 1e-3, resume: true })), /settings differ from the checkpoint's \(lr: 0\.003 → 0\.001\)/);
    const report = await align(options(resumed, { checkpointEvery: 2, resume: true }));
    assert.equal(report.steps.resumedFrom, 3);
    const bytes = (dir: string) => fs.readFileSync(path.join(dir, 'adapter', 'adapter_model.safetensors'));
    assert.ok(bytes(straight).equals(bytes(resumed)), 'resumed adapter differs from the uninterrupted one');
    const log = (dir: string) => fs.readFileSync(path.join(dir, 'train-log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
    assert.deepEqual(log(resumed), log(straight));
  });

  test('μ follows the gradual and cyclic schedules step by step', async () => {
    const gradual = await align(options(path.join(root, 'gradual'), { steps: 4, mag: { schedule: 'gradual', rampSteps: 2 }, merge: false, evalEvery: 0 }));
    const mus = (dir: string) => fs.readFileSync(path.join(dir, 'train-log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as StepRecord).mu);
    assert.deepEqual(mus(gradual.out), [0.01, 0.255, 0.5, 0.5]);
    assert.equal(gradual.mergedPackage, null);
    const cyclic = await align(options(path.join(root, 'cyclic'), { steps: 4, mag: { schedule: 'cyclic' }, merge: false, evalEvery: 0 }));
    assert.deepEqual(mus(cyclic.out), [0, 0.5, 1, 0]);
  });

  test('as a worker-thread job (the engine server path): events stream, the main thread stays free, cancelling keeps a checkpoint', async () => {
    const out = path.join(root, 'job');
    const input = options(out, { steps: 4, evalEvery: 0, merge: false });
    const events: AlignEvent[] = [];
    const controller = new AbortController();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 20);
    let stoppedAt = -1;
    try {
      await assert.rejects(
        runAlignJob(input, { signal: controller.signal, onEvent: (e) => (events.push(e), e.type === 'step' && e.step === 2 && controller.abort()) }),
        (e: Error) => {
          // The cancel message reaches the worker between sequences: during step 3 or just after it.
          const m = /cancelled after step (\d) of 4/.exec(e.message);
          stoppedAt = m ? Number(m[1]) : -1;
          return e instanceof AlignCancelledError && (stoppedAt === 2 || stoppedAt === 3);
        },
      );
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, 'the main thread must keep running while the worker trains');
    const steps = events.filter((e) => e.type === 'step').map((e) => (e as { step: number }).step);
    assert.deepEqual(steps, stoppedAt === 2 ? [1, 2] : [1, 2, 3]);
    assert.ok(events.some((e) => e.type === 'eval') && events.some((e) => e.type === 'start'));
    const report = await runAlignJob({ ...input, resume: true });
    assert.equal(report.steps.done, 4);
    assert.equal(report.steps.resumedFrom, stoppedAt);
  });

  test('a time budget (--minutes) trains until the time is spent and reports the steps it made', async () => {
    const report = await align(options(path.join(root, 'timed'), { steps: undefined, minutes: 0.1, merge: false }));
    assert.ok(report.steps.done >= 1 && report.steps.total === report.steps.done);
    assert.equal(report.settings.minutes, 0.1);
    assert.ok(report.validation.after !== null);
    await assert.rejects(align(options(path.join(root, 'timed2'), { minutes: 1 })), /give one of --steps, --epochs and --minutes/);
  });

  test('instruction data trains on the answers', async () => {
    const file = path.join(root, 'instr.jsonl');
    const lines = Array.from({ length: 12 }, (_, i) => JSON.stringify({ instruction: `Name item ${i % 3}.`, output: ['alpha', 'beta', 'gamma'][i % 3] }));
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const report = await align(options(path.join(root, 'instr'), { data: { kind: 'jsonl', file }, steps: 10, batch: 4, lr: 1e-2, merge: false, evalEvery: 0 }));
    assert.equal(report.data.kind, 'jsonl');
    assert.ok(report.train.lastLoss! < report.train.firstLoss!, `${report.train.firstLoss} → ${report.train.lastLoss}`);
  });

  test('a base (non-Titan) package aligns too, with the adapter in PEFT layout', async () => {
    const base = path.join(root, 'base-pkg');
    const conv = await runTitan(['convert', path.join(path.dirname(pkg), 'hf'), '--out', base]);
    assert.equal(conv.code, 0, conv.stderr);
    const report = await align({ ...options(path.join(root, 'base-out'), { steps: 2, evalEvery: 0 }), packageDir: base });
    const keys = readSafetensorsHeader(path.join(report.adapter, 'adapter_model.safetensors')).map((k) => k.name);
    assert.ok(keys.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'), keys.join(', '));
    assert.ok(!fs.existsSync(path.join(report.adapter, 'config.json')), 'no tptt config for a base model');
    assert.ok(report.mergedPackage && fs.existsSync(path.join(report.mergedPackage, 'decoder.onnx')));
    await assert.rejects(align({ ...options(path.join(root, 'base-out2'), { steps: 2, mag: { schedule: 'cyclic' } }), packageDir: base }), /base package \(no Memory-as-Gate\); μ schedules need a Titan package/);
  });

  test('bad command lines and inputs are one-line errors', async () => {
    const cases: [string[], number, RegExp][] = [
      [['align', pkg], 2, /missing --data workspace:<dir> or jsonl:<file>/],
      [['align', pkg, '--data', `workspace:${ws}`, '--steps', '3', '--epochs', '1'], 2, /give one of --steps, --epochs and --minutes/],
      [['align', pkg, '--data', `workspace:${ws}`, '--targets', 'q,z'], 2, /--targets: "z" is not one of q, k, v, o, gate, up, down/],
      [['align', pkg, '--data', `workspace:${ws}`, '--mag-schedule', 'wavy'], 2, /--mag-schedule must be one of constant, gradual, cyclic/],
      [['align', path.join(root, 'nope'), '--data', `workspace:${ws}`], 1, /is not a Titan model package/],
      [['align', pkg, '--data', `workspace:${path.join(root, 'nope')}`, '--out', path.join(root, 'o1')], 1, /does not exist or is not a folder/],
      [['align', pkg, '--data', `workspace:${ws}`, '--out', path.join(pkg, 'inside')], 1, /is inside the package being aligned/],
      [['align', pkg, '--data', `workspace:${ws}`, '--out', path.join(root, 'o2'), '--resume'], 1, /--resume: .* holds no checkpoint/],
      [['align', pkg, '--data', `workspace:${ws}`, '--seq', '64', '--loss-from', '64', '--out', path.join(root, 'o3')], 1, /--loss-from 64 leaves nothing to score in sequences of 64 tokens \(--seq\); use a value below 64/],
      [['align', pkg, '--data', `workspace:${ws}`, '--loss-from', '1.5'], 2, /--loss-from must be an integer, got "1.5"/],
    ];
    for (const [args, code, re] of cases) {
      const r = await runTitan(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});

// --loss-from on the real demo model: the per-step loss is the mean NLL over the targets at positions
// ≥ N only, as the evaluation graph scores them (with B = 0 the LoRA adds nothing, so step 1 sees the
// converted model); validation counts the same positions; a resume with another value is refused.
describe('titan align --loss-from (code-llama-19m)', () => {
  const T = 128;
  const N = 64;
  let demo: string;
  let demoWs: string;
  before(() => {
    demo = demoTitanPackage(path.join(root, 'demo-titan'), { operator_mode: 'delta_rule', mag_weight: 0.5, max_self_attn_length: 32, max_chunk_size: 32 });
    demoWs = path.join(root, 'demo-ws');
    writeSyntheticWorkspace(demoWs, { count: 3, lines: 14, seed: 7 });
  });

  test('the step loss is the mean NLL over positions ≥ N of the batch, and validation scores the same positions', async () => {
    const tokenizer = loadTokenizer(demo);
    const all = await loadDataset({ kind: 'workspace', dir: demoWs }, tokenizer, { sequence: T, maxValidationSequences: 8 });
    const data = scoreFrom(all, N);
    assert.ok(data.train.length >= 2 && data.train.length <= 6, `${data.train.length} training sequences`);
    // One step over every training sequence: the order inside the step does not change the mean.
    const lora = { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj'] as AlignOptions['lora']['targets'], rslora: false };
    const report = await align({ ...options(path.join(root, 'loss-from'), { packageDir: demo, data: { kind: 'workspace', dir: demoWs }, sequence: T, lossFrom: N, batch: data.train.length, steps: 1, evalSequences: 8, evalEvery: 0, merge: false, lora }) });
    const stepLoss = (JSON.parse(fs.readFileSync(path.join(report.out, 'train-log.jsonl'), 'utf8').trim().split('\n')[0]) as StepRecord).loss;

    const loaded = readPackage(demo);
    const values = new Map<string, Float32Array>();
    for (const s of loraSlots(loaded.config, lora)) {
      values.set(s.a, new Float32Array(shapeA(s, lora.r).reduce((a, b) => a * b, 1)).fill(0.01));
      values.set(s.b, new Float32Array(shapeB(s, lora.r).reduce((a, b) => a * b, 1)));
    }
    const sessions = new TrainingSessions(loaded, lora, { provider: 'cpu', threads: 1, workDir: path.join(root, 'loss-from-eval') });
    let [sumFrom, countFrom, sumAll, countAll] = [0, 0, 0, 0];
    try {
      for (const seq of all.train) {
        const { nll } = await sessions.run('eval', T, seq, values, 0.5, 1, null);
        nll.forEach((v, i) => {
          sumAll += v;
          countAll++;
          if (i >= N) {
            sumFrom += v;
            countFrom++;
          }
        });
      }
    } finally {
      await sessions.release();
    }
    const expected = sumFrom / countFrom;
    assert.ok(Math.abs(stepLoss - expected) <= 1e-5 * expected, `step loss ${stepLoss} vs mean NLL over positions ≥ ${N}: ${expected}`);
    assert.ok(Math.abs(expected - sumAll / countAll) > 0.05, `positions ≥ ${N} (${expected}) must score differently from all (${sumAll / countAll}) for this check to mean anything`);
    assert.equal(report.data.trainTokens, countFrom);
    assert.equal(report.validation.before!.tokens, data.validation.reduce((s, q) => s + q.scored.reduce((a, b) => a + b, 0), 0));
    assert.equal(report.settings.lossFrom, N);
    await assert.rejects(align({ ...options(path.join(root, 'loss-from'), { packageDir: demo, data: { kind: 'workspace', dir: demoWs }, sequence: T, lossFrom: 32, batch: data.train.length, steps: 1, evalSequences: 8, evalEvery: 0, merge: false, lora, resume: true }) }), /settings differ from the checkpoint's \(.*lossFrom: 64 → 32/);
  });
});
