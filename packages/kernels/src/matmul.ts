import { callNative, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { matmulCuda } from './cuda-matmul.js';
import { native } from './native.js';

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Added to every row of the result: [N] f32|bf16 (Qwen2's q/k/v bias; CUDA: out's dtype). */
  bias?: Tensor;
  /**
   * CUDA: cuBLASLt's workspace, MATMUL_WORKSPACE_BYTES of persistent memory allocated once and
   * passed to every call. Without it cuBLASLt picks among algorithms that need none.
   */
  workspace?: Tensor;
}

/**
 * out = a · wᵀ (+ bias): the layout of a Hugging Face Linear (w is [out_features, in_features]).
 * Shapes: out [M, N] f32, a [M, K] f32, w [N, K] f32|bf16 (bf16 widened in the inner loop; f32
 * accumulation). Rows may be strided (e.g. writing into half of a wider buffer). `out` must not
 * overlap `a` or `w`. CUDA (cuBLASLt, f32 accumulation): a and w bf16 or f16 (the same), out that
 * dtype or f32 (logits), bias out's dtype; shapes cached with their algorithm.
 */
export function matmul(
  stream: Stream,
  out: Tensor,
  a: Tensor,
  w: Tensor,
  options: MatmulOptions = {},
): void {
  if (isCudaStream(stream)) {
    matmulCuda(stream, out, a, w, options);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  assertTensor('out', out, ['f32'], dev);
  assertTensor('a', a, ['f32'], dev);
  assertTensor('w', w, ['f32', 'bf16'], dev);
  assertShape('a', a, [null, null]);
  assertShape('w', w, [null, a.shape[1]!]);
  assertShape('out', out, [a.shape[0]!, w.shape[0]!]);
  let bias: bigint | undefined;
  if (options.bias !== undefined) {
    assertTensor('options.bias', options.bias, ['f32', 'bf16'], dev);
    assertShape('options.bias', contiguous('options.bias', options.bias), [w.shape[0]!]);
    bias = options.bias.ptr;
  }
  const params = {
    out: mat('out', out),
    a: mat('a', a),
    w: mat('w', w),
    bias,
    biasBf16: options.bias?.dtype === 'bf16',
  };
  callNative(() => native().matmul(h, params));
}
