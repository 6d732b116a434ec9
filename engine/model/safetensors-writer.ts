// Writing safetensors files, single or sharded, in the layout transformers and the `safetensors`
// library produce (and that safetensors.ts reads).
//
// A file is: u64 little-endian header length N, N bytes of JSON header padded with spaces so that
// 8 + N is a multiple of 8 (the data region, and with it every tensor whose size is a multiple of its
// alignment, starts aligned), then the tensors back to back in the order given. The header needs only
// dtypes and shapes, so tensor bytes may be produced lazily, one tensor at a time, as the writer reaches
// them: a multi-GB model never sits in memory whole. Files are written under a temporary name and renamed
// once complete, so an interrupted write never leaves a plausible-looking half file behind.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { floatToHalf, type SafetensorsDType } from './safetensors';

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/**
 * A tensor's contents. A `Uint8Array` (or Buffer) is always the raw little-endian bytes as stored.
 * A typed array whose element type is the dtype's own (Float32Array for F32, BigInt64Array for I64,
 * Uint16Array for the bits of F16/BF16, ...) is stored as is. Anything else is converted value by value
 * (float32 → F16/BF16 rounds to nearest even).
 */
export type TensorData =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | readonly number[];

/**
 * A tensor's raw little-endian bytes as a sequence of pieces, for tensors too large to hold at once
 * (e.g. converted block of rows by block of rows). The pieces must add up to the tensor's size.
 */
export interface TensorChunks {
  chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

export interface TensorSource {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** The contents, or a function producing them when the writer reaches this tensor (called once). */
  data: TensorData | TensorChunks | (() => TensorData | TensorChunks | Promise<TensorData | TensorChunks>);
}

export interface WriteOptions {
  /** The header's `__metadata__`: a string → string map (e.g. {format: 'pt'}). */
  metadata?: Record<string, string>;
}

export interface WrittenFile {
  file: string;
  /** Bytes of tensor data (the sum of every tensor's size). */
  dataBytes: number;
  /** Size of the whole file. */
  fileBytes: number;
}

/** Writes `tensors` to one safetensors file, one tensor in memory at a time. */
export async function writeSafetensors(file: string, tensors: Iterable<TensorSource>, options: WriteOptions = {}): Promise<WrittenFile> {
  const plan = planFile([...tensors], options.metadata);
  const tmp = temporaryName(file);
  const handle = await fs.promises.open(tmp, 'w');
  try {
    const write = (b: Uint8Array, at: number): Promise<number> => handle.write(b, 0, b.byteLength, at).then((r) => r.bytesWritten);
    await writeFully(write, plan.header, 0);
    let pos = plan.header.byteLength;
    for (const entry of plan.entries) {
      const data = typeof entry.source.data === 'function' ? await entry.source.data() : entry.source.data;
      if (isChunks(data)) {
        let got = 0;
        for await (const chunk of data.chunks) {
          got += chunk.byteLength;
          if (got > entry.byteLength) throw sizeError(entry, got);
          await writeFully(write, chunk, pos + got - chunk.byteLength);
        }
        if (got !== entry.byteLength) throw sizeError(entry, got);
        pos += got;
        continue;
      }
      const bytes = checkedBytes(entry, data);
      await writeFully(write, bytes, pos);
      pos += bytes.byteLength;
    }
    await handle.close();
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await handle.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  return { file, dataBytes: plan.dataBytes, fileBytes: plan.header.byteLength + plan.dataBytes };
}

/** Synchronous `writeSafetensors`, for small files (fixtures, adapters); lazy data must not be async. */
export function writeSafetensorsSync(file: string, tensors: Iterable<TensorSource>, options: WriteOptions = {}): WrittenFile {
  const plan = planFile([...tensors], options.metadata);
  const tmp = temporaryName(file);
  const fd = fs.openSync(tmp, 'w');
  try {
    writeFullySync(fd, plan.header, 0);
    let pos = plan.header.byteLength;
    for (const entry of plan.entries) {
      const data = typeof entry.source.data === 'function' ? entry.source.data() : entry.source.data;
      if (data instanceof Promise) throw new Error(`writeSafetensorsSync: tensor ${entry.source.name} produced a Promise; use writeSafetensors`);
      if (isChunks(data)) {
        if (!(Symbol.iterator in data.chunks)) throw new Error(`writeSafetensorsSync: tensor ${entry.source.name} has async chunks; use writeSafetensors`);
        let got = 0;
        for (const chunk of data.chunks) {
          got += chunk.byteLength;
          if (got > entry.byteLength) throw sizeError(entry, got);
          writeFullySync(fd, chunk, pos + got - chunk.byteLength);
        }
        if (got !== entry.byteLength) throw sizeError(entry, got);
        pos += got;
        continue;
      }
      const bytes = checkedBytes(entry, data);
      writeFullySync(fd, bytes, pos);
      pos += bytes.byteLength;
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return { file, dataBytes: plan.dataBytes, fileBytes: plan.header.byteLength + plan.dataBytes };
}

export interface ShardedWriteOptions extends WriteOptions {
  /** Start a new shard before one would exceed this many data bytes (default 5 GB, as transformers). */
  maxShardBytes?: number;
  /** Split into (at most) this many shards of about equal size instead; overrides maxShardBytes. */
  shardCount?: number;
  /** File name stem: `<prefix>-00001-of-00003.safetensors`, `<prefix>.safetensors.index.json` (default 'model'). */
  prefix?: string;
  /** Extra entries for the index's `metadata` next to `total_size`. */
  indexMetadata?: Record<string, unknown>;
}

export interface WrittenShards {
  files: string[];
  indexFile: string;
  /** The index's `metadata.total_size`: bytes of tensor data over all shards. */
  totalSize: number;
  weightMap: Record<string, string>;
}

/**
 * Writes `tensors` as shards `model-0000i-of-0000n.safetensors` in `dir`, in the order given, plus
 * `model.safetensors.index.json` ({metadata: {total_size}, weight_map}), as `save_pretrained` does.
 */
export async function writeShardedSafetensors(dir: string, tensors: Iterable<TensorSource>, options: ShardedWriteOptions = {}): Promise<WrittenShards> {
  const all = [...tensors];
  const sizes = all.map((t) => tensorByteLength(t));
  const groups = options.shardCount !== undefined ? splitEvenly(sizes, options.shardCount) : splitByMax(sizes, options.maxShardBytes ?? 5e9);
  const prefix = options.prefix ?? 'model';
  const n = groups.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < n; s++) {
    const name = `${prefix}-${pad(s + 1)}-of-${pad(n)}.safetensors`;
    const shard = groups[s].map((i) => all[i]);
    const written = await writeSafetensors(path.join(dir, name), shard, { metadata: options.metadata });
    files.push(written.file);
    totalSize += written.dataBytes;
    for (const t of shard) weightMap[t.name] = name;
  }
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  const indexFile = path.join(dir, `${prefix}.safetensors.index.json`);
  const index = { metadata: { ...options.indexMetadata, total_size: totalSize }, weight_map: sortedMap };
  const tmp = temporaryName(indexFile);
  await fs.promises.writeFile(tmp, JSON.stringify(index, null, 2) + '\n');
  await fs.promises.rename(tmp, indexFile);
  return { files, indexFile, totalSize, weightMap: sortedMap };
}

/** Bytes `t` occupies in a file: its element count times its dtype's size. */
export function tensorByteLength(t: Pick<TensorSource, 'name' | 'dtype' | 'shape'>): number {
  const size = DTYPE_BYTES[t.dtype];
  if (size === undefined) throw new Error(`tensor ${t.name}: unknown dtype ${JSON.stringify(t.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`tensor ${t.name}: shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
  return t.shape.reduce((a, b) => a * b, 1) * size;
}

/** Float32 → bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN), as torch does. */
export function floatToBfloat16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The little-endian bytes of `values` stored as `dtype` (see TensorData for what is converted). */
export function encodeTensor(values: TensorData, dtype: SafetensorsDType): Uint8Array {
  if (values instanceof Uint8Array) return values;
  if (isNativeFor(values, dtype)) {
    if (!LITTLE_ENDIAN) throw new Error('safetensors-writer: big-endian hosts are not supported');
    const v = values as Exclude<TensorData, readonly number[]>;
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }
  const n = values.length;
  const out = new Uint8Array(n * DTYPE_BYTES[dtype]);
  const view = new DataView(out.buffer);
  const num = (i: number): number => Number(values[i]);
  switch (dtype) {
    case 'F64':
      for (let i = 0; i < n; i++) view.setFloat64(8 * i, num(i), true);
      break;
    case 'F32':
      for (let i = 0; i < n; i++) view.setFloat32(4 * i, num(i), true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) view.setUint16(2 * i, floatToHalf(num(i)), true);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) view.setUint16(2 * i, floatToBfloat16(num(i)), true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) view.setBigInt64(8 * i, typeof values[i] === 'bigint' ? (values[i] as bigint) : BigInt(Math.trunc(num(i))), true);
      break;
    case 'I32':
      for (let i = 0; i < n; i++) view.setInt32(4 * i, num(i), true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) view.setInt16(2 * i, num(i), true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) view.setInt8(i, num(i));
      break;
    case 'U8':
      for (let i = 0; i < n; i++) view.setUint8(i, num(i));
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) view.setUint8(i, num(i) ? 1 : 0);
      break;
  }
  return out;
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

function isNativeFor(values: TensorData, dtype: SafetensorsDType): boolean {
  switch (dtype) {
    case 'F64': return values instanceof Float64Array;
    case 'F32': return values instanceof Float32Array;
    case 'F16':
    case 'BF16': return values instanceof Uint16Array;
    case 'I64': return values instanceof BigInt64Array;
    case 'I32': return values instanceof Int32Array;
    case 'I16': return values instanceof Int16Array;
    case 'I8': return values instanceof Int8Array;
    default: return false;
  }
}

interface PlannedTensor {
  source: TensorSource;
  byteLength: number;
}

interface FilePlan {
  header: Buffer; // length prefix + padded JSON
  entries: PlannedTensor[];
  dataBytes: number;
}

function planFile(tensors: TensorSource[], metadata: Record<string, string> | undefined): FilePlan {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new Error(`safetensors __metadata__ values must be strings (${k} is ${typeof v})`);
    header.__metadata__ = metadata;
  }
  const entries: PlannedTensor[] = [];
  let offset = 0;
  for (const source of tensors) {
    if (!source.name || source.name === '__metadata__') throw new Error(`safetensors: invalid tensor name ${JSON.stringify(source.name)}`);
    if (source.name in header) throw new Error(`safetensors: tensor ${source.name} is written twice`);
    const byteLength = tensorByteLength(source);
    header[source.name] = { dtype: source.dtype, shape: [...source.shape], data_offsets: [offset, offset + byteLength] };
    entries.push({ source, byteLength });
    offset += byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const buf = Buffer.alloc(8 + padded, 0x20); // the format pads the header with spaces
  buf.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(buf, 8);
  return { header: buf, entries, dataBytes: offset };
}

function checkedBytes(entry: PlannedTensor, data: TensorData): Uint8Array {
  const bytes = encodeTensor(data, entry.source.dtype);
  if (bytes.byteLength !== entry.byteLength) throw sizeError(entry, bytes.byteLength);
  return bytes;
}

function sizeError(entry: PlannedTensor, got: number): Error {
  const { name, dtype, shape } = entry.source;
  return new Error(`safetensors: tensor ${name} has ${got}${got > entry.byteLength ? '+' : ''} bytes of data but ${dtype}${JSON.stringify(shape)} needs ${entry.byteLength}`);
}

function isChunks(data: TensorData | TensorChunks): data is TensorChunks {
  return !ArrayBuffer.isView(data) && !Array.isArray(data) && typeof data === 'object' && 'chunks' in data;
}

/** Writes in chunks: one write call is limited to about 2 GB, and a tensor may be larger. */
const CHUNK = 1 << 30;

async function writeFully(write: (b: Uint8Array, pos: number) => Promise<number>, bytes: Uint8Array, pos: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const chunk = bytes.subarray(done, Math.min(bytes.byteLength, done + CHUNK));
    done += await write(chunk, pos + done);
  }
}

function writeFullySync(fd: number, bytes: Uint8Array, pos: number): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const chunk = bytes.subarray(done, Math.min(bytes.byteLength, done + CHUNK));
    done += fs.writeSync(fd, chunk, 0, chunk.byteLength, pos + done);
  }
}

let temporaryCount = 0;

function temporaryName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}-${++temporaryCount}.tmp`);
}

/** Contiguous groups of at most `max` bytes (a tensor larger than that gets a shard of its own). */
function splitByMax(sizes: number[], max: number): number[][] {
  const groups: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  sizes.forEach((size, i) => {
    if (current.length > 0 && bytes + size > max) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(i);
    bytes += size;
  });
  if (current.length > 0 || groups.length === 0) groups.push(current);
  return groups;
}

/** Up to `count` contiguous groups of about equal bytes: each tensor goes where its midpoint falls. */
function splitEvenly(sizes: number[], count: number): number[][] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`shardCount must be a positive integer, got ${count}`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: number[][] = Array.from({ length: count }, () => []);
  let before = 0;
  sizes.forEach((size, i) => {
    const at = total === 0 ? Math.floor((i * count) / sizes.length) : Math.floor(((before + size / 2) / total) * count);
    groups[Math.min(count - 1, at)].push(i);
    before += size;
  });
  const nonEmpty = groups.filter((g) => g.length > 0);
  return nonEmpty.length > 0 ? nonEmpty : [[]];
}
