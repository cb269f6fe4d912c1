import { InternalError, InvalidArgumentError } from '@x/core';
import type { BlockHash } from './block-hash.js';

/** Options of a BlockPool. */
export interface BlockPoolOptions {
  /** KV blocks in the pool (block ids are 0 … numBlocks - 1). */
  numBlocks: number;
  /** Tokens per block. Default 16. */
  blockSize?: number;
  /** Keep full blocks hashed for reuse across requests. Default true. */
  enablePrefixCaching?: boolean;
}

/** What a cached block was computed from; compared on every hit so a hash collision never leaks. */
interface CachedBlockMeta {
  hash: BlockHash;
  parent: BlockHash;
  extras: string;
  tokens: Int32Array;
}

/** Counters and gauges of a BlockPool. Prefix counters are in tokens, like vLLM's. */
export interface BlockPoolStats {
  numBlocks: number;
  numFreeBlocks: number;
  /** Blocks that are free but still hold a reusable cached prefix. */
  numCachedFreeBlocks: number;
  /** Fraction of blocks in use by requests, 0…1. */
  usage: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** Hash matches rejected because the stored tokens differed (collisions; expected 0). */
  prefixCacheRejectedHits: number;
}

const NIL = -1;

/**
 * The paged KV block pool: ref counts, an LRU of free blocks and the prefix cache.
 *
 * Free blocks form a doubly linked list (typed arrays, O(1) per operation): `allocate` takes
 * from the head (the least recently freed), `free` appends to the tail. A free block keeps its
 * hash until it is handed out again, so a later request can revive it with `touch`.
 */
export class BlockPool {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  private readonly refCounts: Int32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NIL;
  private tail = NIL;
  private freeCount = 0;
  private readonly meta: (CachedBlockMeta | undefined)[];
  private readonly byHash = new Map<BlockHash, number>();
  private cachedFree = 0;
  private queries = 0;
  private hits = 0;
  private rejectedHits = 0;

  constructor(options: BlockPoolOptions) {
    const { numBlocks } = options;
    if (!Number.isInteger(numBlocks) || numBlocks < 1) {
      throw new InvalidArgumentError('numBlocks', 'an integer >= 1', numBlocks);
    }
    const blockSize = options.blockSize ?? 16;
    if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 4096) {
      throw new InvalidArgumentError('blockSize', 'an integer in [1, 4096]', blockSize);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.enablePrefixCaching = options.enablePrefixCaching ?? true;
    this.refCounts = new Int32Array(numBlocks);
    this.prev = new Int32Array(numBlocks).fill(NIL);
    this.next = new Int32Array(numBlocks).fill(NIL);
    this.meta = new Array(numBlocks).fill(undefined);
    for (let b = 0; b < numBlocks; b++) this.pushTail(b);
  }

  get numFreeBlocks(): number {
    return this.freeCount;
  }

  /** Reference count of `blockId` (0 = free). */
  refCount(blockId: number): number {
    return this.refCounts[blockId]!;
  }

  /** Hash of `blockId` if it is in the prefix cache. */
  hashOf(blockId: number): BlockHash | undefined {
    return this.meta[blockId]?.hash;
  }

  /** Takes `count` blocks from the LRU head (evicting their cached prefixes), or null if short. */
  allocate(count: number): number[] | null {
    if (count > this.freeCount) return null;
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      const b = this.head;
      this.unlink(b);
      this.evict(b);
      this.refCounts[b] = 1;
      out[i] = b;
    }
    return out;
  }

  /** Adds a reference to each block (prefix hits, forks), reviving free ones from the LRU. */
  touch(blockIds: readonly number[]): void {
    for (const b of blockIds) {
      if (this.refCounts[b] === 0) {
        this.unlink(b);
        if (this.meta[b]) this.cachedFree--;
      }
      this.refCounts[b]!++;
    }
  }

  /**
   * Drops one reference per block. Pass a request's blocks in reverse order: its tail blocks then
   * reach the LRU first and are evicted before the shared prefix that other requests may reuse.
   */
  free(blockIds: readonly number[]): void {
    for (const b of blockIds) {
      const rc = this.refCounts[b]!;
      if (rc <= 0) throw new InternalError(`BlockPool.free: block ${b} is already free`);
      this.refCounts[b] = rc - 1;
      if (rc === 1) {
        this.pushTail(b);
        if (this.meta[b]) this.cachedFree++;
      }
    }
  }

  /**
   * The cached block for `hash` whose stored parent, extras and tokens equal the given ones, or
   * undefined. A hash match with different contents counts as a rejected hit and is not used.
   */
  getCachedBlock(
    hash: BlockHash,
    parent: BlockHash,
    tokenIds: ArrayLike<number>,
    start: number,
    extras: string,
  ): number | undefined {
    if (!this.enablePrefixCaching) return undefined;
    const b = this.byHash.get(hash);
    if (b === undefined) return undefined;
    const m = this.meta[b]!;
    let same = m.parent === parent && m.extras === extras;
    for (let i = 0; same && i < this.blockSize; i++) same = m.tokens[i] === tokenIds[start + i];
    if (!same) {
      this.rejectedHits++;
      return undefined;
    }
    return b;
  }

  /** Registers an in-use full block under `hash` (no-op if that hash is already cached). */
  cacheBlock(
    blockId: number,
    hash: BlockHash,
    parent: BlockHash,
    tokenIds: ArrayLike<number>,
    start: number,
    extras: string,
  ): void {
    if (!this.enablePrefixCaching || this.meta[blockId] || this.byHash.has(hash)) return;
    const tokens = new Int32Array(this.blockSize);
    for (let i = 0; i < this.blockSize; i++) tokens[i] = tokenIds[start + i]!;
    this.meta[blockId] = { hash, parent, extras, tokens };
    this.byHash.set(hash, blockId);
  }

  /** Counts one prefix-cache lookup of `queriedTokens` that found `hitTokens`. */
  recordPrefixQuery(queriedTokens: number, hitTokens: number): void {
    this.queries += queriedTokens;
    this.hits += hitTokens;
  }

  /**
   * Forgets every cached prefix, free or in use. Blocks in use keep their contents for their
   * owners but are never handed to another request. Returns how many blocks were uncached.
   * After KV memory was discarded, preempt every request first (Scheduler.invalidateKv does).
   */
  resetPrefixCache(): number {
    const n = this.byHash.size;
    for (const b of this.byHash.values()) this.meta[b] = undefined;
    this.byHash.clear();
    this.cachedFree = 0;
    return n;
  }

  /** Current counters and gauges. */
  stats(): BlockPoolStats {
    return {
      numBlocks: this.numBlocks,
      numFreeBlocks: this.freeCount,
      numCachedFreeBlocks: this.cachedFree,
      usage: (this.numBlocks - this.freeCount) / this.numBlocks,
      prefixCacheQueries: this.queries,
      prefixCacheHits: this.hits,
      prefixCacheRejectedHits: this.rejectedHits,
    };
  }

  /** O(numBlocks) consistency check for tests: throws InternalError naming the first violation. */
  checkInvariants(): void {
    const fail = (m: string) => {
      throw new InternalError(`BlockPool invariant broken: ${m}`);
    };
    const inList = new Uint8Array(this.numBlocks);
    let count = 0;
    for (let b = this.head, p = NIL; b !== NIL; p = b, b = this.next[b]!) {
      if (inList[b]) fail(`block ${b} twice in the free list`);
      if (this.prev[b] !== p) fail(`block ${b} has a broken prev link`);
      inList[b] = 1;
      count++;
    }
    if (count !== this.freeCount)
      fail(`free list has ${count} blocks, counter says ${this.freeCount}`);
    let cachedFree = 0;
    for (let b = 0; b < this.numBlocks; b++) {
      const rc = this.refCounts[b]!;
      if (rc < 0) fail(`block ${b} has ref count ${rc}`);
      if ((rc === 0) !== (inList[b] === 1))
        fail(`block ${b} ref count ${rc} but free=${!!inList[b]}`);
      const m = this.meta[b];
      if (m && this.byHash.get(m.hash) !== b) fail(`block ${b} hash not in the map`);
      if (m && rc === 0) cachedFree++;
    }
    if (cachedFree !== this.cachedFree) fail(`cached-free ${cachedFree} != ${this.cachedFree}`);
    for (const [h, b] of this.byHash) if (this.meta[b]?.hash !== h) fail(`hash ${h} → ${b} stale`);
  }

  private evict(b: number): void {
    const m = this.meta[b];
    if (!m) return;
    this.byHash.delete(m.hash);
    this.meta[b] = undefined;
    this.cachedFree--;
  }

  private pushTail(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = NIL;
    if (this.tail === NIL) this.head = b;
    else this.next[this.tail] = b;
    this.tail = b;
    this.freeCount++;
  }

  private unlink(b: number): void {
    const p = this.prev[b]!;
    const n = this.next[b]!;
    if (p === NIL) this.head = n;
    else this.next[p] = n;
    if (n === NIL) this.tail = p;
    else this.prev[n] = p;
    this.prev[b] = NIL;
    this.next[b] = NIL;
    this.freeCount--;
  }
}
