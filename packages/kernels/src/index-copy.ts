import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertTensor, contiguous, DTYPE_NAMES, tensorsOverlap } from './check.js';
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
  const { di, si } = checkPairs(dst, dstIndex, src, srcIndex);
  const n = di.length;
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

/** The index copy that {@link copyWithIndexCopy} applies over its copy. */
export interface CopyIndexCopy {
  /** i32 or f32, contiguous, lying inside the copy's `dst` (the words it overrides). */
  dst: Tensor;
  dstIndex: ArrayLike<number>;
  /** i32 or f32, contiguous, apart from the copy's `dst` (device or pinned host memory). */
  src: Tensor;
  srcIndex: ArrayLike<number>;
}

/**
 * Copies `src` to `dst` (same byte size, a multiple of 4; 4-byte aligned; apart), then applies
 * `index` as {@link indexCopy} would: index.dst[dstIndex[k]] = index.src[srcIndex[k]], where
 * index.dst lies inside `dst`, so those words end with the indexed values. Either side may be
 * pinned host memory (HostBuffer.tensor): what it is for is a step's staged inputs going up with
 * the ids the previous step sampled written into them, in one kernel and without the copy engine.
 * CUDA: one kernel, whose threads copy one word each (up to 256 pairs inside it; more follow as
 * index copies); CPU: a stream copy, then indexCopy.
 */
export function copyWithIndexCopy(
  stream: Stream,
  dst: Tensor,
  src: Tensor,
  index?: CopyIndexCopy,
): void {
  const dev = stream.device.name;
  contiguous('dst', assertTensor('dst', dst, DTYPE_NAMES, dev));
  contiguous('src', assertTensor('src', src, DTYPE_NAMES, dev));
  const bytes = dst.numel * dst.itemSize;
  if (src.numel * src.itemSize !== bytes) {
    throw new InvalidArgumentError(
      'src',
      `${bytes} bytes (as dst)`,
      `${src.numel * src.itemSize} bytes`,
    );
  }
  if (bytes % 4 !== 0) throw new InvalidArgumentError('dst', 'a multiple of 4 bytes', bytes);
  for (const [name, t] of [
    ['dst', dst],
    ['src', src],
    ...(index?.dst?.ptr !== undefined ? ([['index.dst', index.dst]] as const) : []),
  ] as const) {
    if (t.ptr % 4n !== 0n) {
      throw new InvalidArgumentError(
        `${name}.ptr`,
        'a 4-byte aligned address',
        `0x${t.ptr.toString(16)}`,
      );
    }
  }
  if (tensorsOverlap(dst, src)) {
    throw new InvalidArgumentError(
      'dst',
      'memory that does not overlap src',
      'overlapping tensors',
    );
  }
  let di: Int32Array = new Int32Array(0);
  let si: Int32Array = new Int32Array(0);
  if (index !== undefined) {
    if (typeof index !== 'object' || index === null) {
      throw new InvalidArgumentError('index', 'an object {dst, dstIndex, src, srcIndex}', index);
    }
    contiguous('index.dst', assertTensor('index.dst', index.dst, ['i32', 'f32'], dev));
    contiguous('index.src', assertTensor('index.src', index.src, ['i32', 'f32'], dev));
    const at = index.dst.ptr - dst.ptr;
    if (at < 0n || at + BigInt(index.dst.numel * 4) > BigInt(bytes)) {
      throw new InvalidArgumentError(
        'index.dst',
        'memory inside dst (the words it overrides)',
        `0x${index.dst.ptr.toString(16)}+${index.dst.numel * 4}`,
      );
    }
    if (tensorsOverlap(dst, index.src)) {
      throw new InvalidArgumentError(
        'index.src',
        'memory that does not overlap dst',
        'overlapping tensors',
      );
    }
    ({ di, si } = checkPairs(index.dst, index.dstIndex, index.src, index.srcIndex, 'index.'));
    if (bytes / 4 > 2 ** 31 - 1) {
      throw new InvalidArgumentError(
        'dst',
        `at most ${(2 ** 31 - 1) * 4} bytes with an index copy`,
        bytes,
      );
    }
    if (isCudaStream(stream)) {
      // Word offsets from dst's start, sorted (the kernel binary-searches them).
      const base = Number(at / 4n);
      const order = Array.from(di, (_, k) => k).sort((a, b) => di[a]! - di[b]!);
      const dw = Int32Array.from(order, (k) => base + di[k]!);
      si = Int32Array.from(order, (k) => si[k]!);
      di = dw;
    }
  }
  if (bytes === 0 && di.length === 0) return;
  if (isCudaStream(stream)) {
    const params = {
      dst: dst.ptr,
      src: src.ptr,
      bytes,
      ...(di.length > 0 ? { feed: index!.src.ptr, feedNumel: index!.src.numel } : {}),
      dstWord: di,
      srcIndex: si,
    };
    callNative(() => cudaNative().cudaCopyIndexed(stream.nativeHandle, params));
    return;
  }
  stream.copy(dst.ptr, src.ptr, bytes);
  if (index !== undefined) indexCopy(stream, index.dst, index.dstIndex, index.src, index.srcIndex);
}

/** The indices of an index copy, checked (in range, dstIndex without repeats, tensors apart). */
function checkPairs(
  dst: Tensor,
  dstIndex: ArrayLike<number>,
  src: Tensor,
  srcIndex: ArrayLike<number>,
  prefix = '',
): { di: Int32Array; si: Int32Array } {
  const n = dstIndex?.length;
  if (!Number.isInteger(n) || srcIndex?.length !== n) {
    throw new InvalidArgumentError(
      `${prefix}srcIndex`,
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
        `${prefix}dstIndex[${k}]`,
        `an index in [0, ${dst.numel})`,
        dstIndex[k],
      );
    }
    if (!Number.isInteger(srcIndex[k]) || si[k]! < 0 || si[k]! >= src.numel) {
      throw new InvalidArgumentError(
        `${prefix}srcIndex[${k}]`,
        `an index in [0, ${src.numel})`,
        srcIndex[k],
      );
    }
    if (seen.has(di[k]!)) {
      throw new InvalidArgumentError(`${prefix}dstIndex[${k}]`, 'an index not repeated', di[k]);
    }
    seen.add(di[k]!);
  }
  if (tensorsOverlap(dst, src)) {
    throw new InvalidArgumentError(
      `${prefix}dst`,
      `memory that does not overlap ${prefix}src`,
      'overlapping tensors',
    );
  }
  return { di, si };
}
