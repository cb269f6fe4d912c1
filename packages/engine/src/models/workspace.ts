import {
  CudaGraph,
  type DType,
  dtypeSize,
  Event,
  HostBuffer,
  InvalidArgumentError,
  type Stream,
  Tensor,
} from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import { CpuGraph, copyWithIndexCopy } from '@x/kernels';

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
  /** Element type of the activations: f32 on the CPU, bf16 or f16 on CUDA. Default f32. */
  dtype?: DType;
  /** Captured graphs kept (the oldest is dropped past this); default 32. */
  maxGraphs?: number;
  /** Host staging slots the inputs rotate through (steps staged ahead of the device); default 2. */
  stagingSlots?: number;
}

const ALIGN = 256; // bytes: every buffer starts on a cache line (and a GPU memory segment)

/** Captured forwards kept per workspace (one per exact batch shape; the oldest is dropped). */
const MAX_GRAPHS = 32;

/** Next bucket size: powers of two from `min` (nano-vllm's recipe; bounds the number of plans). */
export function bucket(n: number, min: number): number {
  let b = min;
  while (b < n) b *= 2;
  return b;
}

/** A captured forward: a CpuGraph on the CPU, a CudaGraph on CUDA. */
interface Graph {
  launch(stream: Stream): void;
  dispose(): void;
}

/** Input ids a step takes from memory on the device instead of its staging (Workspace.upload). */
export interface InputFeed {
  dstIndex: ArrayLike<number>;
  /** i32, e.g. the ids the previous step sampled (SampleReadback.sampledIds). */
  src: Tensor;
  srcIndex: ArrayLike<number>;
}

/**
 * The activations of one forward pass, planned once per shape bucket: one allocation under the
 * `activations` tag, carved into fixed tensors (addresses stay put, as CUDA graphs need), plus the
 * step's inputs (ids, positions, slots, block tables, sequence lengths, query starts, last-token
 * rows) and the logits read back. Tensors cover the bucket; the forward slices the rows it uses.
 *
 * Inputs: JS writes them into host staging (`stagingView`, pinned on CUDA), and `upload` copies
 * them in one transfer, in stream order, to a mirror under the `meta` tag (kept across sleep,
 * never moved), which the kernels — and the graphs captured over this workspace — read. The same
 * on both devices, so a CPU run has CUDA's ordering: the staging rotates through `stagingSlots`
 * slots, and a slot is written again (`nextStaging`) only once the upload that last read it ran,
 * so steps can be staged while earlier ones still wait on the stream.
 */
export class Workspace {
  readonly shape: Required<WorkspaceShape>;
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
  /** [B, V] f32 on the device. */
  readonly logits: Tensor;
  /** The step's inputs where the kernels read them (host staging on the CPU, its device mirror on CUDA). */
  readonly ids: Tensor;
  readonly positions: Tensor;
  readonly slots: Tensor;
  readonly blockTables: Tensor;
  readonly seqLens: Tensor;
  readonly queryStartLoc: Tensor;
  readonly lastIndex: Tensor;
  /** [B, V] f32 in host memory (pinned on CUDA): where the logits are read back. */
  readonly hostLogits: Tensor;
  readonly #allocation: Allocation;
  readonly #inputsDevice: Allocation;
  readonly #allocator: Allocator;
  readonly #staging: HostBuffer;
  readonly #inputBytes: number;
  /** Offsets of each input in a staging slot (and in the mirror). */
  readonly #inputOffsets: Record<string, number>;
  /** Per staging slot: the event recorded after the upload that last read it. */
  readonly #uploaded: (Event | undefined)[];
  #slot = 0;
  readonly #graphs = new Map<string, Graph>();

  constructor(allocator: Allocator, shape: WorkspaceShape) {
    const s = {
      ...shape,
      dtype: shape.dtype ?? 'f32',
      maxGraphs: shape.maxGraphs ?? MAX_GRAPHS,
      stagingSlots: shape.stagingSlots ?? 2,
    };
    this.shape = s;
    this.#allocator = allocator;
    const device = allocator.device;
    const cuda = device.kind === 'cuda';
    const { tokens: t, seqs: b, hidden: h, dtype } = s;
    const plan: Array<[DType, number[]]> = [
      [dtype, [t, h]], // hidden
      [dtype, [t, h]], // residual
      [dtype, [t, h]], // normed
      [dtype, [t, s.qWidth]], // q
      [dtype, [t, s.kvWidth]], // k
      [dtype, [t, s.kvWidth]], // v
      [dtype, [t, s.qWidth]], // attn
      [dtype, [t, 2 * s.intermediate]], // gateUp
      [dtype, [t, s.intermediate]], // act
      [dtype, [b, h]], // lastHidden
      ['f32', [b, s.vocab]], // logits
      [dtype, [t, s.qWidth + 2 * s.kvWidth]], // qkv
    ];
    const { offsets, total } = layout(plan.map(([d, sh]) => numel(sh) * dtypeSize(d)));
    this.#allocation = allocator.alloc(total, {
      tag: 'activations',
      owner: `workspace[${t}x${b}]`,
    });
    const dev = plan.map(([d, sh], i) => this.#allocation.tensor(d, sh, offsets[i]));
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

    const mb = s.maxBlocksPerSeq;
    // The block tables last: a step of fewer sequences than the plan uploads only up to its rows
    // of them (the rest of the mirror is never read by that step's kernels).
    const inputs: Array<[string, 'i32' | 'i64', number[]]> = [
      ['ids', 'i32', [t]],
      ['positions', 'i32', [t]],
      ['slots', 'i64', [t]],
      ['seqLens', 'i32', [b]],
      ['queryStartLoc', 'i32', [b + 1]],
      ['lastIndex', 'i32', [b]],
      ['blockTables', 'i32', [b, mb]],
    ];
    const il = layout(inputs.map(([, d, sh]) => numel(sh) * dtypeSize(d)));
    this.#inputBytes = il.total;
    const slots = s.stagingSlots;
    this.#uploaded = new Array<Event | undefined>(slots).fill(undefined);
    const logitsBytes = b * s.vocab * 4;
    this.#staging = HostBuffer.alloc(slots * il.total + logitsBytes, cuda ? { device } : {});
    this.#inputsDevice = allocator.alloc(il.total, {
      tag: 'meta',
      owner: `workspace[${t}x${b}].inputs`,
    });
    this.#inputOffsets = {};
    const read = inputs.map(([name, d, sh], i) => {
      this.#inputOffsets[name] = il.offsets[i]!;
      return this.#inputsDevice.tensor(d, sh, il.offsets[i]);
    });
    [
      this.ids,
      this.positions,
      this.slots,
      this.seqLens,
      this.queryStartLoc,
      this.lastIndex,
      this.blockTables,
    ] = read as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    this.hostLogits = this.#hostTensor('f32', [b, s.vocab], slots * il.total);
  }

  /** Host bytes of one staging slot and of its device mirror (what `upload` of every row moves). */
  get inputBytes(): number {
    return this.#inputBytes;
  }

  /** Bytes `upload(stream, seqs)` moves: every input up to the block-table rows of `seqs` sequences. */
  uploadBytes(seqs: number = this.shape.seqs): number {
    if (!Number.isInteger(seqs) || seqs < 0 || seqs > this.shape.seqs) {
      throw new InvalidArgumentError('seqs', `an integer in [0, ${this.shape.seqs}]`, seqs);
    }
    // The block tables are the last input (see the constructor).
    return this.#inputOffsets.blockTables! + seqs * this.shape.maxBlocksPerSeq * 4;
  }

  /** A typed-array view of one input in the current staging slot (JS writes the step's inputs here). */
  stagingView<T extends Int32Array | BigInt64Array>(
    input:
      | 'ids'
      | 'positions'
      | 'slots'
      | 'blockTables'
      | 'seqLens'
      | 'queryStartLoc'
      | 'lastIndex',
    ctor: { new (b: ArrayBuffer, off: number, len: number): T },
  ): T {
    const at = this.#slot * this.#inputBytes + this.#inputOffsets[input]!;
    return new ctor(this.#staging.buffer, at, this[input].numel);
  }

  /**
   * Moves to the next staging slot, once the upload that last read it has run on its stream
   * (TimeoutError after `timeoutMs`). Call before staging a step.
   */
  async nextStaging(timeoutMs: number): Promise<void> {
    this.#slot = (this.#slot + 1) % this.#uploaded.length;
    const e = this.#uploaded[this.#slot];
    if (e !== undefined && !e.query()) await e.wait({ timeoutMs });
  }

  /** A typed-array view of a host tensor of this workspace (`hostLogits`). */
  hostView<T extends Int32Array | BigInt64Array | Float32Array>(
    t: Tensor,
    ctor: { new (b: ArrayBuffer, off: number, len: number): T },
  ): T {
    return new ctor(this.#staging.buffer, Number(t.ptr - this.#staging.ptr), t.numel);
  }

  /**
   * Enqueues the copy of the current slot's inputs to their mirror on `stream` (on CUDA the only
   * host→device traffic of a step) and marks the slot busy until the copy ran. `seqs`: the rows
   * of the block tables the step's kernels read (default all); later rows are not copied. `feed`:
   * input ids taken from device (or pinned host) memory instead of the staging — ids[dstIndex[k]]
   * = src[srcIndex[k]], the tokens the previous step sampled. On CUDA the copy is one kernel that
   * reads the pinned staging in place (@x/kernels copyWithIndexCopy): no copy engine, whose
   * hand-offs with the kernels around it cost several microseconds a step.
   */
  upload(stream: Stream, seqs: number = this.shape.seqs, feed?: InputFeed): void {
    const bytes = this.uploadBytes(seqs);
    const at = this.#slot * this.#inputBytes;
    const index =
      feed === undefined || feed.dstIndex.length === 0 ? undefined : { dst: this.ids, ...feed };
    copyWithIndexCopy(
      stream,
      this.#inputsDevice.tensor('u8', [bytes]),
      this.#staging.tensor('u8', [bytes], at),
      index,
    );
    const e = this.#uploaded[this.#slot] ?? Event.create(stream.device);
    this.#uploaded[this.#slot] = stream.record(e);
  }

  /** True when a batch of `tokens` tokens and `seqs` sequences fits this plan. */
  fits(tokens: number, seqs: number): boolean {
    return tokens <= this.shape.tokens && seqs <= this.shape.seqs;
  }

  /**
   * The forward of one batch shape (`key`) captured on `stream` — a CpuGraph on the CPU, a
   * CudaGraph on CUDA — by `record` the first time, replayed after. Valid because every tensor a
   * forward touches has a fixed address for the graph's life (DESIGN.md rule 3): this workspace
   * and its input mirror, the KV cache, the weights, the rotary table and the runner's scratch.
   */
  graph(stream: Stream, key: string, record: () => void): Graph {
    let g = this.#graphs.get(key);
    if (g === undefined) {
      g =
        stream.device.kind === 'cuda'
          ? CudaGraph.capture(stream, record)
          : CpuGraph.capture(stream, record);
      if (this.#graphs.size >= this.shape.maxGraphs) {
        const [oldest, old] = this.#graphs.entries().next().value as [string, Graph];
        old.dispose(); // launches already enqueued keep their reference
        this.#graphs.delete(oldest);
      }
      this.#graphs.set(key, g);
    }
    return g;
  }

  /** True when the forward of `key` has been captured. */
  hasGraph(key: string): boolean {
    return this.#graphs.has(key);
  }

  /** Number of captured graphs (tests, logs). */
  get graphCount(): number {
    return this.#graphs.size;
  }

  /** Frees the activations, the input mirror and the staging (the stream must be idle). */
  dispose(): void {
    for (const g of this.#graphs.values()) g.dispose();
    this.#graphs.clear();
    this.#allocator.free(this.#allocation);
    this.#allocator.free(this.#inputsDevice);
    this.#staging.dispose();
    for (const e of this.#uploaded) e?.dispose();
  }

  #hostTensor(dtype: DType, shape: number[], offset: number): Tensor {
    return new Tensor({
      ptr: this.#staging.ptr + BigInt(offset),
      dtype,
      shape,
      device: 'cpu',
    });
  }
}

function numel(shape: readonly number[]): number {
  return shape.reduce((x, y) => x * y, 1);
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
