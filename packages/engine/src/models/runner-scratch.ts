import type { Allocation, Allocator } from '@x/cumem';
import { MATMUL_WORKSPACE_BYTES, pagedAttentionWorkspaceBytes } from '@x/kernels';
import type { ModelConfig } from '../config.js';
import type { ForwardOptions } from './decoder.js';

/** Scratch one runner's steps share on CUDA (persistent: graphs capture its addresses). */
export interface Scratch {
  allocations: Allocation[];
  options: ForwardOptions;
}

/** What the scratch is sized for. */
export interface ScratchLimits {
  blockSize: number;
  maxModelLen: number;
  /** The most tokens of a decode step (the largest graph bucket). */
  maxDecodeTokens: number;
}

/**
 * Allocates a runner's CUDA scratch: cuBLASLt's workspace, the split-KV attention partials and
 * their arrival counters (nothing on the CPU, whose kernels need none). Frees what it made if it
 * fails.
 */
export async function allocateScratch(
  a: Allocator,
  c: ModelConfig,
  lim: ScratchLimits,
): Promise<Scratch> {
  const scratch: Scratch = { allocations: [], options: {} };
  if (a.device.kind !== 'cuda') return scratch;
  const alloc = (bytes: number, tag: string, owner: string) => {
    const m = a.alloc(bytes, { tag, owner });
    scratch.allocations.push(m);
    return m;
  };
  try {
    // Scratch holds nothing between kernels, so `activations` (discarded by sleep) is right.
    const gemm = alloc(MATMUL_WORKSPACE_BYTES, 'activations', 'matmul.ws');
    scratch.options.matmulWorkspace = gemm.tensor('u8', [MATMUL_WORKSPACE_BYTES]);
    const attnBytes = pagedAttentionWorkspaceBytes(a.device.name, {
      numHeads: c.numHeads,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      blockSize: lim.blockSize,
      maxBlocks: Math.ceil(lim.maxModelLen / lim.blockSize),
      maxTokens: lim.maxDecodeTokens,
    });
    if (attnBytes > 0) {
      const attn = alloc(attnBytes, 'activations', 'attention.ws');
      scratch.options.attentionWorkspace = attn.tensor('u8', [attnBytes]);
      // The counters are zero between kernels, which is state: under `meta` (a sleep never
      // discards it; discarded pages would come back as garbage no kernel resets), zeroed once.
      const count = lim.maxDecodeTokens * c.numHeads;
      const counters = alloc(count * 4, 'meta', 'attention.counters');
      await counters.write(0, new Int32Array(count));
      scratch.options.attentionCounters = counters.tensor('i32', [count]);
    }
    return scratch;
  } catch (err) {
    for (const m of scratch.allocations) a.free(m);
    throw err;
  }
}
