import { type Device, type DType, InvalidArgumentError, Tensor } from '@x/core';

/** The part of the Allocator an Allocation talks to. Internal. */
export interface AllocationHost {
  readBytes(a: Allocation, offset: number, length: number): Promise<Uint8Array>;
  writeBytes(a: Allocation, offset: number, data: Uint8Array): Promise<void>;
  markDirty(a: Allocation): void;
  stateOf(a: Allocation): AllocationState;
}

export type AllocationState = 'awake' | 'asleep' | 'freed';

/**
 * A range of device memory with a stable address: `ptr` is valid from alloc to free, across every
 * sleep and wake. Contents follow the tag's policy.
 */
export class Allocation {
  /** The address; never changes until free. */
  readonly ptr: bigint;
  /** Bytes asked for. */
  readonly size: number;
  /** Bytes reserved and mapped (size rounded up to the device's granularity). */
  readonly paddedSize: number;
  readonly tag: string;
  readonly owner: string;
  readonly device: Device;
  readonly #host: AllocationHost;

  /** @internal */
  constructor(
    host: AllocationHost,
    fields: {
      ptr: bigint;
      size: number;
      paddedSize: number;
      tag: string;
      owner: string;
      device: Device;
    },
  ) {
    this.#host = host;
    this.ptr = fields.ptr;
    this.size = fields.size;
    this.paddedSize = fields.paddedSize;
    this.tag = fields.tag;
    this.owner = fields.owner;
    this.device = fields.device;
  }

  /** awake, asleep (its tag sleeps), or freed. */
  get state(): AllocationState {
    return this.#host.stateOf(this);
  }

  /** Copies `data` to `offset`. AsleepError while asleep. Marks the allocation dirty. */
  async write(offset: number, data: ArrayBufferView): Promise<void> {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.#host.writeBytes(this, offset, bytes);
  }

  /** Reads `length` bytes at `offset`. AsleepError while asleep. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.#host.readBytes(this, offset, length);
  }

  /** Declares that device work changed the contents (invalidates a kept backup). */
  markDirty(): void {
    this.#host.markDirty(this);
  }

  /** A tensor descriptor over this memory (no copy). */
  tensor(dtype: DType, shape: readonly number[], byteOffset = 0): Tensor {
    const t = new Tensor({ ptr: this.ptr + BigInt(byteOffset), dtype, shape, device: this.device });
    if (byteOffset < 0 || byteOffset + t.byteLength > this.size) {
      throw new InvalidArgumentError(
        'shape',
        `a tensor that fits in ${this.size - byteOffset} bytes of allocation ${this.owner}`,
        `[${shape.join(', ')}] (${t.byteLength} bytes)`,
      );
    }
    return t;
  }
}
