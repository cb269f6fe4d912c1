import { callNative, InvalidArgumentError, Stream, StreamError, type WaitOptions } from '@x/core';
import { cudaNative } from './cuda-native.js';

/**
 * Waits for `stream` and reports the first data-dependent error a kernel met (an id outside the
 * vocabulary, a slot, position or block-table entry out of range, inconsistent queryStartLoc).
 * On the CPU such an error fails the stream, so this is `stream.synchronize()`. On CUDA a kernel
 * cannot fail a stream without destroying the context: it skips the bad index (never touching
 * memory through it, writing NaN where a row could not be computed) and records the first error
 * of the device; this call copies that record to the host in stream order, clears it, waits, and
 * rejects with a StreamError naming the op and the index. Call it once per step (it costs one
 * small copy); errors of other streams of the same device are reported by whichever check runs
 * after them.
 */
export async function checkKernelErrors(stream: Stream, options: WaitOptions = {}): Promise<void> {
  if (!(stream instanceof Stream)) throw new InvalidArgumentError('stream', 'a Stream', stream);
  if (stream.device.kind === 'cpu') return stream.synchronize(options);
  callNative(() => cudaNative().cudaFetchErrors(stream.nativeHandle));
  await stream.synchronize(options);
  const message = callNative(() => cudaNative().cudaReadErrors(stream.device.index));
  if (message !== undefined)
    throw new StreamError(`a kernel on ${stream.device.name} met bad data: ${message}`);
}

/** What the CUDA side of this build of @x/kernels has: kernels compiled in, and cuBLASLt. */
export interface GpuKernelInfo {
  /** The CUDA kernels were compiled in (nvcc was found at build time). */
  kernels: boolean;
  /** e.g. ["sm_80", "sm_90a", "compute_90"]. */
  architectures: string[];
  /** cuBLASLt could be opened (matmul on CUDA needs it). */
  cublasLt: boolean;
  /** Its version and library, or why it cannot be used. */
  cublasLtDetail: string;
}

/** Reports the CUDA side of @x/kernels (works without a GPU). */
export function gpuKernelInfo(): GpuKernelInfo {
  const i = callNative(() => cudaNative().cudaInfo());
  return {
    kernels: i.kernels,
    architectures: i.architectures ? i.architectures.split(',') : [],
    cublasLt: i.cublasLtAvailable,
    cublasLtDetail: i.cublasLt,
  };
}
