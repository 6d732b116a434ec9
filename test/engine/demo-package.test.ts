// The bundled demo model's package: converted with DEMO_SETTINGS on first use, converted again when an
// older engine left one converted with other settings (the demo used to take μ 0.5), reused otherwise.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { DEMO_SETTINGS, ModelCatalog } from '../../engine/server/models';
import { readPackage } from '../../engine/titanize/package';
import { DEFAULT_MAG_WEIGHT } from '../../engine/titanize/settings';
import { titanize } from '../../engine/titanize/titanize';

const DEMO = path.resolve(__dirname, '../../media/models/code-llama-19m');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-demo-package-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('demo package', () => {
  it('converts again a demo package made with other settings, and reuses one made with the demo settings', async () => {
    const catalog = new ModelCatalog(path.join(tmp, 'global'), DEMO);
    fs.mkdirSync(catalog.modelsDir, { recursive: true });
    titanize(DEMO, catalog.demoPackageDir, { ...DEMO_SETTINGS, mag_weight: 0.5 });
    assert.equal(readPackage(catalog.demoPackageDir).manifest.tptt?.mag_weight, 0.5);

    const messages: string[] = [];
    const dir = await catalog.ensureDemoPackage({ onProgress: (m) => messages.push(m) });
    assert.equal(dir, catalog.demoPackageDir);
    assert.equal(readPackage(dir).manifest.tptt?.mag_weight, DEFAULT_MAG_WEIGHT);
    assert.ok(messages.some((m) => /Converting the bundled demo model/.test(m)), 'the conversion was reported');
    assert.deepEqual(fs.readdirSync(catalog.modelsDir), [path.basename(dir)], 'nothing else left in models/');

    const manifest = path.join(dir, 'titan-package.json');
    const written = fs.statSync(manifest).mtimeMs;
    const again: string[] = [];
    await catalog.ensureDemoPackage({ onProgress: (m) => again.push(m) });
    assert.deepEqual(again, [], 'no second conversion');
    assert.equal(fs.statSync(manifest).mtimeMs, written);
  });
});
