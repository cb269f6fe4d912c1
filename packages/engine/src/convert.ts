import type { SafetensorsDType } from './safetensors.js';

/** The dtypes weights are stored in on the device. */
export type WeightDType = 'f32' | 'bf16';

/**
 * Converts little-endian elements from a checkpoint dtype to a device dtype. Returns `src` itself
 * when no conversion is needed. f32 → bf16 rounds to nearest even, as torch's `.to(bfloat16)`.
 */
export function convertElements(
  src: Uint8Array,
  from: SafetensorsDType,
  to: WeightDType,
): Uint8Array {
  if ((from === 'F32' && to === 'f32') || (from === 'BF16' && to === 'bf16')) return src;
  const n = src.byteLength / (from === 'F32' ? 4 : 2);
  // Copy when unaligned: typed-array views need element-aligned offsets.
  const aligned = src.byteOffset % 4 === 0 ? src : src.slice();
  if (to === 'f32') {
    const out = new Float32Array(n);
    const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
    if (from === 'BF16') {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
    } else {
      for (let i = 0; i < n; i++) out[i] = halfToFloat(u16[i]!);
    }
    return new Uint8Array(out.buffer);
  }
  const out = new Uint16Array(n);
  if (from === 'F32') {
    const bits = new Uint32Array(aligned.buffer, aligned.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = f32BitsToBf16(bits[i]!);
  } else {
    const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
    const f = new Float32Array(1);
    const b = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) {
      f[0] = halfToFloat(u16[i]!);
      out[i] = f32BitsToBf16(b[0]!);
    }
  }
  return new Uint8Array(out.buffer);
}

/** Round-to-nearest-even truncation of f32 bits to bf16; NaN stays a (quiet) NaN. */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
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
