import { callNative, InvalidArgumentError, type Stream, type Tensor } from '@x/core';
import { assertFinite, assertPositiveInt, assertShape, assertTensor, contiguous } from './check.js';
import { GPU_DTYPES, gmat, sameDtype } from './cuda-check.js';
import { cudaNative, DTYPE_CODE } from './cuda-native.js';
import type { RmsNormOptions } from './rms-norm.js';
import type { RotaryEmbeddingOptions } from './rotary-embedding.js';

/** The CUDA paths of the row-wise ops (dispatched from embedding.ts, rms-norm.ts, ...). Internal. */

/** The paged KV cache of one layer on a GPU: [numBlocks, blockSize, numKvHeads, headDim], contiguous. */
export function gpuCacheLayout(
  kCache: Tensor,
  vCache: Tensor,
  dtype: 'bf16' | 'f16',
  device: string,
): { numBlocks: number; blockSize: number; numKvHeads: number; headDim: number } {
  sameDtype('kCache', kCache, dtype, device);
  sameDtype('vCache', vCache, dtype, device);
  assertShape('kCache', contiguous('kCache', kCache), [null, null, null, null]);
  assertShape('vCache', contiguous('vCache', vCache), kCache.shape);
  const [numBlocks, blockSize, numKvHeads, headDim] = kCache.shape as [
    number,
    number,
    number,
    number,
  ];
  return { numBlocks, blockSize, numKvHeads, headDim };
}

function activation(name: string, t: unknown, device: string): 'bf16' | 'f16' {
  return assertTensor(name, t, GPU_DTYPES, device).dtype as 'bf16' | 'f16';
}

export function embeddingCuda(stream: Stream, out: Tensor, table: Tensor, ids: Tensor): void {
  const dev = stream.device.name;
  const dtype = activation('out', out, dev);
  sameDtype('table', table, dtype, dev);
  assertTensor('ids', ids, ['i32'], dev);
  assertShape('table', table, [null, out.shape[1] ?? null]);
  assertShape('ids', contiguous('ids', ids), [out.shape[0] ?? null]);
  const params = {
    out: gmat('out', out),
    table: gmat('table', table),
    ids: ids.ptr,
    dtype: DTYPE_CODE[dtype],
  };
  callNative(() => cudaNative().cudaEmbedding(stream.nativeHandle, params));
}

export function rmsNormCuda(
  stream: Stream,
  out: Tensor,
  x: Tensor,
  weight: Tensor,
  options: RmsNormOptions,
): void {
  const dev = stream.device.name;
  const dtype = activation('x', x, dev);
  sameDtype('out', out, dtype, dev);
  sameDtype('weight', weight, dtype, dev);
  assertShape('x', x, [null, null]);
  const [rows, cols] = x.shape as [number, number];
  assertShape('out', out, [rows, cols]);
  assertShape('weight', contiguous('weight', weight), [cols]);
  const eps = assertFinite('options.eps', options?.eps);
  let residual: ReturnType<typeof gmat> | undefined;
  if (options.residual !== undefined) {
    sameDtype('options.residual', options.residual, dtype, dev);
    assertShape('options.residual', options.residual, [rows, cols]);
    residual = gmat('options.residual', options.residual);
  }
  const params = {
    out: gmat('out', out),
    x: gmat('x', x),
    residual,
    weight: weight.ptr,
    eps,
    dtype: DTYPE_CODE[dtype],
  };
  callNative(() => cudaNative().cudaRmsNorm(stream.nativeHandle, params));
}

export function rotaryEmbeddingCuda(
  stream: Stream,
  positions: Tensor,
  q: Tensor,
  k: Tensor | null,
  cosSinCache: Tensor,
  options: RotaryEmbeddingOptions,
): void {
  const dev = stream.device.name;
  const headDim = assertPositiveInt('options.headDim', options?.headDim);
  const rotaryDim = assertPositiveInt('options.rotaryDim', options.rotaryDim);
  if (rotaryDim > headDim || rotaryDim % 2 !== 0) {
    throw new InvalidArgumentError(
      'options.rotaryDim',
      `an even integer <= headDim (${headDim})`,
      rotaryDim,
    );
  }
  const dtype = activation('q', q, dev);
  assertTensor('positions', positions, ['i32', 'i64'], dev);
  assertTensor('cosSinCache', cosSinCache, ['f32'], dev);
  const tokens = q.shape[0] ?? null;
  assertShape('positions', contiguous('positions', positions), [tokens]);
  const heads = (name: string, t: Tensor) => {
    assertShape(name, t, [tokens, null]);
    if (t.shape[1]! % headDim !== 0) {
      throw new InvalidArgumentError(
        `${name}.shape`,
        `[${tokens}, a multiple of headDim ${headDim}]`,
        `[${t.shape.join(', ')}]`,
      );
    }
  };
  heads('q', q);
  if (k !== null) {
    sameDtype('k', k, dtype, dev);
    heads('k', k);
  }
  assertShape('cosSinCache', contiguous('cosSinCache', cosSinCache), [null, rotaryDim]);
  const params: Record<string, unknown> = {
    positions: positions.ptr,
    positionsI64: positions.dtype === 'i64',
    q: gmat('q', q),
    k: k === null ? undefined : gmat('k', k),
    cosSin: cosSinCache.ptr,
    maxPos: cosSinCache.shape[0]!,
    headDim,
    rotaryDim,
    neox: options.neox !== false,
    dtype: DTYPE_CODE[dtype],
  };
  const cache = options.cache;
  if (cache !== undefined) {
    if (k === null) throw new InvalidArgumentError('k', 'a Tensor when options.cache is given', k);
    const layout = gpuCacheLayout(cache.kCache, cache.vCache, dtype, dev);
    if (layout.numKvHeads * layout.headDim !== k.shape[1] || layout.headDim !== headDim) {
      throw new InvalidArgumentError(
        'options.cache.kCache.shape',
        `[*, *, ${k.shape[1]! / headDim}, ${headDim}] (k's heads)`,
        `[${cache.kCache.shape.join(', ')}]`,
      );
    }
    sameDtype('options.cache.v', cache.v, dtype, dev);
    assertShape('options.cache.v', cache.v, [k.shape[0]!, k.shape[1]!]);
    assertTensor('options.cache.slotMapping', cache.slotMapping, ['i64'], dev);
    assertShape(
      'options.cache.slotMapping',
      contiguous('options.cache.slotMapping', cache.slotMapping),
      [k.shape[0]!],
    );
    Object.assign(params, {
      v: gmat('options.cache.v', cache.v),
      kCache: cache.kCache.ptr,
      vCache: cache.vCache.ptr,
      numSlots: layout.numBlocks * layout.blockSize,
      slotMapping: cache.slotMapping.ptr,
    });
  }
  callNative(() => cudaNative().cudaRotaryEmbedding(stream.nativeHandle, params));
}

export function siluAndMulCuda(stream: Stream, out: Tensor, x: Tensor): void {
  const dev = stream.device.name;
  const dtype = activation('out', out, dev);
  sameDtype('x', x, dtype, dev);
  assertShape('out', out, [null, null]);
  assertShape('x', x, [out.shape[0]!, 2 * out.shape[1]!]);
  const params = { out: gmat('out', out), x: gmat('x', x), dtype: DTYPE_CODE[dtype] };
  callNative(() => cudaNative().cudaSiluAndMul(stream.nativeHandle, params));
}

export function reshapeAndCacheCuda(
  stream: Stream,
  k: Tensor,
  v: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  slotMapping: Tensor,
): void {
  const dev = stream.device.name;
  const dtype = activation('k', k, dev);
  const layout = gpuCacheLayout(kCache, vCache, dtype, dev);
  sameDtype('v', v, dtype, dev);
  assertTensor('slotMapping', slotMapping, ['i64'], dev);
  const width = layout.numKvHeads * layout.headDim;
  assertShape('k', k, [null, width]);
  assertShape('v', v, [k.shape[0]!, width]);
  assertShape('slotMapping', contiguous('slotMapping', slotMapping), [k.shape[0]!]);
  const params = {
    k: gmat('k', k),
    v: gmat('v', v),
    kCache: kCache.ptr,
    vCache: vCache.ptr,
    numSlots: layout.numBlocks * layout.blockSize,
    slotMapping: slotMapping.ptr,
    dtype: DTYPE_CODE[dtype],
  };
  callNative(() => cudaNative().cudaReshapeAndCache(stream.nativeHandle, params));
}
