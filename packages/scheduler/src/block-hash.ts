import { createHash } from 'node:crypto';

/** Hash of a full block: chains the parent block's hash, the block's token ids and its extras. */
export type BlockHash = string;

/** The hash every request's first block chains from. */
export const ROOT_BLOCK_HASH: BlockHash = '';

/**
 * Hashes one full block. `extras` is everything besides tokens that changes the block's KV
 * (cache_salt today; LoRA ids and multimodal placeholders later), so two tenants with different
 * salts never share KV. 128 bits of SHA-256: collisions are astronomically unlikely, and hits are
 * still verified against the stored token ids (see BlockPool.getCachedBlock).
 */
export function hashBlock(
  parent: BlockHash,
  tokenIds: ArrayLike<number>,
  start: number,
  end: number,
  extras: string,
): BlockHash {
  const tokens = new Int32Array(end - start);
  for (let i = start; i < end; i++) tokens[i - start] = tokenIds[i]!;
  return createHash('sha256')
    .update(parent)
    .update('\0')
    .update(extras)
    .update('\0')
    .update(new Uint8Array(tokens.buffer))
    .digest('base64url')
    .slice(0, 22);
}
