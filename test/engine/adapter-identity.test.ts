// Packages made with a LoRA adapter: (a) the merged adapter's content hash is part of the package's
// identity, so saved states (the workspace memory's checkpoints) of packages merged from different
// adapters never restore into each other, while the same adapter in another key layout is the same
// model; (b) `titan titanize --adapter` takes the TPTT settings the adapter's config.json records
// (titan align writes them) where the command line gives none, and refuses contradicting ones; the
// Titanize form reports the contradiction against its field.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ModelRunner } from '../../engine/runtime/session';
import { adapterFormValues, validateForm } from '../../engine/server/settings-form';
import { DEFAULT_MAG_WEIGHT, TPTT_DEFAULT_MAG_WEIGHT } from '../../engine/titanize/settings';
import { writeRandomCheckpoint, type GeneratedCheckpoint } from '../helpers/checkpoint';
import { writeRandomLoraAdapter } from '../helpers/lora-adapter';
import { writeSafetensorsSync } from '../../engine/model/safetensors-writer';
import { runTitan } from '../helpers/workspace';

let tmp: string;
let ckpt: GeneratedCheckpoint;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-adapter-identity-'));
  ckpt = await writeRandomCheckpoint(path.join(tmp, 'hf'), { arch: 'llama', seed: 5 });
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function titanize(out: string, args: string[]): Promise<Record<string, unknown>> {
  const r = await runTitan(['titanize', ckpt.dir, '--out', path.join(tmp, out), '--json', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('the adapter in the package identity', () => {
  it('gives packages merged from different adapters different state keys, and one adapter in two layouts the same', async () => {
    // Same rank, alpha and targets (the manifest's lora_config is identical); different values.
    const a = writeRandomLoraAdapter(path.join(tmp, 'adapter-a'), ckpt, { style: 'peft', seed: 1 });
    const b = writeRandomLoraAdapter(path.join(tmp, 'adapter-b'), ckpt, { style: 'peft', seed: 2 });
    // Adapter a again, in tptt's key layout (model.model.layers.N.self_attn.base_attn.…lora_A.default.weight).
    const aTptt = path.join(tmp, 'adapter-a-tptt');
    fs.mkdirSync(aTptt);
    fs.copyFileSync(path.join(a.dir, 'adapter_config.json'), path.join(aTptt, 'adapter_config.json'));
    const tpttKey = (key: string) => key.replace(/^base_model\.model\./, 'model.').replace('.self_attn.', '.self_attn.base_attn.').replace(/\.(lora_[AB])\.weight$/, '.$1.default.weight');
    writeSafetensorsSync(path.join(aTptt, 'adapter_model.safetensors'), [...a.shapes].map(([key, shape]) => ({ name: tpttKey(key), shape, dtype: 'F32' as const, data: a.values(key) })));
    const common = ['--window', '32', '--chunk', '16'];
    await Promise.all([titanize('pkg-a', ['--adapter', a.dir, ...common]), titanize('pkg-b', ['--adapter', b.dir, ...common]), titanize('pkg-a-tptt', ['--adapter', aTptt, ...common]), titanize('pkg-plain', common)]);
    const manifest = (name: string) => JSON.parse(fs.readFileSync(path.join(tmp, name, 'titan-package.json'), 'utf8'));
    assert.deepEqual(manifest('pkg-a').tptt.lora_config, manifest('pkg-b').tptt.lora_config, 'the LoRA settings alone cannot tell the two apart');
    assert.notEqual(manifest('pkg-a').adapter.sha256, manifest('pkg-b').adapter.sha256);
    assert.equal(manifest('pkg-a').adapter.sha256, manifest('pkg-a-tptt').adapter.sha256, 'the hash is of the content, not the file layout');
    assert.equal(manifest('pkg-plain').adapter, undefined);

    const runners = await Promise.all(['pkg-a', 'pkg-b', 'pkg-a-tptt'].map((n) => ModelRunner.open(path.join(tmp, n), { provider: 'cpu', threads: 1 })));
    try {
      const [ra, rb, raTptt] = runners;
      assert.notEqual(ra.packageKey, rb.packageKey);
      assert.equal(ra.packageKey, raTptt.packageKey);
      await ra.forward([5, 17, 99, 3, 250, 41], [5]);
      const blob = await ra.saveState();
      assert.throws(() => rb.loadState(blob), /saved by a different model package/);
      raTptt.loadState(blob);
      assert.equal(raTptt.position, 6, 'the same merged model restores the state');
    } finally {
      await Promise.all(runners.map((r) => r.release()));
    }
  });
});

describe('titanize --adapter with the settings the adapter records', () => {
  let adapterDir: string;
  before(() => {
    adapterDir = writeRandomLoraAdapter(path.join(tmp, 'trained'), ckpt, { style: 'tptt', seed: 3 }).dir;
    // What titan align writes into adapter/config.json beside lora_config (a TpttConfig).
    const file = path.join(adapterDir, 'config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    Object.assign(config, { model_type: 'tptt', operator_mode: 'delta_product', mag_weight: 0.25, cross_gate: false, max_self_attn_length: 32, max_chunk_size: 8, base_scale_attn: false, titan_semantics: 'exact' });
    fs.writeFileSync(file, JSON.stringify(config));
  });

  it('uses them where the command line gives none', async () => {
    const report = await titanize('from-adapter', ['--adapter', adapterDir]);
    const t = report.tptt as Record<string, unknown>;
    assert.deepEqual([t.operator_mode, t.mag_weight, t.max_self_attn_length, t.max_chunk_size, t.semantics], ['delta_product', 0.25, 32, 8, 'exact']);
    assert.equal((t.recurrent_config as { order: number }).order, 2);
    // Agreeing options are fine.
    const agreeing = await titanize('agreeing', ['--adapter', adapterDir, '--operator', 'delta_product', '--window', '32', '--mag-weight', '0.25', '--semantics', 'exact']);
    assert.equal((agreeing.tptt as { max_chunk_size: number }).max_chunk_size, 8);
  });

  it('reads a tptt config without mag_weight as trained under tptt’s default μ (0.5), not Titan’s', async () => {
    const bare = writeRandomLoraAdapter(path.join(tmp, 'no-mu-adapter'), ckpt, { style: 'tptt', seed: 4 }).dir;
    const file = path.join(bare, 'config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    delete config.mag_weight;
    fs.writeFileSync(file, JSON.stringify(config));
    assert.notEqual(TPTT_DEFAULT_MAG_WEIGHT, DEFAULT_MAG_WEIGHT);
    const report = await titanize('no-mu', ['--adapter', bare]);
    assert.equal((report.tptt as { mag_weight: number }).mag_weight, TPTT_DEFAULT_MAG_WEIGHT);
    const r = await runTitan(['titanize', ckpt.dir, '--out', path.join(tmp, 'no-mu-refused'), '--adapter', bare, '--mag-weight', String(DEFAULT_MAG_WEIGHT)]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--mag-weight 0\.05 contradicts the adapter, trained with mag_weight 0\.5/);
  });

  it('refuses options that contradict them, in one line naming option, value and file', async () => {
    const cases: [string[], RegExp][] = [
      [['--window', '64'], /--window 64 contradicts the adapter, trained with max_self_attn_length 32 \(.*config\.json\); leave --window out to use the adapter's, or pass 32/],
      [['--operator', 'delta_rule'], /--operator delta_rule contradicts the adapter, trained with operator_mode delta_product/],
      [['--mag-weight', '0.5', '--chunk', '16'], /--mag-weight 0\.5 contradicts .*; --chunk 16 contradicts .* max_chunk_size 8/],
      [['--semantics', 'tptt-0.12'], /--semantics tptt-0\.12 contradicts the adapter, trained with semantics exact/],
      [['--cross-gate'], /--cross-gate true contradicts the adapter, trained with cross_gate false/],
    ];
    for (const [args, re] of cases) {
      const r = await runTitan(['titanize', ckpt.dir, '--out', path.join(tmp, 'refused'), '--adapter', adapterDir, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.ok(!fs.existsSync(path.join(tmp, 'refused')), 'nothing written');
  });

  it('reports a contradiction in the Titanize form against its field, and offers the adapter’s settings', () => {
    const errors = validateForm({ operator: 'delta_product', magWeight: '0.25', window: '512', chunk: '8', semantics: 'exact', dtype: 'fp32', crossGate: false, adapter: adapterDir }, ckpt.dir);
    assert.deepEqual(errors.map((e) => e.field), ['window']);
    assert.match(errors[0].message, /the adapter was trained with window 32, not 512 .*; set 32/);
    assert.deepEqual(validateForm({ operator: 'delta_product', magWeight: 0.25, window: 32, chunk: 8, semantics: 'exact', crossGate: false, adapter: adapterDir }, ckpt.dir), []);
    // …and gives the form the adapter's settings to fill its fields with.
    assert.deepEqual(adapterFormValues({ adapter: adapterDir }), { operator: 'delta_product', magWeight: 0.25, window: 32, chunk: 8, semantics: 'exact', crossGate: false });
    assert.equal(adapterFormValues({ adapter: writeRandomLoraAdapter(path.join(tmp, 'plain-peft'), ckpt, { style: 'peft' }).dir }), undefined, 'a PEFT adapter records no TPTT settings');
  });
});
