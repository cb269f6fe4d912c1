import { InternalError, InvalidArgumentError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { hashBlock, ROOT_BLOCK_HASH } from './block-hash.js';
import { BlockPool } from './block-pool.js';

describe('BlockPool', () => {
  it('hands out the least recently freed block first', () => {
    const p = new BlockPool({ numBlocks: 4, blockSize: 2 });
    const [a, b, c, d] = p.allocate(4)!;
    expect(p.allocate(1)).toBeNull();
    p.free([c!, a!]);
    p.free([d!]);
    expect(p.allocate(3)).toEqual([c, a, d]);
    expect(p.numFreeBlocks).toBe(0);
    p.free([b!]);
    p.checkInvariants();
  });

  it('revives a cached free block with touch, and evicts its hash when reallocated', () => {
    const p = new BlockPool({ numBlocks: 2, blockSize: 2 });
    const tokens = [5, 6];
    const h = hashBlock(ROOT_BLOCK_HASH, tokens, 0, 2, '');
    const [b] = p.allocate(1)!;
    p.cacheBlock(b!, h, ROOT_BLOCK_HASH, tokens, 0, '');
    p.free([b!]);
    expect(p.stats().numCachedFreeBlocks).toBe(1);
    expect(p.getCachedBlock(h, ROOT_BLOCK_HASH, tokens, 0, '')).toBe(b);
    p.touch([b!]);
    expect(p.refCount(b!)).toBe(1);
    p.free([b!]);
    p.allocate(2); // the cached block is reused for something else: its hash must go
    expect(p.getCachedBlock(h, ROOT_BLOCK_HASH, tokens, 0, '')).toBeUndefined();
    p.checkInvariants();
  });

  it('verifies hits: a hash whose stored tokens, parent or extras differ is rejected', () => {
    const p = new BlockPool({ numBlocks: 2, blockSize: 2 });
    const [b] = p.allocate(1)!;
    p.cacheBlock(b!, 'forged', ROOT_BLOCK_HASH, [1, 2], 0, '');
    expect(p.getCachedBlock('forged', ROOT_BLOCK_HASH, [1, 3], 0, '')).toBeUndefined();
    expect(p.getCachedBlock('forged', 'other-parent', [1, 2], 0, '')).toBeUndefined();
    expect(p.getCachedBlock('forged', ROOT_BLOCK_HASH, [1, 2], 0, 'salt')).toBeUndefined();
    expect(p.stats().prefixCacheRejectedHits).toBe(3);
    expect(p.getCachedBlock('forged', ROOT_BLOCK_HASH, [1, 2], 0, '')).toBe(b);
  });

  it('chains hashes: same tokens under a different parent or salt hash differently', () => {
    const t = [1, 2, 3, 4];
    const h1 = hashBlock(ROOT_BLOCK_HASH, t, 0, 2, '');
    expect(hashBlock(h1, t, 2, 4, '')).not.toBe(hashBlock(ROOT_BLOCK_HASH, t, 2, 4, ''));
    expect(hashBlock(ROOT_BLOCK_HASH, t, 0, 2, 'a')).not.toBe(h1);
    expect(hashBlock(ROOT_BLOCK_HASH, [9, 1, 2], 1, 3, '')).toBe(h1);
  });

  it('resetPrefixCache forgets free and in-use cached blocks', () => {
    const p = new BlockPool({ numBlocks: 2, blockSize: 1 });
    const [a, b] = p.allocate(2)!;
    p.cacheBlock(a!, 'ha', ROOT_BLOCK_HASH, [1], 0, '');
    p.cacheBlock(b!, 'hb', ROOT_BLOCK_HASH, [2], 0, '');
    p.free([a!]);
    expect(p.resetPrefixCache()).toBe(2);
    expect(p.getCachedBlock('ha', ROOT_BLOCK_HASH, [1], 0, '')).toBeUndefined();
    expect(p.getCachedBlock('hb', ROOT_BLOCK_HASH, [2], 0, '')).toBeUndefined();
    p.checkInvariants();
  });

  it('rejects double frees and bad options with typed errors', () => {
    const p = new BlockPool({ numBlocks: 1 });
    const [b] = p.allocate(1)!;
    p.free([b!]);
    expect(() => p.free([b!])).toThrow(InternalError);
    expect(() => new BlockPool({ numBlocks: 0 })).toThrow(InvalidArgumentError);
    expect(() => new BlockPool({ numBlocks: 1, blockSize: 0 })).toThrow(/blockSize/);
  });
});
