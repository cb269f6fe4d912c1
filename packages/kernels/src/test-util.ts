// Helpers for the kernel tests: host memory that CPU streams accept, seeded random data (never
// zeros), poisoned outputs (0xFF bytes are NaN in f32) and float comparisons.
import { type DType, HostBuffer, Tensor } from '@x/core';
import { expect } from 'vitest';

/** A deterministic generator (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform in [lo, hi), never exactly zero. */
export function randomF32(n: number, rand: () => number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rand() || 1e-3;
  return out;
}

/** f32 → bf16 bits (round to nearest even), and back. */
export function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16;
  return out;
}
export function fromBf16(x: Uint16Array): Float32Array {
  const out = new Uint32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! << 16;
  return new Float32Array(out.buffer);
}

type Data = Float32Array | Int32Array | BigInt64Array | Uint16Array;

/** Host buffers for one test; `dispose` frees them all (after the stream is synchronized). */
export class Arena {
  readonly #buffers: HostBuffer[] = [];

  tensor(dtype: DType, shape: readonly number[], data?: Data): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const bytes = { f32: 4, i32: 4, i64: 8, bf16: 2, f16: 2, u8: 1 }[dtype];
    const buf = HostBuffer.alloc(Math.max(1, n * bytes));
    this.#buffers.push(buf);
    const dst = new Uint8Array(buf.buffer, 0, n * bytes);
    if (data === undefined) dst.fill(0xff);
    else dst.set(new Uint8Array(data.buffer, data.byteOffset, n * bytes));
    return new Tensor({ ptr: buf.ptr, dtype, shape, device: 'cpu' });
  }

  f32(shape: readonly number[], data?: Float32Array): Tensor {
    return this.tensor('f32', shape, data);
  }
  i32(shape: readonly number[], data: ArrayLike<number>): Tensor {
    return this.tensor('i32', shape, Int32Array.from(data));
  }
  i64(shape: readonly number[], data: ArrayLike<number>): Tensor {
    return this.tensor('i64', shape, BigInt64Array.from(Array.from(data, (v) => BigInt(v))));
  }

  /** The live contents of a tensor created here (contiguous from its ptr). */
  read(t: Tensor): Float32Array {
    return new Float32Array(this.#bufferOf(t), Number(t.ptr - this.#base(t)), t.numel);
  }
  readI32(t: Tensor): Int32Array {
    return new Int32Array(this.#bufferOf(t), Number(t.ptr - this.#base(t)), t.numel);
  }

  dispose(): void {
    for (const b of this.#buffers) b.dispose();
    this.#buffers.length = 0;
  }

  #find(t: Tensor): HostBuffer {
    const b = this.#buffers.find((x) => t.ptr >= x.ptr && t.ptr < x.ptr + BigInt(x.byteLength));
    if (!b) throw new Error(`tensor ${t} is not from this arena`);
    return b;
  }
  #bufferOf(t: Tensor): ArrayBuffer {
    return this.#find(t).buffer;
  }
  #base(t: Tensor): bigint {
    return this.#find(t).ptr;
  }
}

/** Every element within atol + rtol·|expected| (NaN, e.g. an unwritten poisoned element, fails). */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-5,
  atol = 1e-5,
): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      throw new Error(`element ${i}: got ${a}, expected ${e} (rtol ${rtol}, atol ${atol})`);
    }
  }
}
