// Helpers of the GPU kernel checks (Node alone, no vitest): device tensors in @x/cumem allocations,
// host staging through pinned buffers, bf16/f16 conversions, CPU references computed by the CPU
// kernels of the same package, and error measures. X_GPU_SMALL=1 shrinks every size (for
// compute-sanitizer runs).
import assert from 'node:assert/strict';
import { HostBuffer, Stream, Tensor } from '../../../core/dist/index.js';
import { Allocator } from '../../../cumem/dist/index.js';

export const DEV = process.env.X_TEST_DEVICE ?? 'cuda:0';
export const SMALL = process.env.X_GPU_SMALL === '1';
export const TOL = { bf16: 1e-2, f16: 2e-3 };

/** mulberry32: deterministic, so a failure reproduces. */
export function rng(seed) {
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
export function randomF32(n, rand, lo = -1, hi = 1) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rand() || 1e-3;
  return out;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function toBf16(x) {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return out;
}
export function fromBf16(x) {
  const out = new Uint32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] << 16;
  return new Float32Array(out.buffer);
}

/** f32 -> IEEE half bits, round to nearest even (normal, subnormal, inf, NaN). */
export function toF16(x) {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    f32buf[0] = x[i];
    const u = u32buf[0];
    const sign = (u >>> 16) & 0x8000;
    const exp = (u >>> 23) & 0xff;
    let mant = u & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    out[i] = sign | h;
  }
  return out;
}
export function fromF16(x) {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const h = x[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] =
      e === 0
        ? s * m * 2 ** -24
        : e === 31
          ? m
            ? Number.NaN
            : s * Infinity
          : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
export const encode = (dtype, x) => (dtype === 'bf16' ? toBf16(x) : toF16(x));
export const decode = (dtype, bits) => (dtype === 'bf16' ? fromBf16(bits) : fromF16(bits));
/** What `x` becomes after a round trip through `dtype` (the values the GPU actually sees). */
export const roundTo = (dtype, x) => decode(dtype, encode(dtype, x));

const BYTES = { f32: 4, f16: 2, bf16: 2, i32: 4, i64: 8, u8: 1 };

/**
 * Device tensors for one test file: one @x/cumem allocator (addresses stay registered, so graph
 * capture accepts them), a CUDA stream, and pinned staging for uploads and downloads.
 */
export class GpuArena {
  static async create() {
    const a = new GpuArena();
    a.allocator = await Allocator.create({ device: DEV });
    a.stream = Stream.create(DEV);
    a.allocator.registerStream(a.stream);
    return a;
  }

  constructor() {
    this.allocs = [];
  }

  /** A device tensor (poisoned: 0xFF bytes are NaN in f32, f16 and bf16). */
  tensor(dtype, shape, { tag = 'activations', owner = 'test' } = {}) {
    const n = shape.reduce((x, y) => x * y, 1);
    const bytes = Math.max(256, n * BYTES[dtype]);
    const a = this.allocator.alloc(bytes, { tag, owner });
    this.allocs.push(a);
    const t = new Tensor({ ptr: a.ptr, dtype, shape, device: DEV });
    this.stream.fill(t.ptr, bytes, 0xff, 1);
    return t;
  }

  /** A device tensor holding `data` (typed array of the dtype's bits or values). */
  async upload(dtype, shape, data, opts) {
    const t = this.tensor(dtype, shape, opts);
    await this.write(t, data);
    return t;
  }

  async write(t, data) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const h = HostBuffer.alloc(bytes.length, { device: DEV });
    h.bytes.set(bytes);
    this.stream.copy(t.ptr, h.ptr, bytes.length);
    await this.stream.synchronize();
    h.dispose();
  }

  /** Fills the tensor with 0xFF (NaN) so elements a kernel does not write fail the comparison. */
  poison(t) {
    this.stream.fill(t.ptr, t.byteLength, 0xff, 1);
  }

  /** The tensor's elements as a typed array (contiguous tensors; call after the work was enqueued). */
  async read(t) {
    const h = HostBuffer.alloc(t.byteLength, { device: DEV });
    this.stream.copy(h.ptr, t.ptr, t.byteLength);
    await this.stream.synchronize();
    const copy = h.bytes.slice().buffer;
    h.dispose();
    const Ctor = {
      f32: Float32Array,
      bf16: Uint16Array,
      f16: Uint16Array,
      i32: Int32Array,
      i64: BigInt64Array,
      u8: Uint8Array,
    }[t.dtype];
    return new Ctor(copy);
  }

  /** The tensor as f32 values (bf16/f16 decoded). */
  async readF32(t) {
    const raw = await this.read(t);
    return t.dtype === 'bf16' || t.dtype === 'f16' ? decode(t.dtype, raw) : raw;
  }

  async dispose() {
    await this.stream.synchronize();
    for (const a of this.allocs) this.allocator.free(a);
    this.allocs = [];
    await this.allocator.dispose();
  }
}

/** Host tensors for the CPU reference kernels (a CPU stream). */
export class CpuArena {
  constructor() {
    this.buffers = [];
    this.stream = Stream.create('cpu');
  }
  tensor(dtype, shape, data) {
    const n = shape.reduce((x, y) => x * y, 1);
    const buf = HostBuffer.alloc(Math.max(1, n * BYTES[dtype]));
    this.buffers.push(buf);
    const dst = new Uint8Array(buf.buffer, 0, n * BYTES[dtype]);
    if (data === undefined) dst.fill(0xff);
    else dst.set(new Uint8Array(data.buffer, data.byteOffset, n * BYTES[dtype]));
    return new Tensor({ ptr: buf.ptr, dtype, shape, device: 'cpu' });
  }
  read(t) {
    const b = this.buffers.find((x) => t.ptr >= x.ptr && t.ptr < x.ptr + BigInt(x.byteLength));
    const Ctor = { f32: Float32Array, i32: Int32Array, bf16: Uint16Array }[t.dtype];
    return new Ctor(b.buffer, Number(t.ptr - b.ptr), t.numel).slice();
  }
  dispose() {
    for (const b of this.buffers) b.dispose();
    this.buffers = [];
  }
}

/** ‖out − ref‖ / ‖ref‖ and the number of non-finite outputs. */
export function relErr(out, ref) {
  assert.equal(out.length, ref.length, 'length');
  let num = 0;
  let den = 0;
  let bad = 0;
  let firstBad = -1;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(out[i])) {
      bad++;
      if (firstBad < 0) firstBad = i;
      continue;
    }
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return { rel: Math.sqrt(num / (den || 1)), bad, firstBad };
}

/** Asserts the error bound for `dtype` and that every element was written (finite). */
export function assertClose(label, out, ref, dtype, tol = TOL[dtype]) {
  const e = relErr(out, ref);
  const msg = `${label}: rel ${e.rel.toExponential(2)} (tol ${tol}), ${e.bad} non-finite (first at ${e.firstBad})`;
  assert.equal(e.bad, 0, msg);
  assert.ok(e.rel <= tol, msg);
  return e;
}
