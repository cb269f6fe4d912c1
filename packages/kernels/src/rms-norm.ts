import { callNative, type Stream, type Tensor } from '@x/core';
import { assertFinite, assertShape, assertTensor, contiguous, cpuStream, mat } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { rmsNormCuda } from './cuda-elementwise.js';
import { native } from './native.js';

/** Options of {@link rmsNorm}. */
export interface RmsNormOptions {
  /** Added to the mean square before the square root (HF `rms_norm_eps`). */
  eps: number;
  /**
   * Fused residual add (vLLM fused_add_rms_norm): residual ← x + residual, then
   * out ← rmsnorm(residual) · weight. Same shape as x.
   */
  residual?: Tensor;
}

/**
 * out = x / sqrt(mean(x²) + eps) · weight, row by row, f32 math. Shapes: out, x [T, H] f32;
 * weight [H] f32|bf16. For Qwen3's per-head q/k norm pass views reshaped to [T·heads, headDim].
 * `out` may alias `x`. CUDA: x, out, weight and residual bf16 or f16 (one dtype), f32 math; the
 * residual sum is rounded to that dtype before the norm reads it (as transformers does).
 */
export function rmsNorm(
  stream: Stream,
  out: Tensor,
  x: Tensor,
  weight: Tensor,
  options: RmsNormOptions,
): void {
  if (isCudaStream(stream)) {
    rmsNormCuda(stream, out, x, weight, options);
    return;
  }
  const h = cpuStream(stream);
  const dev = stream.device.name;
  assertTensor('x', x, ['f32'], dev);
  assertTensor('out', out, ['f32'], dev);
  assertTensor('weight', weight, ['f32', 'bf16'], dev);
  const rows = x.shape[0] ?? null;
  const cols = x.shape[1] ?? null;
  assertShape('x', x, [null, null]);
  assertShape('out', out, [rows, cols]);
  assertShape('weight', contiguous('weight', weight), [cols]);
  const eps = assertFinite('options.eps', options?.eps);
  let residual: ReturnType<typeof mat> | undefined;
  if (options.residual !== undefined) {
    assertTensor('options.residual', options.residual, ['f32'], dev);
    assertShape('options.residual', options.residual, [rows, cols]);
    residual = mat('options.residual', options.residual);
  }
  const params = {
    out: mat('out', out),
    x: mat('x', x),
    residual,
    weight: weight.ptr,
    weightBf16: weight.dtype === 'bf16',
    eps,
  };
  callNative(() => native().rmsNorm(h, params));
}
