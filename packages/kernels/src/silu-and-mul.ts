import { callNative, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { siluAndMulCuda } from './cuda-elementwise.js';
import { native } from './native.js';

/**
 * out = silu(x[:, :I]) · x[:, I:] (the gated MLP activation). Shapes: out [T, I], x [T, 2I], f32
 * (CUDA: bf16 or f16, f32 math).
 */
export function siluAndMul(stream: Stream, out: Tensor, x: Tensor): void {
  if (isCudaStream(stream)) {
    siluAndMulCuda(stream, out, x);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  assertTensor('out', out, ['f32'], dev);
  assertTensor('x', x, ['f32'], dev);
  assertShape('out', out, [null, null]);
  assertShape('x', x, [out.shape[0]!, 2 * out.shape[1]!]);
  const params = { out: mat('out', out), x: mat('x', x) };
  callNative(() => native().siluAndMul(h, params));
}
