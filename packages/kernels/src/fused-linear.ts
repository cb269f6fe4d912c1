import { callNative, InvalidArgumentError, Stream, type Tensor } from '@x/core';
import {
  assertFinite,
  assertPositiveInt,
  assertShape,
  assertTensor,
  contiguous,
  tensorsOverlap,
} from './check.js';
import { GPU_DTYPES, gmat, sameDtype } from './cuda-check.js';
import { gpuCacheLayout } from './cuda-elementwise.js';
import { cudaNative, DTYPE_CODE } from './cuda-native.js';

/** Most rows of x {@link fusedLinear} takes (a decode step of up to this many sequences). */
export const FUSED_LINEAR_MAX_ROWS = 4;

/** What {@link fusedLinear} does with y = prologue(x) · wᵀ (+ bias), per row of x. */
export type FusedLinearEpilogue =
  /** out = y (out in w's dtype, or f32: logits). The default. */
  | { kind: 'store' }
  /** out = out + y: out is the residual stream, y rounded to its dtype first (as matmul stores it). */
  | { kind: 'addToResidual' }
  /** w is gate and up back to back ([2I, K]): out [M, I] = silu(gate) · up, as siluAndMul. */
  | { kind: 'siluAndMul' }
  /**
   * w is q, k and v back to back ([(numHeads + 2·numKvHeads)·headDim, K]): rotary embedding on the
   * q and k heads (as rotaryEmbedding with rotaryDim = headDim), every head into out, and k and v
   * into slot slotMapping[m] of the paged caches (−1 skipped), as rotaryEmbedding's cache option.
   */
  | {
      kind: 'rotaryKvCache';
      positions: Tensor;
      cosSinCache: Tensor;
      headDim: number;
      numHeads: number;
      numKvHeads: number;
      neox: boolean;
      kCache: Tensor;
      vCache: Tensor;
      slotMapping: Tensor;
    };

/** Options of {@link fusedLinear}. */
export interface FusedLinearOptions {
  /** Added to y: [rows of w], w's dtype. */
  bias?: Tensor;
  /**
   * RMS-normalize each row of x with this weight first ([K], as rmsNorm; x is left unchanged). The
   * kernel multiplies x by the weight before the product and by 1 / rms after it, so the
   * normalized row is not rounded to x's dtype in between as rmsNorm would store it: the result
   * equals rmsNorm then matmul up to that rounding (within the dtype's tolerance).
   */
  norm?: { weight: Tensor; eps: number };
  epilogue?: FusedLinearEpilogue;
}

const MODE = { store: 0, addToResidual: 1, siluAndMul: 2, rotaryKvCache: 3 } as const;

/**
 * The linear layer of a decode step of 1..{@link FUSED_LINEAR_MAX_ROWS} tokens on CUDA, with its
 * row-wise neighbours fused in: out = epilogue(norm(x) · wᵀ + bias). x [M, K] and w [R, K] (w
 * contiguous, Hugging Face Linear layout) are bf16 or f16, the same; K a multiple of 8 and x's rows
 * 16-byte aligned. At this size a linear layer is a stream over its weights: the kernel reads each
 * weight once at close to HBM bandwidth (cuBLASLt's tiles are built for larger M), and each fused
 * neighbour saves a kernel launch and a round trip of the activations. Each output is rounded
 * where the separate ops (rmsNorm, matmul, rotaryEmbedding, siluAndMul) would store it, so the
 * result matches them up to summation order and, with `norm`, the normalized row's rounding. On
 * sm_90 it starts while the previous kernel of the stream drains (programmatic dependent launch),
 * loading its first weights (and the norm weight) meanwhile. CUDA only: on a CPU stream compose
 * rmsNorm, matmul and the row ops.
 */
export function fusedLinear(
  stream: Stream,
  out: Tensor,
  x: Tensor,
  w: Tensor,
  options: FusedLinearOptions = {},
): void {
  if (!(stream instanceof Stream)) throw new InvalidArgumentError('stream', 'a Stream', stream);
  if (stream.device.kind !== 'cuda') {
    throw new InvalidArgumentError(
      'stream',
      'a CUDA stream (fusedLinear is the CUDA decode path; on the CPU use rmsNorm, matmul and the row ops)',
      stream.device.name,
    );
  }
  const dev = stream.device.name;
  const dtype = assertTensor('x', x, GPU_DTYPES, dev).dtype as 'bf16' | 'f16';
  sameDtype('w', w, dtype, dev);
  assertShape('x', x, [null, null]);
  const [m, k] = x.shape as [number, number];
  if (m < 1 || m > FUSED_LINEAR_MAX_ROWS) {
    throw new InvalidArgumentError(
      'x.shape',
      `[1..${FUSED_LINEAR_MAX_ROWS}, K] (at most ${FUSED_LINEAR_MAX_ROWS} rows: use matmul beyond)`,
      `[${x.shape.join(', ')}]`,
    );
  }
  if (k % 8 !== 0) {
    throw new InvalidArgumentError('x.shape', '[M, a multiple of 8]', `[${x.shape.join(', ')}]`);
  }
  assertShape('w', contiguous('w', w), [null, k]);
  const rows = w.shape[0]!;
  const epilogue = options.epilogue ?? { kind: 'store' };
  const mode = MODE[epilogue.kind as keyof typeof MODE];
  if (mode === undefined) {
    throw new InvalidArgumentError(
      'options.epilogue.kind',
      "'store', 'addToResidual', 'siluAndMul' or 'rotaryKvCache'",
      epilogue.kind,
    );
  }
  const outDtypes = epilogue.kind === 'store' ? [dtype, 'f32' as const] : [dtype];
  assertTensor('out', out, outDtypes, dev);
  if (epilogue.kind === 'siluAndMul') {
    if (rows % 2 !== 0) {
      throw new InvalidArgumentError(
        'w.shape',
        '[2·I, K] (gate and up)',
        `[${w.shape.join(', ')}]`,
      );
    }
    assertShape('out', out, [m, rows / 2]);
  } else {
    assertShape('out', out, [m, rows]);
  }
  if (tensorsOverlap(out, x) || tensorsOverlap(out, w)) {
    throw new InvalidArgumentError('out', 'a tensor that does not overlap x or w', out.toString());
  }
  const params: Record<string, unknown> = {
    out: gmat('out', out),
    outF32: out.dtype === 'f32',
    x: gmat('x', x),
    w: gmat('w', w),
    mode,
    dtype: DTYPE_CODE[dtype],
  };
  if (options.bias !== undefined) {
    sameDtype('options.bias', options.bias, dtype, dev);
    assertShape('options.bias', contiguous('options.bias', options.bias), [rows]);
    params.bias = options.bias.ptr;
  }
  if (options.norm !== undefined) {
    sameDtype('options.norm.weight', options.norm.weight, dtype, dev);
    assertShape('options.norm.weight', contiguous('options.norm.weight', options.norm.weight), [k]);
    params.normWeight = options.norm.weight.ptr;
    params.eps = assertFinite('options.norm.eps', options.norm.eps);
  }
  if (epilogue.kind === 'rotaryKvCache') {
    const e = epilogue;
    const headDim = assertPositiveInt('options.epilogue.headDim', e.headDim);
    const numHeads = assertPositiveInt('options.epilogue.numHeads', e.numHeads);
    const numKvHeads = assertPositiveInt('options.epilogue.numKvHeads', e.numKvHeads);
    if (headDim % 2 !== 0) {
      throw new InvalidArgumentError('options.epilogue.headDim', 'an even integer', headDim);
    }
    if (rows !== (numHeads + 2 * numKvHeads) * headDim) {
      throw new InvalidArgumentError(
        'w.shape',
        `[(numHeads + 2·numKvHeads)·headDim = ${(numHeads + 2 * numKvHeads) * headDim}, ${k}]`,
        `[${w.shape.join(', ')}]`,
      );
    }
    assertTensor('options.epilogue.positions', e.positions, ['i32', 'i64'], dev);
    assertShape(
      'options.epilogue.positions',
      contiguous('options.epilogue.positions', e.positions),
      [m],
    );
    assertTensor('options.epilogue.cosSinCache', e.cosSinCache, ['f32'], dev);
    assertShape(
      'options.epilogue.cosSinCache',
      contiguous('options.epilogue.cosSinCache', e.cosSinCache),
      [null, headDim],
    );
    const layout = gpuCacheLayout(e.kCache, e.vCache, dtype, dev);
    if (layout.numKvHeads !== numKvHeads || layout.headDim !== headDim) {
      throw new InvalidArgumentError(
        'options.epilogue.kCache.shape',
        `[*, *, ${numKvHeads}, ${headDim}]`,
        `[${e.kCache.shape.join(', ')}]`,
      );
    }
    assertTensor('options.epilogue.slotMapping', e.slotMapping, ['i64'], dev);
    assertShape(
      'options.epilogue.slotMapping',
      contiguous('options.epilogue.slotMapping', e.slotMapping),
      [m],
    );
    Object.assign(params, {
      headDim,
      numHeads,
      numKvHeads,
      neox: e.neox !== false,
      positions: e.positions.ptr,
      positionsI64: e.positions.dtype === 'i64',
      cosSin: e.cosSinCache.ptr,
      maxPos: e.cosSinCache.shape[0]!,
      kCache: e.kCache.ptr,
      vCache: e.vCache.ptr,
      numSlots: layout.numBlocks * layout.blockSize,
      slotMapping: e.slotMapping.ptr,
    });
  }
  callNative(() => cudaNative().cudaFusedLinear(stream.nativeHandle, params));
}
