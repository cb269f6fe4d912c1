import { DTYPES, type DType, InvalidArgumentError, Stream, type Tensor } from '@x/core';
import type { NativeMat } from './native.js';

/** Argument checks shared by the kernels: each names the tensor and says expected vs received. */

/** Every dtype (for arguments whose bytes a kernel moves without reading them as numbers). */
export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

/** The stream's native handle; the stream must be a CPU stream (the CUDA kernels come later). */
export function cpuStream(stream: Stream): bigint {
  if (!(stream instanceof Stream)) throw new InvalidArgumentError('stream', 'a Stream', stream);
  if (stream.device.kind !== 'cpu') {
    throw new InvalidArgumentError(
      'stream',
      'a CPU stream (the CUDA kernels are not built yet)',
      stream.device.name,
    );
  }
  return stream.nativeHandle;
}

export function assertTensor(
  name: string,
  t: unknown,
  dtypes: readonly DType[],
  device: string,
): Tensor {
  const tensor = t as Tensor;
  if (typeof tensor !== 'object' || tensor === null || typeof tensor.ptr !== 'bigint') {
    throw new InvalidArgumentError(name, 'a Tensor', t);
  }
  if (!dtypes.includes(tensor.dtype)) {
    throw new InvalidArgumentError(`${name}.dtype`, dtypes.join(' or '), tensor.dtype);
  }
  if (tensor.device.name !== device) {
    throw new InvalidArgumentError(
      `${name}.device`,
      `${device} (the stream's device)`,
      tensor.device.name,
    );
  }
  return tensor;
}

/** Checks the shape; `null` entries are free (any size). */
export function assertShape(name: string, t: Tensor, shape: readonly (number | null)[]): void {
  const ok = t.rank === shape.length && shape.every((d, i) => d === null || t.shape[i] === d);
  if (!ok) {
    const want = `[${shape.map((d) => (d === null ? '*' : d)).join(', ')}]`;
    throw new InvalidArgumentError(`${name}.shape`, want, `[${t.shape.join(', ')}]`);
  }
}

/** A 2-D tensor whose rows are contiguous (any row stride), as the addon's Mat. */
export function mat(name: string, t: Tensor): NativeMat {
  return { ...rowsOf(name, t), bf16: t.dtype === 'bf16' };
}

/** Pointer, rows, columns and row stride of a 2-D tensor with contiguous rows (any row stride). */
export function rowsOf(
  name: string,
  t: Tensor,
): { ptr: bigint; rows: number; cols: number; ld: number } {
  if (t.rank !== 2)
    throw new InvalidArgumentError(`${name}.shape`, 'a 2-D shape', `[${t.shape.join(', ')}]`);
  const [rows, cols] = t.shape as [number, number];
  if (cols > 1 && t.strides[1] !== 1) {
    throw new InvalidArgumentError(
      `${name}.strides`,
      'contiguous rows (last stride 1)',
      `[${t.strides.join(', ')}]`,
    );
  }
  const ld = rows > 1 ? t.strides[0]! : cols;
  if (rows > 1 && ld < cols) {
    throw new InvalidArgumentError(
      `${name}.strides`,
      `a row stride >= ${cols}`,
      `[${t.strides.join(', ')}]`,
    );
  }
  return { ptr: t.ptr, rows, cols, ld };
}

/** A tensor whose elements are contiguous. */
export function contiguous(name: string, t: Tensor): Tensor {
  if (!t.isContiguous) {
    throw new InvalidArgumentError(
      name,
      'a contiguous tensor',
      `strides [${t.strides.join(', ')}]`,
    );
  }
  return t;
}

export function assertPositiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new InvalidArgumentError(name, 'an integer >= 1', v);
  }
  return v;
}

export function assertFinite(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new InvalidArgumentError(name, 'a finite number', v);
  return v;
}

/** Whether the bytes spanned by `a` and `b` (first to last element, any strides) intersect. */
export function tensorsOverlap(a: Tensor, b: Tensor): boolean {
  const span = (t: Tensor): [bigint, bigint] => {
    const last = t.shape.reduce((acc, d, i) => acc + (d - 1) * t.strides[i]!, 0);
    return [t.ptr, t.ptr + BigInt((last + 1) * t.itemSize)];
  };
  const [a0, a1] = span(a);
  const [b0, b1] = span(b);
  return a0 < b1 && b0 < a1;
}
