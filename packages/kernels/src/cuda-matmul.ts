import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertShape, assertTensor, contiguous } from './check.js';
import { GPU_DTYPES, gmat, sameDtype, workspaceOf } from './cuda-check.js';
import { cudaNative, DTYPE_CODE } from './cuda-native.js';
import type { MatmulOptions } from './matmul.js';

/**
 * Bytes of cuBLASLt workspace to give matmul on CUDA (options.workspace): allocate it once, from
 * persistent memory, and pass it to every call (graphs capture its address).
 */
export const MATMUL_WORKSPACE_BYTES = 32 * 1024 * 1024;

/** The CUDA path of matmul (cuBLASLt). Internal. */
export function matmulCuda(
  stream: Stream,
  out: Tensor,
  a: Tensor,
  w: Tensor,
  options: MatmulOptions,
): void {
  const dev = stream.device.name;
  const dtype = assertTensor('a', a, GPU_DTYPES, dev).dtype as 'bf16' | 'f16';
  sameDtype('w', w, dtype, dev);
  assertTensor('out', out, [dtype, 'f32'], dev);
  assertShape('a', a, [null, null]);
  assertShape('w', w, [null, a.shape[1]!]);
  assertShape('out', out, [a.shape[0]!, w.shape[0]!]);
  let bias: bigint | undefined;
  if (options.bias !== undefined) {
    assertTensor('options.bias', options.bias, [out.dtype], dev);
    assertShape('options.bias', contiguous('options.bias', options.bias), [w.shape[0]!]);
    bias = options.bias.ptr;
  }
  if (out.ptr === a.ptr || out.ptr === w.ptr) {
    throw new InvalidArgumentError('out', 'a tensor that does not overlap a or w', out.toString());
  }
  const params = {
    out: gmat('out', out),
    a: gmat('a', a),
    w: gmat('w', w),
    bias,
    dtypeIn: DTYPE_CODE[dtype],
    dtypeOut: DTYPE_CODE[out.dtype as 'bf16' | 'f16' | 'f32'],
    workspace: options.workspace?.ptr,
    workspaceBytes: workspaceOf('options.workspace', options.workspace, dev),
  };
  callNative(() => cudaNative().cudaMatmul(stream.nativeHandle, params));
}
