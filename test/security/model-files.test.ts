// Model files are data: only safetensors and JSON (and the tokenizer's own files) are read. A folder
// with only pytorch_model.bin is refused with a clear message; pickles, Python files and
// trust_remote_code/auto_map are never read or honoured (every file the loaders open is recorded);
// paths from weight indexes cannot leave the model folder (../, absolute, symbolic links).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import fsModule from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadModelConfig } from '../../engine/model/config';
import { ModelError } from '../../engine/model/errors';
import { Checkpoint } from '../../engine/model/safetensors';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { writePackage } from '../../engine/titanize/package';
import { loadLoraAdapter } from '../../engine/titanize/adapter';
import { writeRandomCheckpoint } from '../helpers/checkpoint';
import { tracked } from '../reliability/record';

const FILE = 'security-model-files';
let tmp = '';
let hf = '';
/** A pickle whose unpickling would run `os.system('touch <canary>')`: protocol 2, GLOBAL os.system, REDUCE. */
let canary = '';
const pickle = (): Buffer => Buffer.from(`\x80\x02cos\nsystem\nq\x00X${String.fromCharCode(6 + canary.length)}\x00\x00\x00touch ${canary}q\x01\x85q\x02Rq\x03.`, 'latin1');

/** Every file opened for reading while `fn` runs (fs sync and promise APIs). */
function opened<T>(fn: () => T): { result: T | Error; files: string[] } {
  const files: string[] = [];
  const patch = <K extends 'openSync' | 'readFileSync' | 'createReadStream'>(name: K) => {
    // The module object itself (the namespace import is read-only); the engine's imports read through to it.
    const original = fsModule[name];
    (fsModule as unknown as Record<string, unknown>)[name] = (p: fs.PathLike | number, ...rest: unknown[]) => {
      if (typeof p === 'string' || p instanceof URL || Buffer.isBuffer(p)) {
        // openSync(path, flags); readFileSync/createReadStream(path, encoding | {flag}).
        const flags = name === 'openSync' ? (typeof rest[0] === 'string' ? rest[0] : undefined) : typeof rest[0] === 'object' ? (rest[0] as { flag?: string } | null)?.flag : undefined;
        if (!flags || flags.startsWith('r')) files.push(path.resolve(String(p)));
      }
      return (original as (...a: unknown[]) => unknown)(p, ...rest);
    };
    return () => ((fsModule as unknown as Record<string, unknown>)[name] = original);
  };
  const restore = [patch('openSync'), patch('readFileSync'), patch('createReadStream')];
  try {
    return { result: fn(), files };
  } catch (e) {
    return { result: e as Error, files };
  } finally {
    restore.forEach((r) => r());
  }
}

const CODE_OR_PICKLE = /\.(bin|pt|pth|pkl|pickle|ckpt|py|pyc|h5|msgpack|onnx)$/i;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-model-files-'));
  canary = path.join(tmp, 'CANARY-unpickled');
  hf = path.join(tmp, 'hf');
  await writeRandomCheckpoint(hf, { arch: 'llama', hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1 });
  // Everything a hostile Hub repository could carry next to real weights.
  fs.writeFileSync(path.join(hf, 'pytorch_model.bin'), pickle());
  fs.writeFileSync(path.join(hf, 'training_args.bin'), pickle());
  fs.writeFileSync(path.join(hf, 'modeling_evil.py'), `import os\nos.system('touch ${canary}')\n`);
  fs.writeFileSync(path.join(hf, 'tokenization_evil.py'), `import os\nos.system('touch ${canary}')\n`);
  const cfg = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(hf, 'config.json'), JSON.stringify({ ...cfg, trust_remote_code: true, auto_map: { AutoModelForCausalLM: 'modeling_evil.EvilForCausalLM', AutoConfig: 'modeling_evil.EvilConfig' } }));
  const tc = JSON.parse(fs.readFileSync(path.join(hf, 'tokenizer_config.json'), 'utf8'));
  fs.writeFileSync(path.join(hf, 'tokenizer_config.json'), JSON.stringify({ ...tc, auto_map: { AutoTokenizer: ['tokenization_evil.EvilTokenizer', null] }, trust_remote_code: true }));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('model files are parsed as data', { timeout: 300_000 }, () => {
  it('loading and converting read only safetensors and JSON; pickles, .py files and auto_map are ignored', async () => {
    await tracked(FILE, { section: 'security', name: 'pickles and remote code ignored', injected: 'model folder with pytorch_model.bin and training_args.bin (pickles that run a command), modeling_/tokenization_*.py, trust_remote_code and auto_map in both configs', expected: 'conversion succeeds from model.safetensors; no .bin/.py/pickle file is ever opened; the pickle payload never runs' }, async (figures) => {
      const { result, files } = opened(() => {
        loadModelConfig(hf);
        loadTokenizer(hf);
        Checkpoint.openSync(hf).close();
        return writePackage(hf, path.join(tmp, 'pkg'), { dtype: 'fp32', window: null, kind: 'base' });
      });
      if (result instanceof Error) throw result;
      const read = [...new Set(files.filter((f) => f.startsWith(hf)))];
      figures['files read'] = read.length;
      assert.deepEqual(read.filter((f) => CODE_OR_PICKLE.test(f)), [], 'read a pickle or code file');
      assert.ok(read.some((f) => f.endsWith('model.safetensors')));
      assert.equal(fs.existsSync(canary), false);
    });
  });

  it('a folder with only pytorch_model.bin is refused with a clear message', async () => {
    await tracked(FILE, { section: 'security', name: 'pickle-only checkpoint refused', injected: 'model folder holding config.json, tokenizer and pytorch_model.bin (no safetensors); same for an adapter with adapter_model.bin only', expected: 'one-line ModelError naming safetensors; nothing unpickled' }, async () => {
      const only = path.join(tmp, 'bin-only');
      fs.mkdirSync(only);
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'pytorch_model.bin']) fs.copyFileSync(path.join(hf, f), path.join(only, f));
      for (const attempt of [() => Checkpoint.openSync(only), () => writePackage(only, path.join(tmp, 'pkg2'), { dtype: 'fp32', window: null, kind: 'base' })]) {
        assert.throws(attempt, (e: unknown) => e instanceof ModelError && /safetensors/.test(e.message) && /never loaded|pickle/i.test(e.message) && !e.message.includes('\n'));
      }
      const adapter = path.join(tmp, 'adapter-bin-only');
      fs.mkdirSync(adapter);
      fs.writeFileSync(path.join(adapter, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }));
      fs.writeFileSync(path.join(adapter, 'adapter_model.bin'), pickle());
      assert.throws(() => loadLoraAdapter(adapter, hf), (e: unknown) => e instanceof ModelError && /safetensors/.test(e.message) && !e.message.includes('\n'));
      assert.equal(fs.existsSync(canary), false);
    });
  });

  it('weight index paths cannot leave the model folder', async () => {
    await tracked(FILE, { section: 'security', name: 'index path escapes refused', injected: 'model.safetensors.index.json naming ../outside, an absolute path, a/../../outside and a symbolic link to a shard outside the folder', expected: 'each refused with a ModelError naming the entry; the outside file is never read' }, async (figures) => {
      const dir = path.join(tmp, 'escape');
      fs.mkdirSync(dir);
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(hf, f), path.join(dir, f));
      const outside = path.join(tmp, 'outside.safetensors');
      fs.copyFileSync(path.join(hf, 'model.safetensors'), outside);
      fs.symlinkSync(outside, path.join(dir, 'link.safetensors'));
      const names = Checkpoint.openSync(hf).names();
      const cases = ['../outside.safetensors', outside, 'sub/../../outside.safetensors', 'link.safetensors'];
      for (const shard of cases) {
        fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, shard])) }));
        const { result, files } = opened(() => Checkpoint.openSync(dir));
        assert.ok(result instanceof ModelError, `${shard}: ${result instanceof Error ? result.message : 'accepted'}`);
        assert.match(result.message, /outside the model folder/);
        assert.deepEqual(files.filter((f) => f === outside || f === path.join(dir, 'link.safetensors')), [], `${shard}: the outside shard was read`);
      }
      // model.safetensors itself as a link out of the folder.
      fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
      fs.symlinkSync(outside, path.join(dir, 'model.safetensors'));
      assert.throws(() => Checkpoint.openSync(dir), (e: unknown) => e instanceof ModelError && /symbolic link/.test(e.message));
      figures['escapes tried'] = cases.length + 1;
    });
  });

  it('a Hugging Face cache snapshot (links into blobs/) still loads', async () => {
    await tracked(FILE, { section: 'security', name: 'HF cache symlinks allowed', injected: 'models--x/snapshots/<rev>/ whose files are links into models--x/blobs/', expected: 'loads (the one allowed link target outside the folder)' }, async () => {
      const repo = path.join(tmp, 'models--org--tiny');
      const snap = path.join(repo, 'snapshots', 'abc123');
      fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
      fs.mkdirSync(snap, { recursive: true });
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
        const blob = path.join(repo, 'blobs', `sha-${f}`);
        fs.copyFileSync(path.join(hf, f), blob);
        fs.symlinkSync(path.relative(snap, blob), path.join(snap, f));
      }
      const ck = Checkpoint.openSync(snap);
      assert.ok(ck.names().length > 0);
      ck.close();
      loadModelConfig(snap);
    });
  });
});
