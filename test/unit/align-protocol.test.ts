// The alignment messages' guards (Align panel ⇄ host, the engine's align params and progress), the
// engine's reading of the Align form, and the loss plot's geometry: what is accepted, what is
// rejected with a reason, and where points land.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as v from 'valibot';
import { AlignParamsSchema, AlignProgressSchema, ValidateAlignSettingsParamsSchema, explainRejection, parseAlignToHost, parseHostToAlign, parseHostToTitanize, parseParams, parseTitanizeToHost } from '../../protocol/index';
import { readAlignForm } from '../../engine/server/align-form';
import { alignProgressOf } from '../../engine/server/engine-server';
import { lossPlotModel, niceStep, smoothed } from '../../webview/loss-plot';

describe('align panel → host messages', () => {
  const valid: unknown[] = [
    { type: 'ready' },
    { type: 'validate', id: 'v1', settings: { budget: 'steps', steps: 'abc', lr: 5e-4 } },
    { type: 'start', id: 's1', settings: {}, resume: false },
    { type: 'start', id: 's2', settings: { budget: 'minutes', minutes: '10' }, resume: true },
    { type: 'stop' },
    { type: 'useModel', path: '/models/pkg-aligned-ws' },
    { type: 'openChat' },
  ];
  for (const msg of valid) it(`accepts ${JSON.stringify(msg)}`, () => assert.deepEqual(parseAlignToHost(msg), msg));

  const invalid: [string, unknown][] = [
    ['null', null],
    ['an unknown intent', { type: 'deleteRun', path: '/' }],
    ['start without resume', { type: 'start', id: 's', settings: {} }],
    ['start with a string resume', { type: 'start', id: 's', settings: {}, resume: 'yes' }],
    ['start with settings that are not an object', { type: 'start', id: 's', settings: 'fast', resume: false }],
    ['validate without id', { type: 'validate', settings: {} }],
    ['useModel with a number', { type: 'useModel', path: 7 }],
    ['useModel with a huge path', { type: 'useModel', path: 'x'.repeat(5000) }],
  ];
  for (const [name, msg] of invalid) {
    it(`rejects ${name}`, () => {
      assert.equal(parseAlignToHost(msg), null);
      assert.notEqual(explainRejection('align', msg), 'valid');
    });
  }

  it('drops unknown keys', () => {
    assert.deepEqual(parseAlignToHost({ type: 'stop', command: 'rm -rf /' }), { type: 'stop' });
  });

  it('lets the Titanize form ask for alignment of the package it wrote, by path only', () => {
    assert.deepEqual(parseTitanizeToHost({ type: 'align', path: '/models/p' }), { type: 'align', path: '/models/p' });
    assert.equal(parseTitanizeToHost({ type: 'align' }), null);
    assert.ok(parseHostToTitanize({ type: 'done', id: 'c', model: 'p', path: '/models/p', seconds: 1 }));
  });

  it('passes an adapter’s recorded settings to the Titanize form only in their field types', () => {
    const adapterSettings = { operator: 'delta_product', magWeight: 0.25, window: null, chunk: 8, semantics: 'exact', crossGate: false };
    assert.deepEqual(parseHostToTitanize({ type: 'validation', id: 'v', errors: [], adapterSettings }), { type: 'validation', id: 'v', errors: [], adapterSettings });
    assert.equal(parseHostToTitanize({ type: 'validation', id: 'v', errors: [], adapterSettings: { window: '32' } }), null);
    assert.equal(parseHostToTitanize({ type: 'validation', id: 'v', errors: [], adapterSettings: { semantics: 'fuzzy' } }), null);
  });
});

describe('host → align panel messages', () => {
  const step = { kind: 'step', step: 3, totalSteps: 10, loss: 4.2, lr: 5e-4, mu: 0.5, gradNorm: 1.3, tokensPerSecond: 900, elapsed: 12, eta: 30 };
  it('accepts every progress kind, with gaps for non-finite losses', () => {
    for (const value of [
      { kind: 'stage', message: 'reading the data' },
      { kind: 'start', totalSteps: null, minutes: 10, startStep: 0, provider: 'cpu', trainSequences: 40, validationSequences: 4, trainTokens: 20480 },
      step,
      { ...step, loss: null, gradNorm: null },
      { kind: 'eval', step: 3, loss: 4.1, perplexity: 60.3 },
      { kind: 'checkpoint', step: 3 },
    ]) {
      assert.deepEqual(parseHostToAlign({ type: 'progress', value }), { type: 'progress', value });
    }
  });

  it('rejects malformed progress, results and field errors', () => {
    assert.equal(parseHostToAlign({ type: 'progress', value: { ...step, step: -1 } }), null);
    assert.equal(parseHostToAlign({ type: 'progress', value: { ...step, eta: Infinity } }), null);
    assert.equal(parseHostToAlign({ type: 'progress', value: { ...step, loss: '4.2' } }), null);
    assert.equal(parseHostToAlign({ type: 'progress', value: { kind: 'shell', command: 'x' } }), null);
    assert.equal(parseHostToAlign({ type: 'validation', id: 'v', errors: [{ field: 'rank', message: 'x' }], resumable: false }), null);
    assert.equal(parseHostToAlign({ type: 'validation', id: 'v', errors: [] }), null, 'resumable is required');
    assert.ok(parseHostToAlign({ type: 'validation', id: 'v', errors: [{ field: 'lr', message: 'bad' }, { field: null, message: 'pkg' }], resumable: true }));
    assert.ok(parseHostToAlign({ type: 'done', id: 'a', model: null, path: null, seconds: 3, steps: 2, before: null, after: null, notes: [] }));
    assert.equal(parseHostToAlign({ type: 'done', id: 'a', model: 'm', path: '/p', seconds: 3, steps: 2, before: 1, after: 'low', notes: [] }), null);
    assert.equal(parseHostToAlign({ type: 'init', packagePath: '/p', packageLabel: 'p', workspaceLabel: 'w', defaults: { budget: 'hours', steps: 1, minutes: 1, lr: 1, magSchedule: 'constant', batch: 1, sequence: 64 } }), null);
  });
});

describe('engine align params', () => {
  const good = { packageDir: '/models/p', workspaces: [{ path: '/w', name: 'w', exclude: { '**/dist': true } }], settings: { budget: 'steps', steps: 3 }, resume: false, provider: 'cpu', threads: 2, progressToken: 'a1' };
  it('accepts a full request and names the bad field of a broken one', () => {
    assert.equal(parseParams(AlignParamsSchema, good, 'titan/align').ok, true);
    const cases: [unknown, RegExp][] = [
      [{ ...good, packageDir: '' }, /^titan\/align: packageDir: /],
      [{ ...good, workspaces: [] }, /alignment needs at least one workspace folder/],
      [{ ...good, provider: 'tpu' }, /^titan\/align: provider: /],
      [{ ...good, threads: 1.5 }, /^titan\/align: threads: /],
      [{ ...good, resume: 'true' }, /^titan\/align: resume: /],
      [{ ...good, settings: null }, /^titan\/align: settings: /],
    ];
    for (const [params, re] of cases) {
      const r = parseParams(AlignParamsSchema, params, 'titan/align');
      assert.equal(r.ok, false);
      assert.match(!r.ok ? r.message : '', re);
    }
    assert.equal(parseParams(ValidateAlignSettingsParamsSchema, { settings: {}, workspaces: [3] }, 'titan/validateAlignSettings').ok, false);
  });

  it('maps engine events to progress values the panel accepts, non-finite losses as gaps', () => {
    const summary = { kind: 'workspace' as const, path: '/w', trainItems: 9, validationItems: 1, trainSequences: 30, validationSequences: 3, trainTokens: 15000, validationTokens: 1500, truncated: 0, skipped: 0, notes: [] };
    const values = [
      alignProgressOf({ type: 'data', summary }, null),
      alignProgressOf({ type: 'start', totalSteps: 10, minutes: null, startStep: 0, provider: 'cpu', params: 1000 }, summary),
      alignProgressOf({ type: 'step', step: 1, totalSteps: 10, loss: NaN, lr: 1e-4, mu: 0.5, gradNorm: Infinity, tokens: 128, tokensPerSecond: 100, elapsed: 1, eta: 9 }, summary),
      alignProgressOf({ type: 'eval', step: 1, loss: 3, perplexity: Math.exp(3), tokens: 10 }, summary),
    ];
    for (const value of values) assert.equal(v.safeParse(AlignProgressSchema, JSON.parse(JSON.stringify(value))).success, true, JSON.stringify(value));
    assert.equal((values[1] as { trainSequences: number }).trainSequences, 30);
    assert.equal((values[2] as { loss: number | null }).loss, null);
  });
});

describe('reading the Align form', () => {
  it('takes numbers typed as text and fills blanks with the defaults', () => {
    const r = readAlignForm({ budget: 'steps', steps: ' 12 ', lr: '1e-3', magSchedule: 'gradual', batch: '', sequence: '128' });
    assert.deepEqual(r, { steps: 12, lr: 1e-3, magSchedule: 'gradual', batch: 4, sequence: 128, errors: [] });
    const d = readAlignForm({});
    assert.deepEqual({ minutes: d.minutes, steps: d.steps, lr: d.lr, errors: d.errors }, { minutes: 10, steps: undefined, lr: 5e-4, errors: [] });
  });

  it('names the field of every problem', () => {
    const r = readAlignForm({ budget: 'hours', lr: 0, magSchedule: 'wavy', batch: 1.5, sequence: 10 });
    assert.deepEqual(r.errors.map((e) => e.field).sort(), ['batch', 'budget', 'lr', 'magSchedule', 'sequence']);
    assert.deepEqual(readAlignForm({ budget: 'minutes', minutes: 'soon' }).errors.map((e) => e.field), ['minutes']);
    assert.deepEqual(readAlignForm({ budget: 'steps', steps: 0 }).errors.map((e) => e.field), ['steps']);
  });
});

describe('loss plot geometry', () => {
  const size = { width: 400, height: 200 };
  it('maps steps along x to the run’s end and losses along y, highest at the top', () => {
    const m = lossPlotModel([{ step: 1, loss: 5 }, { step: 2, loss: 3 }], [{ step: 0, loss: 6 }, { step: 2, loss: 3.5 }], size, 10);
    assert.equal(m.empty, false);
    const [first, last] = m.validationDots;
    assert.equal(first.x, m.area.left, 'step 0 on the y axis');
    assert.ok(Math.abs(last.x - (m.area.left + 0.2 * (m.area.right - m.area.left))) < 1e-9, 'step 2 of 10 at a fifth of the width');
    assert.ok(first.y < last.y, 'the higher loss is drawn higher');
    assert.ok(first.y >= m.area.top && last.y <= m.area.bottom);
    assert.match(m.trainRaw, /^M\S+ \S+ L\S+ \S+$/);
    assert.ok(m.xTicks.at(-1)!.label === '10' && m.yTicks.length >= 2);
  });

  it('leaves a gap at a non-finite loss instead of drawing through it', () => {
    const m = lossPlotModel([{ step: 1, loss: 4 }, { step: 2, loss: 3.9 }, { step: 3, loss: null }, { step: 4, loss: 3.5 }, { step: 5, loss: 3.4 }], [], size);
    assert.equal((m.trainRaw.match(/M/g) ?? []).length, 2);
  });

  it('draws only a frame before the first loss and survives a flat line', () => {
    assert.equal(lossPlotModel([], [], size).empty, true);
    const flat = lossPlotModel([{ step: 1, loss: 2 }, { step: 2, loss: 2 }], [], size);
    assert.ok(flat.yTicks.length >= 1);
    assert.doesNotMatch(flat.trainRaw, /NaN|Infinity/);
  });

  it('smooths the training loss with an exponential average that skips gaps', () => {
    assert.deepEqual(smoothed([{ step: 1, loss: 4 }, { step: 2, loss: null }, { step: 3, loss: 2 }], 0.5), [{ step: 1, loss: 4 }, { step: 2, loss: null }, { step: 3, loss: 3 }]);
  });

  it('picks round tick steps', () => {
    assert.deepEqual([niceStep(10, 5), niceStep(1, 4), niceStep(0.37, 4), niceStep(730, 5)], [2, 0.5, 0.1, 200]);
  });
});
