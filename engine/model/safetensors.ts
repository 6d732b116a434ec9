// Reading Hugging Face safetensors checkpoints, single-file or sharded, without loading whole files.
//
// A safetensors file is: u64 little-endian header length N, N bytes of JSON header
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data
// region the offsets are relative to. We parse and validate every header up front (so a broken
// checkpoint fails before any work starts, with the file and tensor named) and read tensor bytes
// on demand with positional reads: a multi-GB checkpoint never sits in the JS heap.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clip, ModelError } from './errors';
import { MAX_SAFETENSORS_HEADER_BYTES } from '../limits';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute path of the file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's first byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

/** Largest JSON header we accept; real headers are well under a megabyte per thousand tensors. */

/** Parses and validates one safetensors file's header. */
export function readSafetensorsHeader(file: string): TensorInfo[] {
  const display = path.basename(file);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new ModelError(`${display}: cannot open (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new ModelError(`${display}: is not a regular file (${file})`);
    const fileSize = stat.size;
    if (fileSize < 8) throw new ModelError(`${display}: truncated safetensors file (${fileSize} bytes, no header)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) throw new ModelError(`${display}: header length ${headerLen} is not plausible (corrupt or not a safetensors file)`);
    const n = Number(headerLen);
    if (8 + n > fileSize) throw new ModelError(`${display}: truncated safetensors file (header says ${n} bytes, file has ${fileSize - 8} after the length)`);
    const headerBuf = Buffer.alloc(n);
    fs.readSync(fd, headerBuf, 0, n, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      throw new ModelError(`${display}: header is not valid JSON (corrupt or not a safetensors file)`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new ModelError(`${display}: header is not a JSON object`);
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    const out: TensorInfo[] = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') continue;
      out.push(validateEntry(display, file, name, raw, dataStart, dataSize));
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

function validateEntry(display: string, file: string, name: string, raw: unknown, dataStart: number, dataSize: number): TensorInfo {
  const where = `${display}: tensor ${clip(name)}`;
  if (typeof raw !== 'object' || raw === null) throw new ModelError(`${where}: entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) throw new ModelError(`${where}: unknown dtype ${clip(String(JSON.stringify(dtype)))} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new ModelError(`${where}: shape ${clip(String(JSON.stringify(shape)))} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
    throw new ModelError(`${where}: data_offsets ${clip(String(JSON.stringify(offsets)))} are not [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataSize) throw new ModelError(`${where}: data_offsets [${begin}, ${end}] exceed the file's data (${dataSize} bytes; file truncated or header corrupt)`);
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  const expected = elements * DTYPE_BYTES[dtype as SafetensorsDType];
  if (end - begin !== expected) throw new ModelError(`${where}: holds ${end - begin} bytes but ${dtype}${clip(JSON.stringify(shape))} needs ${expected}`);
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], file, byteOffset: dataStart + begin, byteLength: expected };
}

/**
 * Resolves `rel` inside `dir`, refusing anything that would leave it: absolute paths, `..`, and
 * symbolic links whose target lies outside the folder. One exception keeps the Hugging Face cache
 * working: in `<repo>/snapshots/<revision>/`, files are links into `<repo>/blobs/`.
 */
export function resolveInside(dir: string, rel: string, what: string): string {
  if (typeof rel !== 'string' || rel.length === 0) throw new ModelError(`${what}: empty file name`);
  if (path.isAbsolute(rel) || rel.includes('\0')) throw new ModelError(`${what}: points at ${clip(rel)}, an absolute path outside the model folder`);
  const root = path.resolve(dir);
  const full = path.resolve(root, rel);
  if (full !== root && !full.startsWith(root + path.sep)) throw new ModelError(`${what}: points at ${clip(rel)} outside the model folder`);
  checkLinkTarget(root, full, what);
  return full;
}

/** Refuses `file` (inside `root`) when it is, or passes through, a symbolic link that resolves outside `root`. */
function checkLinkTarget(root: string, file: string, what: string): void {
  let real: string;
  let realRoot: string;
  try {
    real = fs.realpathSync(file);
    realRoot = fs.realpathSync(root);
  } catch {
    return; // missing: reported where it is opened
  }
  if (real.startsWith(realRoot + path.sep)) return;
  const snapshots = path.dirname(realRoot);
  if (path.basename(snapshots) === 'snapshots' && real.startsWith(path.join(path.dirname(snapshots), 'blobs') + path.sep)) return;
  throw new ModelError(`${what}: ${clip(path.relative(root, file))} is a symbolic link to ${clip(real)}, outside the model folder ${root}`);
}

/**
 * All tensors of a checkpoint folder: `model.safetensors`, or the shards listed by
 * `model.safetensors.index.json`. Reads are positional and synchronous; one file descriptor per shard.
 */
export class Checkpoint {
  private readonly fds = new Map<string, number>();

  private constructor(readonly dir: string, private readonly tensors: Map<string, TensorInfo>) {}

  static async open(dir: string): Promise<Checkpoint> {
    return Checkpoint.openSync(dir);
  }

  static openSync(dir: string): Checkpoint {
    const root = path.resolve(dir);
    const indexPath = path.join(root, 'model.safetensors.index.json');
    const single = path.join(root, 'model.safetensors');
    const tensors = new Map<string, TensorInfo>();
    if (fs.existsSync(indexPath)) {
      let index: unknown;
      try {
        index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
      } catch (e) {
        throw new ModelError(`model.safetensors.index.json: not valid JSON (${clip((e as Error).message.replace(/\s+/g, ' '), 200)})`);
      }
      const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
      if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw new ModelError('model.safetensors.index.json: missing "weight_map" object');
      const byShard = new Map<string, string[]>();
      for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
        if (typeof shard !== 'string') throw new ModelError(`model.safetensors.index.json: entry for ${clip(name)} is not a file name`);
        const full = resolveInside(root, shard, `model.safetensors.index.json entry for ${clip(name)}`);
        if (!byShard.has(full)) byShard.set(full, []);
        byShard.get(full)!.push(name);
      }
      for (const [full, names] of byShard) {
        if (!fs.existsSync(full)) throw new ModelError(`model.safetensors.index.json points at ${clip(path.relative(root, full))}, which is missing from ${root}`);
        const infos = new Map(readSafetensorsHeader(full).map((t) => [t.name, t]));
        for (const name of names) {
          const info = infos.get(name);
          if (!info) throw new ModelError(`model.safetensors.index.json says ${clip(name)} is in ${path.basename(full)}, but that shard has no such tensor`);
          tensors.set(name, info);
        }
      }
    } else if (fs.existsSync(single)) {
      checkLinkTarget(root, single, 'model.safetensors');
      for (const t of readSafetensorsHeader(single)) tensors.set(t.name, t);
    } else {
      throw new ModelError(`${root}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are read; .bin/pickle files are never loaded)`);
    }
    if (tensors.size === 0) throw new ModelError(`${root}: the checkpoint holds no tensors`);
    return new Checkpoint(root, tensors);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new ModelError(`checkpoint ${this.dir} has no tensor ${clip(name)}`);
    return t;
  }

  /** The tensor's raw bytes, exactly as stored. */
  readBytes(name: string): Buffer {
    const t = this.info(name);
    let fd = this.fds.get(t.file);
    if (fd === undefined) {
      fd = fs.openSync(t.file, 'r');
      this.fds.set(t.file, fd);
    }
    const buf = Buffer.allocUnsafe(t.byteLength);
    let done = 0;
    while (done < t.byteLength) {
      const n = fs.readSync(fd, buf, done, t.byteLength - done, t.byteOffset + done);
      if (n === 0) throw new ModelError(`${path.basename(t.file)}: tensor ${clip(name)} ends early (file truncated while reading)`);
      done += n;
    }
    return buf;
  }

  /** The tensor converted to float32 (from F32, F16, BF16 or F64). */
  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    const bytes = this.readBytes(name);
    return toFloat32(bytes, t.dtype, `${path.basename(t.file)}: tensor ${clip(name)}`);
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}

/** Converts little-endian raw tensor bytes of a float dtype to float32. */
export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDType, what: string): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    case 'BF16': {
      // bf16 is the top half of an fp32: shift into place.
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u32[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    default:
      throw new ModelError(`${what}: dtype ${dtype} is not a floating-point type`);
  }
}

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Rounds a float32 to IEEE half (round to nearest even), returning the 16 bits. */
export function floatToHalf(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half; // may carry into the exponent, which is the correct rounding
  return sign | e;
}
