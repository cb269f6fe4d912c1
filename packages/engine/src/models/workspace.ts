import { HostBuffer, type Stream, Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import { CpuGraph } from '@x/kernels';

/** Sizes a workspace is planned for (the bucket: it serves every batch up to these). */
export interface WorkspaceShape {
  tokens: number;
  seqs: number;
  maxBlocksPerSeq: number;
  hidden: number;
  qWidth: number;
  kvWidth: number;
  intermediate: number;
  vocab: number;
}

const ALIGN = 64; // bytes: every buffer starts on a cache line

/** Captured forwards kept per workspace (one per exact batch shape; the oldest is dropped). */
const MAX_GRAPHS = 32;

/** Next bucket size: powers of two from `min` (nano-vllm's recipe; bounds the number of plans). */
export function bucket(n: number, min: number): number {
  let b = min;
  while (b < n) b *= 2;
  return b;
}

/**
 * The activations of one forward pass, planned once per shape bucket: one allocation under the
 * `activations` tag, carved into fixed tensors (addresses stay put, as CUDA graphs will need), plus
 * host staging for the step's inputs (ids, positions, slots, block tables) and the logits read
 * back. Tensors cover the bucket; the forward slices the rows a batch uses.
 */
export class Workspace {
  readonly shape: WorkspaceShape;
  readonly hidden: Tensor;
  readonly residual: Tensor;
  readonly normed: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  /** q|k|v side by side, [T, q + 2·kv]: the output of a fused q/k/v projection. */
  readonly qkv: Tensor;
  readonly attn: Tensor;
  readonly gateUp: Tensor;
  readonly act: Tensor;
  readonly lastHidden: Tensor;
  readonly logits: Tensor;
  /** Host staging: inputs written by JS before the step, logits read after it. */
  readonly ids: Tensor;
  readonly positions: Tensor;
  readonly slots: Tensor;
  readonly blockTables: Tensor;
  readonly seqLens: Tensor;
  readonly queryStartLoc: Tensor;
  readonly lastIndex: Tensor;
  readonly hostLogits: Tensor;
  readonly #allocation: Allocation;
  readonly #allocator: Allocator;
  readonly #staging: HostBuffer;
  readonly #graphs = new Map<string, CpuGraph>();

  constructor(allocator: Allocator, shape: WorkspaceShape) {
    this.shape = shape;
    this.#allocator = allocator;
    const { tokens: t, seqs: b, hidden: h } = shape;
    const plan: Array<[string, 'f32', number[]]> = [
      ['hidden', 'f32', [t, h]],
      ['residual', 'f32', [t, h]],
      ['normed', 'f32', [t, h]],
      ['q', 'f32', [t, shape.qWidth]],
      ['k', 'f32', [t, shape.kvWidth]],
      ['v', 'f32', [t, shape.kvWidth]],
      ['attn', 'f32', [t, shape.qWidth]],
      ['gateUp', 'f32', [t, 2 * shape.intermediate]],
      ['act', 'f32', [t, shape.intermediate]],
      ['lastHidden', 'f32', [b, h]],
      ['logits', 'f32', [b, shape.vocab]],
      ['qkv', 'f32', [t, shape.qWidth + 2 * shape.kvWidth]],
    ];
    const { offsets, total } = layout(plan.map(([, , s]) => s.reduce((x, y) => x * y, 1) * 4));
    this.#allocation = allocator.alloc(total, {
      tag: 'activations',
      owner: `workspace[${t}x${b}]`,
    });
    const dev = plan.map(([, dtype, s], i) => this.#allocation.tensor(dtype, s, offsets[i]));
    [this.hidden, this.residual, this.normed, this.q, this.k, this.v, this.attn] = dev as [
      Tensor,
      Tensor,
      Tensor,
      Tensor,
      Tensor,
      Tensor,
      Tensor,
    ];
    this.gateUp = dev[7]!;
    this.act = dev[8]!;
    this.lastHidden = dev[9]!;
    this.logits = dev[10]!;
    this.qkv = dev[11]!;

    const mb = shape.maxBlocksPerSeq;
    const host: Array<[string, 'i32' | 'i64' | 'f32', number[], number]> = [
      ['ids', 'i32', [t], 4],
      ['positions', 'i32', [t], 4],
      ['slots', 'i64', [t], 8],
      ['blockTables', 'i32', [b, mb], 4],
      ['seqLens', 'i32', [b], 4],
      ['queryStartLoc', 'i32', [b + 1], 4],
      ['lastIndex', 'i32', [b], 4],
      ['hostLogits', 'f32', [b, shape.vocab], 4],
    ];
    const hl = layout(host.map(([, , s, size]) => s.reduce((x, y) => x * y, 1) * size));
    this.#staging = HostBuffer.alloc(hl.total);
    const st = host.map(
      ([, dtype, s], i) =>
        new Tensor({
          ptr: this.#staging.ptr + BigInt(hl.offsets[i]!),
          dtype,
          shape: s,
          device: 'cpu',
        }),
    );
    [
      this.ids,
      this.positions,
      this.slots,
      this.blockTables,
      this.seqLens,
      this.queryStartLoc,
      this.lastIndex,
    ] = st as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    this.hostLogits = st[7]!;
  }

  /** A typed-array view of a host staging tensor (JS writes inputs here before the step). */
  hostView<T extends Int32Array | BigInt64Array | Float32Array>(
    t: Tensor,
    ctor: { new (b: ArrayBuffer, off: number, len: number): T },
  ): T {
    return new ctor(this.#staging.buffer, Number(t.ptr - this.#staging.ptr), t.numel);
  }

  /** True when a batch of `tokens` tokens and `seqs` sequences fits this plan. */
  fits(tokens: number, seqs: number): boolean {
    return tokens <= this.shape.tokens && seqs <= this.shape.seqs;
  }

  /**
   * The forward of one exact batch shape (`key`) captured as a CpuGraph on `stream`: captured by
   * `record` the first time, replayed after. Valid because every tensor a forward touches has a
   * fixed address: this workspace, the KV cache, the weights and the rotary table.
   */
  graph(stream: Stream, key: string, record: () => void): CpuGraph {
    let g = this.#graphs.get(key);
    if (g === undefined) {
      g = CpuGraph.capture(stream, record);
      if (this.#graphs.size >= MAX_GRAPHS) {
        const [oldest, old] = this.#graphs.entries().next().value as [string, CpuGraph];
        old.dispose(); // launches already enqueued keep their reference
        this.#graphs.delete(oldest);
      }
      this.#graphs.set(key, g);
    }
    return g;
  }

  /** Frees the activations and the staging (the stream must be idle). */
  dispose(): void {
    for (const g of this.#graphs.values()) g.dispose();
    this.#graphs.clear();
    this.#allocator.free(this.#allocation);
    this.#staging.dispose();
  }
}

function layout(sizes: number[]): { offsets: number[]; total: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const s of sizes) {
    offsets.push(at);
    at += Math.ceil(Math.max(s, 1) / ALIGN) * ALIGN;
  }
  return { offsets, total: at };
}
