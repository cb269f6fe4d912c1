import { type BlockHash, hashBlock, ROOT_BLOCK_HASH } from './block-hash.js';
import type { BlockPool } from './block-pool.js';
import type { Request } from './request.js';

/**
 * Maps requests to KV blocks on top of a BlockPool: prefix-cache lookups at admission, slot
 * allocation as tokens are scheduled, hashing of blocks as they fill, forks for n > 1, frees.
 * Every method costs O(blocks the request touches), never O(pool size).
 */
export class KVCacheManager {
  readonly blockSize: number;
  private readonly toCache: Array<{ request: Request; numComputed: number }> = [];

  constructor(readonly pool: BlockPool) {
    this.blockSize = pool.blockSize;
  }

  /**
   * The verified cached blocks that hold a prefix of `request`'s tokens, not yet referenced.
   * Leaves at least one token uncached: the model must run on it to produce logits.
   */
  findCachedPrefix(request: Request): number[] {
    if (!this.pool.enablePrefixCaching) return [];
    const maxBlocks = Math.floor((request.numTokens - 1) / this.blockSize);
    this.hashUpTo(request, maxBlocks);
    const hits: number[] = [];
    let parent: BlockHash = ROOT_BLOCK_HASH;
    for (let i = 0; i < maxBlocks; i++) {
      const hash = request.blockHashes[i]!;
      const b = this.pool.getCachedBlock(
        hash,
        parent,
        request.tokenIds,
        i * this.blockSize,
        request.hashExtras,
      );
      if (b === undefined) break;
      hits.push(b);
      parent = hash;
    }
    return hits;
  }

  /** Blocks a request needs in total to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /**
   * Makes room for `numNewTokens` more computed tokens after taking `cached` prefix blocks (at
   * admission only). All or nothing: returns false and changes nothing if the pool is short.
   * On success the request's `numComputedTokens` is NOT advanced; the scheduler does that.
   */
  allocateSlots(request: Request, numNewTokens: number, cached: readonly number[] = []): boolean {
    const computedAfterCache = request.numComputedTokens + cached.length * this.blockSize;
    const total = computedAfterCache + numNewTokens;
    const needed = Math.max(0, this.blocksFor(total) - request.blockIds.length - cached.length);
    let revived = 0;
    for (const b of cached) if (this.pool.refCount(b) === 0) revived++;
    if (needed + revived > this.pool.numFreeBlocks) return false;
    if (cached.length > 0) {
      this.pool.touch(cached);
      for (const b of cached) request.blockIds.push(b);
      request.numBlocksRegistered = request.blockIds.length;
    }
    if (needed > 0) {
      const fresh = this.pool.allocate(needed)!;
      for (const b of fresh) request.blockIds.push(b);
    }
    if (this.pool.enablePrefixCaching) this.toCache.push({ request, numComputed: total });
    return true;
  }

  /**
   * Registers the blocks that steps handed out so far have filled. The scheduler calls this at
   * the start of each schedule(): a block becomes a prefix hit only in a step after the one that
   * computes it, so a model runner may process a batch's sequences in any order.
   */
  commitCachedBlocks(): void {
    for (const { request, numComputed } of this.toCache) {
      // A request freed meanwhile (finished, aborted, preempted) has no blocks to register.
      const upTo = Math.min(numComputed, request.blockIds.length * this.blockSize);
      if (upTo > 0) this.cacheFullBlocks(request, upTo);
    }
    this.toCache.length = 0;
  }

  /**
   * Gives `child` the first full blocks of `source` covering `numTokens` shared tokens (n > 1:
   * siblings share the prompt). Returns how many tokens the child got for free.
   */
  fork(child: Request, source: Request, numTokens: number): number {
    const shared = Math.min(
      Math.floor(numTokens / this.blockSize),
      Math.floor(source.numComputedTokens / this.blockSize),
      Math.floor((child.numTokens - 1) / this.blockSize),
      source.blockIds.length,
    );
    if (shared === 0) return 0;
    const blocks = source.blockIds.slice(0, shared);
    this.pool.touch(blocks);
    for (const b of blocks) child.blockIds.push(b);
    child.numBlocksRegistered = shared;
    return shared * this.blockSize;
  }

  /** Returns all of `request`'s blocks to the pool, tail first (see BlockPool.free). */
  free(request: Request): void {
    if (request.blockIds.length === 0) return;
    this.pool.free(request.blockIds.slice().reverse());
    request.blockIds.length = 0;
    request.numBlocksRegistered = 0;
  }

  /** Offers every block that is full of known tokens once `numComputed` are computed. */
  private cacheFullBlocks(request: Request, numComputed: number): void {
    if (!this.pool.enablePrefixCaching) return;
    const full = Math.floor(Math.min(numComputed, request.numTokens) / this.blockSize);
    if (full <= request.numBlocksRegistered) return;
    this.hashUpTo(request, full);
    for (let i = request.numBlocksRegistered; i < full; i++) {
      this.pool.cacheBlock(
        request.blockIds[i]!,
        request.blockHashes[i]!,
        i === 0 ? ROOT_BLOCK_HASH : request.blockHashes[i - 1]!,
        request.tokenIds,
        i * this.blockSize,
        request.hashExtras,
      );
    }
    request.numBlocksRegistered = full;
  }

  /** Extends `request.blockHashes` to cover its first `numBlocks` full blocks. */
  private hashUpTo(request: Request, numBlocks: number): void {
    const hashes = request.blockHashes;
    const bs = this.blockSize;
    for (let i = hashes.length; i < numBlocks && (i + 1) * bs <= request.numTokens; i++) {
      const parent = i === 0 ? ROOT_BLOCK_HASH : hashes[i - 1]!;
      hashes.push(hashBlock(parent, request.tokenIds, i * bs, (i + 1) * bs, request.hashExtras));
    }
  }
}
