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
 * Allocates a runner's CUDA scratch: cuBLASLt's workspace and the split-KV attention partials
 * (nothing on the CPU, whose kernels need none). Frees what it made if it
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
      // No arrival counters: on the H200 (docs/benchmarks/gpu-engine.md, 2026-12-01) the decode
      // graph replayed faster with the combine kernel (batch 1: 4.92 vs 5.04 ms; batch 64: 6.33 vs
      // 6.63 ms; batch 128 equal), so the split-KV partials are merged in a second kernel.
    }
    return scratch;
  } catch (err) {
    for (const m of scratch.allocations) a.free(m);
    throw err;
  }
}
