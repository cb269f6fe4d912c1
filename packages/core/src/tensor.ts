import { type Device, type DeviceName, parseDevice } from './device.js';
import { assertDType, DTYPES, type DType } from './dtype.js';
import { InvalidArgumentError } from './errors.js';
import { assertInteger } from './validate.js';

/** How to build a Tensor descriptor. `strides` (in elements) default to contiguous row-major. */
export interface TensorOptions {
  ptr: bigint;
  dtype: DType;
  shape: readonly number[];
  strides?: readonly number[];
  device: DeviceName | Device;
}

/**
 * A view of device or host memory: address, dtype, shape, strides (in elements) and device. It owns
 * nothing; slice/reshape/view/transpose return new descriptors over the same bytes and never copy.
 */
export class Tensor {
  readonly ptr: bigint;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly device: Device;

  constructor(options: TensorOptions) {
    if (typeof options.ptr !== 'bigint' || options.ptr < 0n) {
      throw new InvalidArgumentError('ptr', 'an address (bigint)', options.ptr);
    }
    this.dtype = assertDType('dtype', options.dtype);
    this.device = parseDevice(options.device);
    if (!Array.isArray(options.shape))
      throw new InvalidArgumentError('shape', 'an array of integers', options.shape);
    this.shape = Object.freeze(options.shape.map((d, i) => assertInteger(`shape[${i}]`, d, 0)));
    if (options.strides !== undefined) {
      if (!Array.isArray(options.strides) || options.strides.length !== this.shape.length) {
        throw new InvalidArgumentError(
          'strides',
          `an array of ${this.shape.length} integers`,
          options.strides,
        );
      }
      this.strides = Object.freeze(
        options.strides.map((s, i) => assertInteger(`strides[${i}]`, s, 0)),
      );
    } else {
      this.strides = Object.freeze(contiguousStrides(this.shape));
    }
    this.ptr = options.ptr;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of one element. */
  get itemSize(): number {
    return DTYPES[this.dtype].bytes;
  }

  /** Bytes covered by the elements (numel × itemSize; contiguous tensors only span exactly this). */
  get byteLength(): number {
    return this.numel * this.itemSize;
  }

  /** True when the elements are laid out row-major without gaps. */
  get isContiguous(): boolean {
    const c = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d <= 1 || this.strides[i] === c[i]);
  }

  /** Elements [start, end) along `dim` (negative indices count from the end). */
  slice(dim: number, start: number, end?: number): Tensor {
    const d = this.normDim(dim);
    const size = this.shape[d]!;
    const s = clampIndex(start, size);
    const e = end === undefined ? size : clampIndex(end, size);
    if (e < s) throw new InvalidArgumentError('end', `an index >= start (${s})`, end);
    const shape = [...this.shape];
    shape[d] = e - s;
    return this.derive(shape, [...this.strides], s * this.strides[d]!);
  }

  /** Element `index` along `dim`, removing that dimension. */
  select(dim: number, index: number): Tensor {
    const d = this.normDim(dim);
    const size = this.shape[d]!;
    const i = index < 0 ? index + size : index;
    if (!Number.isInteger(i) || i < 0 || i >= size) {
      throw new InvalidArgumentError('index', `an integer in [${-size}, ${size})`, index);
    }
    const shape = this.shape.filter((_, k) => k !== d);
    const strides = this.strides.filter((_, k) => k !== d);
    return this.derive(shape, strides, i * this.strides[d]!);
  }

  /** The same elements with a new shape (one -1 is inferred). Contiguous tensors only. */
  reshape(shape: readonly number[]): Tensor {
    if (!this.isContiguous) {
      throw new InvalidArgumentError(
        'tensor',
        'a contiguous tensor (reshape never copies)',
        'a strided view',
      );
    }
    const resolved = inferShape(shape, this.numel);
    return this.derive(resolved, contiguousStrides(resolved), 0);
  }

  /** Reinterprets the bytes as another dtype; the last dimension scales by the size ratio. */
  view(dtype: DType): Tensor {
    const to = assertDType('dtype', dtype);
    const from = this.itemSize;
    const size = DTYPES[to].bytes;
    if (size === from) return new Tensor({ ...this.options(), dtype: to });
    if (this.rank === 0 || this.strides[this.rank - 1] !== 1) {
      throw new InvalidArgumentError(
        'tensor',
        'a tensor whose last dimension is contiguous',
        'a strided view',
      );
    }
    const last = this.shape[this.rank - 1]!;
    if ((last * from) % size !== 0) {
      throw new InvalidArgumentError(
        'dtype',
        `a dtype whose size divides ${last * from} bytes`,
        dtype,
      );
    }
    const shape = [...this.shape];
    shape[this.rank - 1] = (last * from) / size;
    const strides = this.strides.map((s, i) => (i === this.rank - 1 ? 1 : (s * from) / size));
    if (strides.some((s) => !Number.isInteger(s))) {
      throw new InvalidArgumentError('dtype', 'a dtype compatible with the strides', dtype);
    }
    return new Tensor({ ptr: this.ptr, dtype: to, shape, strides, device: this.device });
  }

  /** Swaps two dimensions (a strided view). */
  transpose(dim0: number, dim1: number): Tensor {
    const a = this.normDim(dim0);
    const b = this.normDim(dim1);
    const shape = [...this.shape];
    const strides = [...this.strides];
    [shape[a], shape[b]] = [shape[b]!, shape[a]!];
    [strides[a], strides[b]] = [strides[b]!, strides[a]!];
    return this.derive(shape, strides, 0);
  }

  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(', ')}] @ 0x${this.ptr.toString(16)} on ${this.device.name})`;
  }

  private options(): TensorOptions {
    return {
      ptr: this.ptr,
      dtype: this.dtype,
      shape: this.shape,
      strides: this.strides,
      device: this.device,
    };
  }

  private derive(shape: number[], strides: number[], offsetElements: number): Tensor {
    return new Tensor({
      ptr: this.ptr + BigInt(offsetElements * this.itemSize),
      dtype: this.dtype,
      shape,
      strides,
      device: this.device,
    });
  }

  private normDim(dim: number): number {
    const d = dim < 0 ? dim + this.rank : dim;
    if (!Number.isInteger(d) || d < 0 || d >= this.rank) {
      throw new InvalidArgumentError('dim', `an integer in [${-this.rank}, ${this.rank})`, dim);
    }
    return d;
  }
}

/** Row-major strides (in elements) of `shape`. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= shape[i]!;
  }
  return strides;
}

function clampIndex(i: number, size: number): number {
  if (!Number.isInteger(i)) throw new InvalidArgumentError('index', 'an integer', i);
  const j = i < 0 ? i + size : i;
  return Math.min(Math.max(j, 0), size);
}

function inferShape(shape: readonly number[], numel: number): number[] {
  if (!Array.isArray(shape)) throw new InvalidArgumentError('shape', 'an array of integers', shape);
  const unknown = shape.filter((d) => d === -1).length;
  if (unknown > 1) throw new InvalidArgumentError('shape', 'at most one -1', shape);
  const known = shape.reduce(
    (a, d, i) => (d === -1 ? a : a * assertInteger(`shape[${i}]`, d, 0)),
    1,
  );
  const out = shape.map((d) => (d === -1 ? (known === 0 ? 0 : numel / known) : d));
  const total = out.reduce((a, b) => a * b, 1);
  if (total !== numel || out.some((d) => !Number.isInteger(d))) {
    throw new InvalidArgumentError(
      'shape',
      `a shape with ${numel} elements`,
      `[${shape.join(', ')}]`,
    );
  }
  return out;
}
