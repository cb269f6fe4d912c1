import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertTensor, contiguous, tensorsOverlap } from './check.js';
import { isCudaStream } from './cuda-check.js';
import { cudaNative } from './cuda-native.js';

/**
 * dst[dstIndex[k]] = src[srcIndex[k]] for every k, in stream order: 4-byte elements (i32, or f32
 * bits copied as they are) of two contiguous tensors on the stream's device that do not overlap.
 * The indices come from the host (checked here: in range, dstIndex without repeats). What it is
 * for: feeding the token ids a step sampled on the device into the next step's input ids without
 * a round trip through the host. CUDA: one small kernel (indices passed by value, 256 per launch);
 * CPU: one stream copy per run of consecutive indices.
 */
export function indexCopy(
  stream: Stream,
  dst: Tensor,
  dstIndex: ArrayLike<number>,
  src: Tensor,
  srcIndex: ArrayLike<number>,
): void {
  const dev = stream.device.name;
  contiguous('dst', assertTensor('dst', dst, ['i32', 'f32'], dev));
  contiguous('src', assertTensor('src', src, ['i32', 'f32'], dev));
  const n = dstIndex?.length;
  if (!Number.isInteger(n) || srcIndex?.length !== n) {
    throw new InvalidArgumentError(
      'srcIndex',
      `as many indices as dstIndex (${n})`,
      srcIndex?.length,
    );
  }
  const di = Int32Array.from(dstIndex);
  const si = Int32Array.from(srcIndex);
  const seen = new Set<number>();
  for (let k = 0; k < n; k++) {
    if (!Number.isInteger(dstIndex[k]) || di[k]! < 0 || di[k]! >= dst.numel) {
      throw new InvalidArgumentError(
        `dstIndex[${k}]`,
        `an index in [0, ${dst.numel})`,
        dstIndex[k],
      );
    }
    if (!Number.isInteger(srcIndex[k]) || si[k]! < 0 || si[k]! >= src.numel) {
      throw new InvalidArgumentError(
        `srcIndex[${k}]`,
        `an index in [0, ${src.numel})`,
        srcIndex[k],
      );
    }
    if (seen.has(di[k]!)) {
      throw new InvalidArgumentError(`dstIndex[${k}]`, 'an index not repeated', di[k]);
    }
    seen.add(di[k]!);
  }
  if (tensorsOverlap(dst, src)) {
    throw new InvalidArgumentError(
      'dst',
      'memory that does not overlap src',
      'overlapping tensors',
    );
  }
  if (n === 0) return;
  if (isCudaStream(stream)) {
    const params = {
      dst: dst.ptr,
      dstNumel: dst.numel,
      src: src.ptr,
      srcNumel: src.numel,
      dstIndex: di,
      srcIndex: si,
    };
    callNative(() => cudaNative().cudaIndexCopy(stream.nativeHandle, params));
    return;
  }
  // Runs of pairs consecutive in both tensors (in destination order) become one copy each.
  const order = Array.from({ length: n }, (_, k) => k).sort((a, b) => di[a]! - di[b]!);
  for (let r = 0; r < n; ) {
    const k0 = order[r]!;
    let len = 1;
    while (r + len < n) {
      const k = order[r + len]!;
      if (di[k] !== di[k0]! + len || si[k] !== si[k0]! + len) break;
      len++;
    }
    stream.copy(dst.ptr + BigInt(di[k0]! * 4), src.ptr + BigInt(si[k0]! * 4), len * 4);
    r += len;
  }
}
