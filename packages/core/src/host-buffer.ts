import { type Device, type DeviceName, parseDevice, requireCuda } from './device.js';
import { type DType, dtypeSize } from './dtype.js';
import { callNative, DisposedError, InvalidArgumentError } from './errors.js';
import { type NativeHandle, native } from './native.js';
import { Tensor } from './tensor.js';

export interface HostBufferOptions {
  /**
   * "cpu" (default) gives page-aligned host memory; "cuda:N" gives memory pinned with the driver,
   * which copies to and from every GPU at full link speed.
   */
  device?: DeviceName | Device;
}

/**
 * Host memory that streams can read and write. `bytes` is a live view of it; fill it from JS, then
 * enqueue copies. Dispose after the streams that use it are synchronized: a CPU stream operation
 * still running on it keeps the memory until it returns, and queued ones that name it fail.
 */
export class HostBuffer {
  readonly ptr: bigint;
  readonly byteLength: number;
  /** The device this memory is pinned for ("cpu" when not pinned). */
  readonly device: Device;
  #buffer: ArrayBuffer | undefined;
  #block: NativeHandle;

  private constructor(
    ptr: bigint,
    byteLength: number,
    device: Device,
    buffer: ArrayBuffer,
    block: NativeHandle,
  ) {
    this.ptr = ptr;
    this.byteLength = byteLength;
    this.device = device;
    this.#buffer = buffer;
    this.#block = block;
  }

  /** Allocates `byteLength` bytes (>= 1). */
  static alloc(byteLength: number, options: HostBufferOptions = {}): HostBuffer {
    if (!Number.isSafeInteger(byteLength) || byteLength < 1) {
      throw new InvalidArgumentError('byteLength', 'an integer >= 1', byteLength);
    }
    const device = parseDevice(options.device ?? 'cpu', 'options.device');
    if (device.kind === 'cuda') requireCuda(device);
    const [ptr, buffer, block] = callNative(() =>
      native().hostAlloc(device.index, BigInt(byteLength)),
    );
    return new HostBuffer(ptr, byteLength, device, buffer, block);
  }

  /** The memory as bytes. Throws after dispose. */
  get bytes(): Uint8Array {
    return new Uint8Array(this.buffer);
  }

  /** The memory as an ArrayBuffer (aliases the native memory; detached by dispose). */
  get buffer(): ArrayBuffer {
    if (this.#buffer === undefined) throw new DisposedError('HostBuffer');
    return this.#buffer;
  }

  /**
   * A contiguous `dtype` tensor of `shape` over this memory from byte `offset`, on the device this
   * memory is pinned for: kernels of that device read and write it in place (pinned host memory has
   * the same address on the GPU under unified addressing; each access crosses the host link), and
   * CPU kernels a "cpu" buffer. The view owns nothing: keep the buffer until they ran.
   */
  tensor(dtype: DType, shape: readonly number[], offset = 0): Tensor {
    if (this.#buffer === undefined) throw new DisposedError('HostBuffer');
    const size = dtypeSize(dtype);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % size !== 0) {
      throw new InvalidArgumentError(
        'offset',
        `a multiple of ${size} (the ${dtype} size) >= 0`,
        offset,
      );
    }
    const t = new Tensor({ ptr: this.ptr + BigInt(offset), dtype, shape, device: this.device });
    if (offset + t.numel * size > this.byteLength) {
      throw new InvalidArgumentError(
        'shape',
        `at most ${this.byteLength - offset} bytes from offset ${offset} (the buffer's end)`,
        `[${shape.join(', ')}] of ${dtype} (${t.numel * size} bytes)`,
      );
    }
    return t;
  }

  /**
   * Frees the memory (at once, or when the CPU stream operation running on it returns); every view
   * of it becomes empty now. Idempotent.
   */
  dispose(): void {
    if (this.#buffer === undefined) return;
    const buffer = this.#buffer;
    this.#buffer = undefined;
    callNative(() => native().hostFree(buffer, this.#block));
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
