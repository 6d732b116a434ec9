// The checkpointed run state: decodeState on the bytes. Most inputs get their sha256 trailer fixed
// up first (first byte odd), so mutations reach the header and tensor table behind the checksum.
// Post-conditions: an accepted blob round-trips (encode(decode(b)) decodes to the same state) and
// every tensor's data matches its dims.
import { createHash } from 'node:crypto';
import * as fc from 'fast-check';
import { decodeState, encodeState, STATE_BLOB_VERSION, type StateSnapshot } from '../../../engine/runtime/state-blob';
import { checkCleanError, OracleViolation, type FuzzTarget, type Rng } from '../target';

const MAGIC = Buffer.from('TITANST1', 'ascii');
const KEY = 'pkg-key';

/** Magic · u32 header length · header · data · sha256, with the header given as text. */
function assemble(header: string, data: Uint8Array, lengthSkew = 0): Buffer {
  const h = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(Math.max(0, h.length + lengthSkew) >>> 0);
  const body = Buffer.concat([MAGIC, len, h, data]);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

function withFixup(fix: boolean, blob: Uint8Array): Uint8Array {
  const out = new Uint8Array(blob.length + 1);
  out[0] = fix ? 1 : 0;
  out.set(blob, 1);
  return out;
}

const tensorEntry = fc.record({
  name: fc.oneof(fc.constantFrom('state.0', 'kv.0.k', ''), fc.constant(1)),
  dtype: fc.constantFrom('float32', 'float16', undefined, 'int8', 'x'.repeat(3000)),
  dims: fc.oneof(fc.array(fc.nat(4), { maxLength: 3 }), fc.constantFrom([-1], [1.5], ['2'], null, [2 ** 40, 2 ** 40])),
  offset: fc.oneof(fc.nat(64).map((n) => n * 4), fc.constantFrom(-4, 2, 2 ** 53, '0')),
  length: fc.oneof(fc.nat(16).map((n) => n * 4), fc.constantFrom(-4, 3, 2 ** 53)),
});

const arbitrary: fc.Arbitrary<Uint8Array> = fc.oneof(
  // Well-formed states, encoded by the engine's own encoder.
  fc.record({ position: fc.nat(), tensors: fc.array(fc.record({ name: fc.string({ maxLength: 8 }), dims: fc.array(fc.nat(3), { maxLength: 3 }), half: fc.boolean() }), { maxLength: 4 }) }).map(({ position, tensors }) => {
    const snap: StateSnapshot = {
      position,
      packageKey: KEY,
      tensors: tensors.map((t) => {
        const n = t.dims.reduce((a, b) => a * b, 1);
        return t.half ? { name: t.name, dims: t.dims, dtype: 'float16' as const, data: new Uint16Array(n).map((_, i) => i * 31) } : { name: t.name, dims: t.dims, dtype: 'float32' as const, data: new Float32Array(n).map((_, i) => i / 7) };
      }),
    };
    return withFixup(true, encodeState(snap));
  }),
  // Hand-made headers with hostile fields.
  fc.record({
    version: fc.oneof(fc.constant(STATE_BLOB_VERSION), fc.constantFrom(0, 2, '1', null)),
    position: fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 60, '3')),
    packageKey: fc.oneof(fc.constant(KEY), fc.constantFrom('other', 1, null)),
    tensors: fc.oneof(fc.array(tensorEntry, { maxLength: 4 }), fc.constantFrom(null, {}, 'x')),
    dataBytes: fc.nat(128),
    lengthSkew: fc.oneof({ arbitrary: fc.constant(0), weight: 8 }, { arbitrary: fc.integer({ min: -8, max: 8 }), weight: 1 }, { arbitrary: fc.constant(2 ** 31), weight: 1 }),
    fix: fc.boolean(),
  }).map(({ dataBytes, lengthSkew, fix, ...header }) => withFixup(fix || true, assemble(JSON.stringify(header), new Uint8Array(dataBytes), lengthSkew))),
);

/** Edits the JSON header of a blob and re-assembles it (length and checksum made right). */
function mutate(input: Uint8Array, rnd: Rng): Uint8Array | null {
  const blob = Buffer.from(input.subarray(1));
  if (blob.length < MAGIC.length + 4 + 32) return null;
  const n = blob.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + n > blob.length - 32) return null;
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(blob.subarray(start, start + n).toString('utf8'));
  } catch {
    return null;
  }
  const data = blob.subarray(start + n, blob.length - 32);
  const tensors = Array.isArray(header.tensors) ? (header.tensors as Record<string, unknown>[]) : [];
  const t = tensors.length ? rnd.pick(tensors) : null;
  switch (rnd.below(7)) {
    case 0: if (t) t.offset = rnd.pick([0, 4, 3, -4, data.length, data.length + 4, 2 ** 53, null]); break;
    case 1: if (t) t.length = rnd.pick([0, 4, 5, -4, data.length, data.length + 4, 2 ** 31]); break;
    case 2: if (t) t.dims = rnd.pick([[], [0], [1], [2, 2], [-1], [2 ** 26, 2 ** 26], [1e308], null]); break;
    case 3: header.position = rnd.pick([0, -1, 2 ** 53, 1.5, null, '1']); break;
    case 4: tensors.push(t ? { ...t, name: `${String(t.name)}'` } : { name: 'x', dims: [1], offset: 0, length: 4 }); header.tensors = tensors; break;
    case 5: if (t) t.dtype = rnd.pick(['float32', 'float16', 'bfloat16', null, 1]); break;
    default: header[rnd.pick(['version', 'packageKey', 'tensors'])] = rnd.pick([null, 1, 'x', [], {}]);
  }
  return withFixup(true, assemble(JSON.stringify(header), rnd.chance(0.2) ? data.subarray(0, rnd.below(data.length + 1)) : data));
}

function sameState(a: StateSnapshot, b: StateSnapshot): boolean {
  return a.position === b.position && a.packageKey === b.packageKey && a.tensors.length === b.tensors.length
    && a.tensors.every((t, i) => t.name === b.tensors[i].name && JSON.stringify(t.dims) === JSON.stringify(b.tensors[i].dims)
      && Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(b.tensors[i].data.buffer, b.tensors[i].data.byteOffset, b.tensors[i].data.byteLength)));
}

export const target: FuzzTarget = {
  name: 'state-blob',
  description: 'checkpoint state blobs: magic, header length, JSON tensor table (offsets, lengths, dims), package key, sha256 trailer',
  coverage: ['/engine/runtime/state-blob.ts'],
  arbitrary,
  mutate,
  dictionary: ['TITANST1', '"version"', '"position"', '"packageKey"', '"tensors"', '"dims"', '"offset"', '"length"', '"pkg-key"', '"dtype"', '"float16"'],
  maxLen: 1 << 16,
  run(input) {
    let blob = Buffer.from(input.subarray(1));
    if ((input[0] ?? 0) & 1 && blob.length >= 32) {
      const body = blob.subarray(0, blob.length - 32);
      blob = Buffer.concat([body, createHash('sha256').update(body).digest()]);
    }
    let snap: StateSnapshot;
    try {
      snap = decodeState(blob, KEY);
    } catch (e) {
      checkCleanError(e);
      return 'rejected';
    }
    for (const t of snap.tensors) {
      const n = t.dims.reduce((a, b) => a * b, 1);
      if (t.data.length !== n) throw new OracleViolation(`tensor ${t.name}: ${t.data.length} values for dims ${JSON.stringify(t.dims)}`);
    }
    if (!sameState(decodeState(encodeState(snap), KEY), snap)) throw new OracleViolation('an accepted blob does not survive encode → decode');
    return 'accepted';
  },
};
