// Block-wise 4-bit weight quantization in the layout of onnxruntime's com.microsoft MatMulNBits
// (bits = 4): a weight W [N, K] (HF's [out, in]) is cut along K into blocks of `blockSize` values;
// each block stores 4-bit codes q, a float scale s and a 4-bit zero point z, and stands for
// (q − z)·s. Round to nearest, per block:
//   asymmetric  the block's range [min(w, 0), max(w, 0)] spread over codes 0..15 (z = the code of 0)
//   symmetric   s = m / −8 for the block's value m of largest magnitude (m ↦ −8 exactly), z = 8
//               (the op's default, so no zero points are stored); codes clamp to −8..7
// with the range shrunk by the factor (of RANGE_FACTORS) that gives the block the least squared error.
//
// Layout (the op's inputs):
//   codes        uint8 [N, kBlocks, blockSize/2], kBlocks = ceil(K / blockSize); value k of a block
//                in byte k>>1, the low nibble for even k (K is zero-padded up to whole blocks)
//   scales       float32 [N, kBlocks]
//   zeroPoints   uint8 [N, ceil(kBlocks/2)], packed the same way (asymmetric only)

import type { Int4GraphSettings } from '../graph/transformer';
import { ModelError } from '../model/errors';

export const INT4_BLOCK_SIZES = [16, 32, 64, 128, 256] as const;
export const INT4_ACCURACY_LEVELS = [0, 1, 4] as const;

/**
 * Weight-only 4-bit quantization of the projections (q/k/v, o, gate/up, down and, with `head`, the
 * vocabulary projection), run by com.microsoft MatMulNBits. Embeddings and norms keep the package dtype.
 */
export interface PackageQuantization extends Int4GraphSettings {
  method: 'int4';
  /** true: scale only (zero point 8); false: scale and zero point per block. */
  symmetric: boolean;
  /**
   * The vocabulary projection: kept in the package dtype, or 4- or 8-bit blocks (a quantized copy of
   * tied embeddings; the float copy stays for the token lookup).
   */
  head: HeadQuantization;
}

export const HEAD_CHOICES = ['keep', 'int4', 'int8'] as const;
export type HeadQuantization = (typeof HEAD_CHOICES)[number];

/** What `--quantize int4` means unless told otherwise (chosen by measurement: bench/int4/). */
export const INT4_DEFAULTS: PackageQuantization = { method: 'int4', blockSize: 16, symmetric: false, head: 'int8', accuracyLevel: 4 };

/** One message per problem with int4 settings (empty when valid), for the CLI and the settings form. */
export function validateQuantization(input: Partial<PackageQuantization>): string[] {
  const errors: string[] = [];
  if (input.method !== undefined && input.method !== 'int4') errors.push(`quantize must be int4, got ${JSON.stringify(input.method)}`);
  if (input.blockSize !== undefined && !INT4_BLOCK_SIZES.includes(input.blockSize as (typeof INT4_BLOCK_SIZES)[number])) errors.push(`quantization block size must be one of ${INT4_BLOCK_SIZES.join(', ')}, got ${JSON.stringify(input.blockSize)}`);
  if (input.accuracyLevel !== undefined && !INT4_ACCURACY_LEVELS.includes(input.accuracyLevel as (typeof INT4_ACCURACY_LEVELS)[number])) errors.push(`quantization accuracy level must be one of ${INT4_ACCURACY_LEVELS.join(', ')} (MatMulNBits accuracy_level), got ${JSON.stringify(input.accuracyLevel)}`);
  if (input.symmetric !== undefined && typeof input.symmetric !== 'boolean') errors.push('quantization symmetric must be true or false');
  if (input.head !== undefined && !HEAD_CHOICES.includes(input.head)) errors.push(`quantization head must be one of ${HEAD_CHOICES.join(', ')}, got ${JSON.stringify(input.head)}`);
  return errors;
}

/** Fills the defaults and validates; throws listing every problem. */
export function resolveQuantization(input: Partial<PackageQuantization>): PackageQuantization {
  const errors = validateQuantization(input);
  if (errors.length) throw new ModelError(`invalid quantization: ${errors.join('; ')}`);
  return { ...INT4_DEFAULTS, ...input, method: 'int4' };
}

export interface Int4Weight {
  /** 4 (two codes a byte) or 8 (the vocabulary projection's finer option). */
  bits: 4 | 8;
  /** Output features (rows of W). */
  N: number;
  /** Input features (columns of W, the reduction axis). */
  K: number;
  blockSize: number;
  codes: Uint8Array;
  scales: Float32Array;
  /** Packed zero points; null for symmetric quantization (the op then uses 2^(bits−1)). */
  zeroPoints: Uint8Array | null;
}

export const blocksPerRow = (K: number, blockSize: number) => Math.ceil(K / blockSize);
export const zeroPointBytesPerRow = (kBlocks: number, bits: 4 | 8 = 4) => Math.ceil((kBlocks * bits) / 8);

function setCode(bytes: Uint8Array, at: number, index: number, value: number, bits: 4 | 8): void {
  if (bits === 8) {
    bytes[at + index] = value;
    return;
  }
  const byte = at + (index >> 1);
  bytes[byte] = index & 1 ? (bytes[byte] & 0x0f) | (value << 4) : (bytes[byte] & 0xf0) | value;
}

function getCode(bytes: Uint8Array, at: number, index: number, bits: 4 | 8): number {
  if (bits === 8) return bytes[at + index];
  const b = bytes[at + (index >> 1)];
  return index & 1 ? b >> 4 : b & 0x0f;
}

/**
 * Range shrink factors tried per block: clipping the few largest values often lowers the block's
 * squared error (finer steps for the many small values); each block keeps the factor that does best.
 */
const RANGE_FACTORS = [1, 0.96, 0.92, 0.88, 0.84, 0.8, 0.76, 0.72];

/** Scale and zero point of one block for a range shrunk by `f` (zero = 2^(bits−1) when symmetric). */
function blockParams(lo: number, hi: number, extreme: number, f: number, symmetric: boolean, qmax: number): { scale: number; zero: number } {
  const mid = (qmax + 1) / 2;
  if (symmetric) return { scale: Math.fround((extreme * f) / -mid), zero: mid };
  const scale = Math.fround(((hi - lo) * f) / qmax);
  return { scale, zero: scale === 0 ? mid : Math.min(qmax, Math.max(0, Math.round((-lo * f) / scale))) };
}

const toCode = (v: number, scale: number, zero: number, qmax: number) => (scale === 0 ? zero : Math.min(qmax, Math.max(0, Math.round(v / scale) + zero)));

/** Quantizes W [N, K] (row-major, HF's [out, in]) block by block along K, to 4-bit (or 8-bit) codes. */
export function quantizeInt4(w: Float32Array, N: number, K: number, blockSize: number, symmetric: boolean, bits: 4 | 8 = 4): Int4Weight {
  if (!INT4_BLOCK_SIZES.includes(blockSize as (typeof INT4_BLOCK_SIZES)[number])) throw new ModelError(`int4 block size must be one of ${INT4_BLOCK_SIZES.join(', ')}, got ${blockSize}`);
  if (w.length !== N * K) throw new Error(`int4: weight has ${w.length} values, expected ${N}×${K}`);
  const kBlocks = blocksPerRow(K, blockSize);
  const blob = (blockSize * bits) / 8;
  const qmax = 2 ** bits - 1;
  const zpRow = zeroPointBytesPerRow(kBlocks, bits);
  const codes = new Uint8Array(N * kBlocks * blob);
  const scales = new Float32Array(N * kBlocks);
  const zeroPoints = symmetric ? null : new Uint8Array(N * zpRow);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let b = 0; b < kBlocks; b++) {
      const k0 = row + b * blockSize;
      const k1 = row + Math.min(K, (b + 1) * blockSize);
      // The range includes 0, so zero (and the padding) is exact; `extreme` is the value of largest magnitude.
      let lo = 0;
      let hi = 0;
      let extreme = 0;
      for (let k = k0; k < k1; k++) {
        const v = w[k];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (Math.abs(v) > Math.abs(extreme)) extreme = v;
      }
      let best = blockParams(lo, hi, extreme, 1, symmetric, qmax);
      let bestError = Infinity;
      for (const f of RANGE_FACTORS) {
        const p = blockParams(lo, hi, extreme, f, symmetric, qmax);
        let error = 0;
        for (let k = k0; k < k1; k++) {
          const e = w[k] - (toCode(w[k], p.scale, p.zero, qmax) - p.zero) * p.scale;
          error += e * e;
        }
        if (error < bestError) [best, bestError] = [p, error];
      }
      scales[n * kBlocks + b] = best.scale;
      if (zeroPoints) setCode(zeroPoints, n * zpRow, b, best.zero, bits);
      const at = (n * kBlocks + b) * blob;
      // Padding past K gets the zero point's code: it dequantizes to 0.
      for (let j = 0; j < blockSize; j++) setCode(codes, at, j, k0 + j < k1 ? toCode(w[k0 + j], best.scale, best.zero, qmax) : best.zero, bits);
    }
  }
  return { bits, N, K, blockSize, codes, scales, zeroPoints };
}

/** W [N, K] back from its codes: (q − z)·s, as the op computes it. */
export function dequantizeInt4(q: Int4Weight): Float32Array {
  const { N, K, blockSize, bits } = q;
  const kBlocks = blocksPerRow(K, blockSize);
  const blob = (blockSize * bits) / 8;
  const zpRow = zeroPointBytesPerRow(kBlocks, bits);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const zero = q.zeroPoints ? getCode(q.zeroPoints, n * zpRow, b, bits) : 2 ** (bits - 1);
      out[n * K + k] = (getCode(q.codes, (n * kBlocks + b) * blob, k % blockSize, bits) - zero) * q.scales[n * kBlocks + b];
    }
  }
  return out;
}
