import { type DType, dtypeSize, type Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';

/** Options of {@link KvCache.create}. */
export interface KvCacheOptions {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** Blocks per layer (each holds blockSize tokens of every KV head). */
  numBlocks: number;
  /** Tokens per block; 16 by default. */
  blockSize?: number;
  /** Element type: the activations' (f32 on the CPU, bf16/f16 on CUDA). Default f32. */
  dtype?: DType;
}

/**
 * The paged KV cache: per layer a key and a value tensor [numBlocks, blockSize, numKvHeads,
 * headDim] (the activations' dtype) under the `kv_cache` tag (discarded by sleep; the scheduler must reset its prefix
 * cache then). Block b of every layer belongs to the same sequence positions.
 */
export class KvCache {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly dtype: DType;
  /** Device bytes of every layer's K and V. */
  readonly bytes: number;
  readonly keys: readonly Tensor[];
  readonly values: readonly Tensor[];
  readonly #allocations: Allocation[];
  readonly #allocator: Allocator;

  private constructor(
    allocator: Allocator,
    allocations: Allocation[],
    keys: Tensor[],
    values: Tensor[],
    o: Required<KvCacheOptions>,
    bytes: number,
  ) {
    this.#allocator = allocator;
    this.#allocations = allocations;
    this.keys = keys;
    this.values = values;
    this.numBlocks = o.numBlocks;
    this.blockSize = o.blockSize;
    this.dtype = o.dtype;
    this.bytes = bytes;
  }

  /** Allocates the cache of every layer. */
  static create(allocator: Allocator, options: KvCacheOptions): KvCache {
    const o = { blockSize: 16, dtype: 'f32' as DType, ...options };
    const shape = [o.numBlocks, o.blockSize, o.numKvHeads, o.headDim];
    const bytes = shape.reduce((a, b) => a * b, 1) * dtypeSize(o.dtype);
    const allocations: Allocation[] = [];
    const keys: Tensor[] = [];
    const values: Tensor[] = [];
    for (let l = 0; l < o.numLayers; l++) {
      const k = allocator.alloc(bytes, { tag: 'kv_cache', owner: `kv.k[${l}]` });
      const v = allocator.alloc(bytes, { tag: 'kv_cache', owner: `kv.v[${l}]` });
      allocations.push(k, v);
      keys.push(k.tensor(o.dtype, shape));
      values.push(v.tensor(o.dtype, shape));
    }
    return new KvCache(allocator, allocations, keys, values, o, 2 * o.numLayers * bytes);
  }

  /** Frees every layer's cache (the streams using it must be idle). */
  dispose(): void {
    for (const a of this.#allocations) this.#allocator.free(a);
    this.#allocations.length = 0;
  }
}
