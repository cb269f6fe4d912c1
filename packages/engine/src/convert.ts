import type { SafetensorsDType } from './safetensors.js';

/** The dtypes weights are stored in on the device (f16: CUDA only; the CPU kernels take f32/bf16). */
export type WeightDType = 'f32' | 'bf16' | 'f16';

const SOURCE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

/**
 * Converts little-endian elements from a checkpoint dtype to a device dtype. Returns `src` itself
 * when no conversion is needed. f32 → bf16 and f32 → f16 round to nearest even, as torch's `.to()`;
 * bf16 → f16 goes through f32 (exact) and rounds once.
 */
export function convertElements(
  src: Uint8Array,
  from: SafetensorsDType,
  to: WeightDType,
): Uint8Array {
  if (
    (from === 'F32' && to === 'f32') ||
    (from === 'BF16' && to === 'bf16') ||
    (from === 'F16' && to === 'f16')
  ) {
    return src;
  }
  const n = src.byteLength / (SOURCE_BYTES[from] ?? 4);
  // Copy when unaligned: typed-array views need element-aligned offsets.
  const aligned = src.byteOffset % 4 === 0 ? src : src.slice();
  const wide = widen(aligned, from, n);
  if (to === 'f32') return new Uint8Array(wide.buffer, wide.byteOffset, wide.byteLength);
  const bits = new Uint32Array(wide.buffer, wide.byteOffset, n);
  const out = new Uint16Array(n);
  if (to === 'bf16') for (let i = 0; i < n; i++) out[i] = f32BitsToBf16(bits[i]!);
  else for (let i = 0; i < n; i++) out[i] = f32BitsToHalf(bits[i]!);
  return new Uint8Array(out.buffer);
}

/** The elements as f32 (exact for every source dtype). */
function widen(src: Uint8Array, from: SafetensorsDType, n: number): Float32Array {
  if (from === 'F32') return new Float32Array(src.buffer, src.byteOffset, n);
  const out = new Float32Array(n);
  const u16 = new Uint16Array(src.buffer, src.byteOffset, n);
  if (from === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(u16[i]!);
  }
  return out;
}

/** Round-to-nearest-even truncation of f32 bits to bf16; NaN stays a (quiet) NaN. */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

/**
 * f32 bits → IEEE half bits, round to nearest even; overflow gives ±inf, tiny values subnormals or
 * ±0, NaN stays a (quiet) NaN.
 */
export function f32BitsToHalf(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent (or to inf)
  return sign | h;
}

/** IEEE half → number (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
