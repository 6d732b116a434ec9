// model.safetensors.index.json: the weight map that names the shard of every tensor. The folder holds
// two real shards, a shard in a subfolder, a folder named like a shard, a symbolic link to a shard
// outside the model folder, and a valid shard in the parent folder. Post-condition: whatever the index
// says, every tensor the checkpoint hands out is read from a file inside the model folder.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { Checkpoint } from '../../../engine/model/safetensors';
import { checkCleanError, fuzzTempDir, OracleViolation, utf8, type FuzzTarget } from '../target';
import { frame } from './safetensors';

let root = '';
let modelDir = '';
let realModelDir = '';

function shard(names: string[]): Uint8Array {
  const header: Record<string, unknown> = {};
  names.forEach((n, i) => (header[n] = { dtype: 'F32', shape: [2], data_offsets: [8 * i, 8 * i + 8] }));
  return frame(header, new Uint8Array(8 * names.length));
}

const SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'sub/model-00003.safetensors', 'link.safetensors', 'folder.safetensors', '../outside.safetensors', 'missing.safetensors'];
const TENSORS = ['a', 'b', 'c', 'd', 'e', 'f', 'outside'];
const FILE_NAMES = [...SHARDS, '/etc/passwd', `${'../'.repeat(8)}etc/passwd`, './model-00001-of-00002.safetensors', 'sub/../model-00001-of-00002.safetensors', 'sub/../../outside.safetensors',
  'model-00001-of-00002.safetensors\u0000.txt', '', '.', '..', 'sub', 'C:\\Windows\\x.safetensors', '\\\\server\\share\\x.safetensors', 'model.safetensors.index.json', 'link.safetensors/'];

const arbitrary: fc.Arbitrary<Uint8Array> = fc
  .record({
    map: fc.dictionary(fc.constantFrom(...TENSORS, '__proto__', ''), fc.oneof({ arbitrary: fc.constantFrom(...FILE_NAMES), weight: 8 }, { arbitrary: fc.string({ maxLength: 20 }), weight: 1 }, { arbitrary: fc.constantFrom(1, null, [], {}), weight: 1 })),
    metadata: fc.option(fc.record({ total_size: fc.oneof(fc.nat(), fc.string()) }), { nil: undefined }),
    wrap: fc.constantFrom('weight_map', 'weight_map', 'weight_map', 'weights', 'none'),
  })
  .map(({ map, metadata, wrap }) => utf8(JSON.stringify(wrap === 'none' ? map : { ...(metadata ? { metadata } : {}), [wrap]: map })));

export const target: FuzzTarget = {
  name: 'safetensors-index',
  description: 'model.safetensors.index.json weight maps: shard names with ../, absolute paths, symbolic links out of the folder, folders, missing shards',
  coverage: ['/engine/model/safetensors.ts'],
  arbitrary,
  json: true,
  dictionary: [...FILE_NAMES.map((f) => JSON.stringify(f)), '"weight_map"', '"metadata"', '"total_size"', ...TENSORS.map((t) => JSON.stringify(t))],
  maxLen: 1 << 14,
  setup() {
    root = fuzzTempDir('index');
    modelDir = path.join(root, 'model');
    fs.mkdirSync(path.join(modelDir, 'sub'), { recursive: true });
    fs.mkdirSync(path.join(modelDir, 'folder.safetensors'));
    fs.writeFileSync(path.join(modelDir, 'model-00001-of-00002.safetensors'), shard(['a', 'b']));
    fs.writeFileSync(path.join(modelDir, 'model-00002-of-00002.safetensors'), shard(['c', 'd']));
    fs.writeFileSync(path.join(modelDir, 'sub/model-00003.safetensors'), shard(['e', 'f']));
    fs.writeFileSync(path.join(root, 'outside.safetensors'), shard(['outside', 'a', 'c']));
    fs.symlinkSync('../outside.safetensors', path.join(modelDir, 'link.safetensors'));
    realModelDir = fs.realpathSync(modelDir);
  },
  run(input) {
    fs.writeFileSync(path.join(modelDir, 'model.safetensors.index.json'), input);
    let ck: Checkpoint;
    try {
      ck = Checkpoint.openSync(modelDir);
    } catch (e) {
      checkCleanError(e);
      return 'rejected';
    }
    try {
      for (const name of ck.names()) {
        const file = ck.info(name).file;
        const real = fs.realpathSync(file);
        if (!real.startsWith(realModelDir + path.sep)) throw new OracleViolation(`tensor ${name} is read from ${real}, outside the model folder ${realModelDir}`);
        ck.readFloat32(name);
      }
    } finally {
      ck.close();
    }
    return 'accepted';
  },
};
