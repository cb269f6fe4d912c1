import { type DType, InvalidArgumentError, Stream, type Tensor } from '@x/core';
import { assertTensor, rowsOf } from './check.js';
import type { GpuMat } from './cuda-native.js';

/** Argument checks of the CUDA paths (the CPU ones live in check.ts). */

/** True when `stream` is a CUDA stream: the op then runs the CUDA kernel. */
export function isCudaStream(stream: Stream): boolean {
  return stream instanceof Stream && stream.device.kind === 'cuda';
}

/** Activation dtypes the CUDA kernels take. */
export const GPU_DTYPES: readonly DType[] = ['bf16', 'f16'];

/** A tensor on the stream's device whose dtype is `dtype` (the op's activation dtype). */
export function sameDtype(name: string, t: unknown, dtype: DType, device: string): Tensor {
  return assertTensor(name, t, [dtype], device);
}

/** A 2-D tensor with contiguous rows (any row stride) as the CUDA binding's matrix. */
export function gmat(name: string, t: Tensor): GpuMat {
  return rowsOf(name, t);
}

/** The byte size of a workspace tensor (any dtype, contiguous, on `device`). */
export function workspaceOf(name: string, t: Tensor | undefined, device: string): number {
  if (t === undefined) return 0;
  const ws = t as Tensor;
  if (typeof ws !== 'object' || ws === null || typeof ws.ptr !== 'bigint') {
    throw new InvalidArgumentError(name, 'a Tensor', t);
  }
  if (ws.device.name !== device) {
    throw new InvalidArgumentError(
      `${name}.device`,
      `${device} (the stream's device)`,
      ws.device.name,
    );
  }
  if (!ws.isContiguous) {
    throw new InvalidArgumentError(
      name,
      'a contiguous tensor',
      `strides [${ws.strides.join(', ')}]`,
    );
  }
  return ws.byteLength;
}
