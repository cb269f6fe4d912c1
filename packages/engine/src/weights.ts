import { InvalidArgumentError, type Tensor } from '@x/core';
import type { Allocation, Allocator } from '@x/cumem';
import type { ModelConfig } from './config.js';
import { convertElements, type WeightDType } from './convert.js';
import { WeightShapeError } from './errors.js';
import { type LoadProgress, progressBar } from './progress.js';
import { SafetensorsCheckpoint, safetensorsItemBytes, type TensorInfo } from './safetensors.js';
import {
  type ShardRange,
  shardRange,
  type TensorParallel,
  type WeightSpec,
  weightSpecs,
} from './weight-specs.js';

export interface LoadWeightsOptions {
  /** Device memory comes from here, tag "weights", owner = the HF tensor name. */
  allocator: Allocator;
  /** dtype on the device; the checkpoint's f32/f16/bf16 is converted to it. */
  dtype: WeightDType;
  /** Load only this rank's slices (default: rank 0 of 1, everything). */
  tp?: TensorParallel;
  /** Called after each tensor. Default: a progress bar on stderr when stderr is a terminal. */
  onProgress?: (p: LoadProgress) => void;
}

/** Checkpoint bytes read per fs.read; bounds the host memory loading needs. */
const CHUNK_BYTES = 16 << 20;

/** The weights of one model (or one TP rank's share) in device memory, by Hugging Face name. */
export class WeightStore {
  readonly dtype: WeightDType;
  readonly tp: TensorParallel;
  readonly #allocator: Allocator;
  readonly #tensors: Map<string, { tensor: Tensor; allocation: Allocation }>;
  readonly #aliases: Map<string, string>;

  /** @internal */
  constructor(
    allocator: Allocator,
    dtype: WeightDType,
    tp: TensorParallel,
    tensors: Map<string, { tensor: Tensor; allocation: Allocation }>,
    aliases: Map<string, string>,
  ) {
    this.#allocator = allocator;
    this.dtype = dtype;
    this.tp = tp;
    this.#tensors = tensors;
    this.#aliases = aliases;
  }

  /** The tensor named `name` (HF name; `lm_head.weight` is the embedding when tied). */
  get(name: string): Tensor {
    const entry = this.#tensors.get(this.#aliases.get(name) ?? name);
    if (entry === undefined) {
      throw new InvalidArgumentError('name', 'the name of a loaded weight (see names())', name);
    }
    return entry.tensor;
  }

  has(name: string): boolean {
    return this.#tensors.has(this.#aliases.get(name) ?? name);
  }

  /** The bytes of a loaded tensor, copied to the host (for checks and debugging). */
  async readBytes(name: string): Promise<Uint8Array> {
    this.get(name);
    const { allocation, tensor } = this.#tensors.get(this.#aliases.get(name) ?? name)!;
    return allocation.read(Number(tensor.ptr - allocation.ptr), tensor.byteLength);
  }

  /** Every name get() accepts, aliases included. */
  names(): string[] {
    return [...this.#tensors.keys(), ...this.#aliases.keys()];
  }

  /** Device bytes held. */
  get bytes(): number {
    let n = 0;
    for (const a of this.#allocations()) n += a.size;
    return n;
  }

  /** Frees every allocation. The tensors must not be used afterwards. */
  dispose(): void {
    for (const a of this.#allocations()) {
      if (a.state !== 'freed') this.#allocator.free(a);
    }
    this.#tensors.clear();
  }

  // A group (q/k/v, gate/up) shares one allocation.
  #allocations(): Set<Allocation> {
    return new Set([...this.#tensors.values()].map((e) => e.allocation));
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Loads the safetensors checkpoint in `dir` (single file or sharded) into `@x/cumem` allocations,
 * checking every tensor's shape against `config` and keeping only this TP rank's slices.
 */
export async function loadWeights(
  dir: string,
  config: ModelConfig,
  options: LoadWeightsOptions,
): Promise<WeightStore> {
  const { allocator, dtype } = options;
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') {
    throw new InvalidArgumentError('options.dtype', '"f32", "bf16" or "f16"', dtype);
  }
  const tp = checkTensorParallel(options.tp ?? { rank: 0, size: 1 }, config);
  const onProgress =
    options.onProgress ?? (process.stderr.isTTY ? progressBar(process.stderr) : undefined);
  const ckpt = await SafetensorsCheckpoint.open(dir);
  const tensors = new Map<string, { tensor: Tensor; allocation: Allocation }>();
  const allocations: Allocation[] = [];
  try {
    const plan = weightSpecs(config).map((spec) => {
      const info = ckpt.tensors.get(spec.name);
      if (info === undefined) throw new WeightShapeError(spec.name, spec.shape, null);
      if (!sameShape(info.shape, spec.shape)) {
        throw new WeightShapeError(spec.name, spec.shape, info.shape);
      }
      const range = shardRange(spec, config, tp);
      const bytes = numel(range.shape) * safetensorsItemBytes(info.dtype);
      return {
        spec,
        info,
        range,
        bytes,
        deviceBytes: numel(range.shape) * (dtype === 'f32' ? 4 : 2),
      };
    });
    const totalBytes = plan.reduce((a, p) => a + p.bytes, 0);
    let loadedBytes = 0;
    let group: { name: string; allocation: Allocation; offset: number } | undefined;
    for (const [i, { spec, info, range, bytes }] of plan.entries()) {
      // A group's members are consecutive in the plan: the first allocates for all of them.
      if (spec.group === undefined || spec.group !== group?.name) {
        let size = 0;
        for (
          let j = i;
          j < plan.length &&
          (j === i || (spec.group !== undefined && plan[j]!.spec.group === spec.group));
          j++
        ) {
          size += plan[j]!.deviceBytes;
        }
        const allocation = allocator.alloc(size, {
          tag: 'weights',
          owner: spec.group ?? spec.name,
        });
        allocations.push(allocation);
        group = { name: spec.group ?? '', allocation, offset: 0 };
      }
      const { allocation, offset } = group;
      await loadTensor(allocation, offset, spec, info, range, dtype);
      tensors.set(spec.name, { allocation, tensor: allocation.tensor(dtype, range.shape, offset) });
      group.offset += plan[i]!.deviceBytes;
      loadedBytes += bytes;
      onProgress?.({ tensor: spec.name, done: i + 1, count: plan.length, loadedBytes, totalBytes });
    }
  } catch (err) {
    for (const a of allocations) allocator.free(a);
    throw err;
  } finally {
    await ckpt.close();
  }
  const aliases = new Map<string, string>();
  if (config.tieWordEmbeddings) aliases.set('lm_head.weight', 'model.embed_tokens.weight');
  return new WeightStore(allocator, dtype, tp, tensors, aliases);
}

/**
 * Reads this rank's slice of one tensor in chunks of whole rows, converts it and writes it at
 * `offset` of `allocation`.
 */
async function loadTensor(
  allocation: Allocation,
  offset: number,
  spec: WeightSpec,
  info: TensorInfo,
  range: ShardRange,
  dtype: WeightDType,
): Promise<void> {
  const srcItem = safetensorsItemBytes(info.dtype);
  // A "row" is one index of dim 0. Column splits (dim 0) read a contiguous run of rows; row
  // splits (dim 1) read whole rows and keep columns [start, end) of each.
  const full = info.shape;
  const rowElems = full.length > 1 ? numel(full.slice(1)) : 1;
  const rowBytes = rowElems * srcItem;
  const [firstRow, lastRow] = range.dim === 0 ? [range.start, range.end] : [0, full[0]!];
  const colStart = range.dim === 1 ? range.start : 0;
  const colCount = range.dim === 1 ? range.end - range.start : rowElems;
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
  let written = offset;
  for (let r = firstRow; r < lastRow; r += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, lastRow - r);
    const raw = await info.file.read(info.offset + r * rowBytes, rows * rowBytes);
    if (raw.byteLength !== rows * rowBytes) {
      throw new WeightShapeError(spec.name, spec.shape, info.shape); // file shrank under us
    }
    let picked = raw;
    if (range.dim === 1) {
      picked = new Uint8Array(rows * colCount * srcItem);
      for (let k = 0; k < rows; k++) {
        const from = k * rowBytes + colStart * srcItem;
        picked.set(raw.subarray(from, from + colCount * srcItem), k * colCount * srcItem);
      }
    }
    const out = convertElements(picked, info.dtype, dtype);
    await allocation.write(written, out);
    written += out.byteLength;
  }
}

function checkTensorParallel(tp: TensorParallel, config: ModelConfig): TensorParallel {
  const { rank, size } = tp ?? {};
  if (!Number.isInteger(size) || size < 1) {
    throw new InvalidArgumentError('options.tp.size', 'an integer >= 1', size);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) {
    throw new InvalidArgumentError('options.tp.rank', `an integer in [0, ${size})`, rank);
  }
  const divisible: Array<[string, number]> = [
    ['num_attention_heads', config.numHeads],
    ['intermediate_size', config.intermediateSize],
  ];
  for (const [what, n] of divisible) {
    if (n % size !== 0) {
      throw new InvalidArgumentError('options.tp.size', `a divisor of ${what} (${n})`, size);
    }
  }
  const kv = config.numKvHeads;
  if (kv % size !== 0 && size % kv !== 0) {
    throw new InvalidArgumentError(
      'options.tp.size',
      `a divisor or multiple of num_key_value_heads (${kv})`,
      size,
    );
  }
  return { rank, size };
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
