// The run state as a versioned, checksummed binary blob, so a workspace memory can be checkpointed
// and restored exactly (continuing after a restore gives the same logits as never stopping).
//
//   "TITANST1" · u32 header length · JSON header {version, position, packageKey, tensors:[{name,dims,offset,length}]}
//   · float32 tensor data · sha256 of all preceding bytes (32 bytes)
import * as crypto from 'node:crypto';
import { clip, ModelError } from '../model/errors';

const MAGIC = Buffer.from('TITANST1', 'ascii');
export const STATE_BLOB_VERSION = 1;

export interface StateTensor {
  name: string;
  dims: number[];
  /** float32, or float16 as raw half bits (the KV window of fp16-compute graphs). */
  dtype: 'float32' | 'float16';
  data: Float32Array | Uint16Array;
}

const ELEMENT_BYTES = { float32: 4, float16: 2 } as const;

export interface StateSnapshot {
  position: number;
  /** Identifies the package + TPTT settings the state belongs to; restoring into another is refused. */
  packageKey: string;
  tensors: StateTensor[];
}

export function encodeState(s: StateSnapshot): Buffer {
  // Each tensor starts at a multiple of its element size (decodeState requires it): a float16 tensor
  // of odd length is followed by two bytes of padding before a float32 one.
  let offset = 0;
  const parts: Buffer[] = [];
  const entries = s.tensors.map((t) => {
    const pad = (ELEMENT_BYTES[t.dtype] - (offset % ELEMENT_BYTES[t.dtype])) % ELEMENT_BYTES[t.dtype];
    if (pad) parts.push(Buffer.alloc(pad));
    offset += pad;
    const e = { name: t.name, dims: t.dims, dtype: t.dtype, offset, length: t.data.byteLength };
    parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    offset += t.data.byteLength;
    return e;
  });
  const header = Buffer.from(JSON.stringify({ version: STATE_BLOB_VERSION, position: s.position, packageKey: s.packageKey, tensors: entries }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length, 0);
  const body = Buffer.concat([MAGIC, len, header, ...parts]);
  return Buffer.concat([body, crypto.createHash('sha256').update(body).digest()]);
}

export function decodeState(blob: Uint8Array, expectedPackageKey?: string): StateSnapshot {
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (buf.length < MAGIC.length + 4 + 32 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new ModelError('state blob: not a Titan state (bad magic or too short)');
  const body = buf.subarray(0, buf.length - 32);
  if (!crypto.createHash('sha256').update(body).digest().equals(buf.subarray(buf.length - 32))) throw new ModelError('state blob: checksum mismatch (corrupt or truncated)');
  const headerLen = body.readUInt32LE(MAGIC.length);
  const dataStart = MAGIC.length + 4 + headerLen;
  if (dataStart > body.length) throw new ModelError('state blob: header length exceeds the blob');
  let header: { version?: unknown; position?: unknown; packageKey?: unknown; tensors?: unknown };
  try {
    header = JSON.parse(body.subarray(MAGIC.length + 4, dataStart).toString('utf8'));
  } catch {
    throw new ModelError('state blob: header is not valid JSON');
  }
  if (header.version !== STATE_BLOB_VERSION) throw new ModelError(`state blob: version ${String(header.version)} is not supported (expects ${STATE_BLOB_VERSION})`);
  if (typeof header.position !== 'number' || !Number.isSafeInteger(header.position) || header.position < 0) throw new ModelError('state blob: bad position');
  if (typeof header.packageKey !== 'string') throw new ModelError('state blob: missing package key');
  if (expectedPackageKey !== undefined && header.packageKey !== expectedPackageKey) throw new ModelError('state blob: saved by a different model package or TPTT configuration');
  if (!Array.isArray(header.tensors)) throw new ModelError('state blob: missing tensor table');
  const dataLen = body.length - dataStart;
  const tensors = header.tensors.map((raw: unknown) => {
    const e = raw as { name?: unknown; dims?: unknown; dtype?: unknown; offset?: unknown; length?: unknown };
    const dtype = (e.dtype ?? 'float32') as StateTensor['dtype'];
    if (dtype !== 'float32' && dtype !== 'float16') throw new ModelError(`state blob: tensor ${clip(String(e.name))} has unsupported dtype ${clip(String(JSON.stringify(dtype)))}`);
    if (typeof e.name !== 'string' || !Array.isArray(e.dims) || !e.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new ModelError('state blob: bad tensor entry');
    const dims = e.dims as number[];
    const offset = e.offset;
    const length = e.length;
    if (typeof offset !== 'number' || typeof length !== 'number' || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || offset % ELEMENT_BYTES[dtype] !== 0 || offset + length > dataLen) {
      throw new ModelError(`state blob: tensor ${clip(e.name)} lies outside the blob`);
    }
    if (dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[dtype] !== length) throw new ModelError(`state blob: tensor ${clip(e.name)} size does not match its dims`);
    const copy = dtype === 'float32' ? new Float32Array(length / 4) : new Uint16Array(length / 2);
    new Uint8Array(copy.buffer).set(body.subarray(dataStart + offset, dataStart + offset + length));
    return { name: e.name, dims, dtype, data: copy };
  });
  return { position: header.position, packageKey: header.packageKey, tensors };
}
