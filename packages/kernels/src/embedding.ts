import { callNative, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { embeddingCuda } from './cuda-elementwise.js';
import { native } from './native.js';

/**
 * out[t] = table[ids[t]] (bf16 tables are widened to f32). An id outside [0, V) fails the stream.
 * Shapes: out [T, H] f32, table [V, H] f32|bf16, ids [T] i32. CUDA: out and table bf16 or f16 (the
 * same), ids i32; a bad id fills its row with NaN and is reported by checkKernelErrors.
 */
export function embedding(stream: Stream, out: Tensor, table: Tensor, ids: Tensor): void {
  if (isCudaStream(stream)) {
    embeddingCuda(stream, out, table, ids);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  assertTensor('out', out, ['f32'], dev);
  assertTensor('table', table, ['f32', 'bf16'], dev);
  assertTensor('ids', ids, ['i32'], dev);
  assertShape('table', table, [null, out.shape[1] ?? null]);
  assertShape('ids', contiguous('ids', ids), [out.shape[0] ?? null]);
  const params = { out: mat('out', out), table: mat('table', table), ids: ids.ptr };
  callNative(() => native().embedding(h, params));
}
