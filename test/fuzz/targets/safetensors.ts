// safetensors header/offset reader: readSafetensorsHeader on the bytes as a file, then, for a header
// that validates, Checkpoint.openSync and a read of every tensor (raw bytes and float32 conversion).
// Post-conditions: every tensor lies inside the file's data region and its byte length matches
// dtype × shape.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { Checkpoint, readSafetensorsHeader } from '../../../engine/model/safetensors';
import { checkCleanError, fuzzTempDir, OracleViolation, type FuzzTarget, type Rng } from '../target';

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];
const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
let dir = '';
let file = '';

/** Length prefix + header JSON + data, as a writer lays it out. */
export function frame(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(h.length));
  return new Uint8Array(Buffer.concat([len, h, data]));
}

const tensorArb = fc.record({
  dtype: fc.oneof({ arbitrary: fc.constantFrom(...DTYPES), weight: 9 }, { arbitrary: fc.string({ maxLength: 5 }), weight: 1 }),
  shape: fc.array(fc.oneof({ arbitrary: fc.nat(6), weight: 19 }, { arbitrary: fc.constantFrom(0, -1, 2 ** 53, 1.5), weight: 1 }), { maxLength: 4 }),
  skew: fc.oneof({ arbitrary: fc.constant(0), weight: 9 }, { arbitrary: fc.integer({ min: -9, max: 9 }), weight: 1 }),
});

const arbitrary: fc.Arbitrary<Uint8Array> = fc
  .record({
    names: fc.uniqueArray(fc.oneof(fc.constantFrom('model.embed_tokens.weight', 'lm_head.weight', '__metadata__', '', '__proto__'), fc.string({ maxLength: 12 })), { maxLength: 5 }),
    tensors: fc.array(tensorArb, { minLength: 5, maxLength: 5 }),
    metadata: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string({ maxLength: 6 }), fc.integer())), { nil: undefined }),
    lengthSkew: fc.oneof({ arbitrary: fc.constant(0n), weight: 18 }, { arbitrary: fc.bigInt({ min: -16n, max: 16n }), weight: 1 }, { arbitrary: fc.constant(2n ** 63n), weight: 1 }),
    dataSlack: fc.oneof({ arbitrary: fc.constant(0), weight: 9 }, { arbitrary: fc.integer({ min: -8, max: 8 }), weight: 1 }),
  })
  .map(({ names, tensors, metadata, lengthSkew, dataSlack }) => {
    const header: Record<string, unknown> = {};
    if (metadata) header.__metadata__ = metadata;
    let offset = 0;
    names.forEach((name, i) => {
      const t = tensors[i];
      const n = t.shape.reduce((a: number, b: number) => a * b, 1) * (BYTES[t.dtype] ?? 1);
      const len = Number.isSafeInteger(n) && n >= 0 && n < 4096 ? n : 4;
      header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len + t.skew] };
      offset += len;
    });
    const h = JSON.stringify(header);
    const hb = BigInt(Buffer.byteLength(h));
    return frame(h, new Uint8Array(Math.max(0, offset + dataSlack)).map((_, i) => (i * 37) & 0xff), hb + lengthSkew < 0n ? 0n : hb + lengthSkew);
  });

/** Edits the JSON header and re-frames it (byte mutations of the header rarely keep the length right). */
function mutate(input: Uint8Array, rnd: Rng): Uint8Array | null {
  if (input.length < 8) return null;
  const buf = Buffer.from(input);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) return null;
  const headerText = buf.subarray(8, 8 + Number(n)).toString('utf8');
  let header: Record<string, { dtype?: unknown; shape?: unknown; data_offsets?: unknown }>;
  try {
    header = JSON.parse(headerText);
  } catch {
    return null;
  }
  if (!header || typeof header !== 'object') return null;
  const names = Object.keys(header);
  const data = buf.subarray(8 + Number(n));
  if (names.length && rnd.chance(0.8)) {
    const t = header[rnd.pick(names)];
    if (t && typeof t === 'object') {
      switch (rnd.below(5)) {
        case 0: t.dtype = rnd.pick([...DTYPES, 'F8', 'f32', 1, null]); break;
        case 1: t.shape = rnd.pick([[], [0], [1, 2], [2 ** 31, 2 ** 31], [-1], [1e300], ['1'], null]); break;
        case 2: t.data_offsets = rnd.pick([[0, 0], [0, data.length], [data.length, data.length + 4], [4, 0], [0, 2 ** 53], [-4, 4], [0.5, 4.5], [0], null]); break;
        case 3: delete t.data_offsets; break;
        default: header[`${rnd.pick(names)}_copy`] = structuredClone(t);
      }
    }
  } else (header as Record<string, unknown>)[rnd.pick(['__metadata__', 'x', '__proto__'])] = rnd.pick<unknown>([{}, [], 'v', { format: 'pt' }, 1]);
  return frame(header, rnd.chance(0.2) ? data.subarray(0, rnd.below(data.length + 1)) : data);
}

export const target: FuzzTarget = {
  name: 'safetensors',
  description: 'safetensors header/offset reader: length prefix, JSON header, dtype/shape/data_offsets, then reading every tensor',
  coverage: ['/engine/model/safetensors.ts'],
  arbitrary,
  mutate,
  dictionary: ['"dtype"', '"shape"', '"data_offsets"', '"__metadata__"', '"F32"', '"BF16"', '"F16"', '"I64"', '"BOOL"', '[0,0]', '[]', '{}', '18446744073709551615', '\u0000'],
  maxLen: 1 << 16,
  setup() {
    dir = fuzzTempDir('safetensors');
    file = path.join(dir, 'model.safetensors');
  },
  run(input) {
    fs.writeFileSync(file, input);
    let infos;
    try {
      infos = readSafetensorsHeader(file);
    } catch (e) {
      checkCleanError(e);
      return 'rejected';
    }
    const size = input.length;
    for (const t of infos) {
      const elements = t.shape.reduce((a, b) => a * b, 1);
      if (t.byteLength !== elements * BYTES[t.dtype]) throw new OracleViolation(`tensor ${t.name}: ${t.byteLength} bytes for ${t.dtype}${JSON.stringify(t.shape)}`);
      if (t.byteOffset < 8 || t.byteOffset + t.byteLength > size) throw new OracleViolation(`tensor ${t.name} at [${t.byteOffset}, ${t.byteOffset + t.byteLength}) lies outside the ${size}-byte file`);
    }
    let ck: Checkpoint;
    try {
      ck = Checkpoint.openSync(dir);
    } catch (e) {
      // An empty header parses but holds no tensors: the checkpoint refuses it.
      checkCleanError(e);
      return 'rejected';
    }
    try {
      for (const name of ck.names()) {
        const info = ck.info(name);
        const bytes = ck.readBytes(name);
        if (bytes.length !== info.byteLength) throw new OracleViolation(`readBytes(${name}) gave ${bytes.length} bytes, expected ${info.byteLength}`);
        if (['F32', 'F16', 'BF16', 'F64'].includes(info.dtype)) {
          const f = ck.readFloat32(name);
          if (f.length !== info.shape.reduce((a, b) => a * b, 1)) throw new OracleViolation(`readFloat32(${name}) gave ${f.length} values`);
        } else {
          try {
            ck.readFloat32(name);
            throw new OracleViolation(`readFloat32(${name}) accepted dtype ${info.dtype}`);
          } catch (e) {
            checkCleanError(e);
          }
        }
      }
    } finally {
      ck.close();
    }
    return 'accepted';
  },
};
