import { type Device, type DeviceName, parseDevice, requireCuda } from './device.js';
import {
  callNative,
  DisposedError,
  fromNative,
  InvalidArgumentError,
  TimeoutError,
} from './errors.js';
import { type NativeHandle, native } from './native.js';
import {
  assertInteger,
  assertOneOf,
  assertPointer,
  assertTimeout,
  DEFAULT_TIMEOUT_MS,
} from './validate.js';

/** Options of a bounded host-side wait. */
export interface WaitOptions {
  /** Milliseconds before the wait fails with TimeoutError (default 300000; Infinity allowed). */
  timeoutMs?: number;
}

export interface StreamOptions {
  /** CPU streams: keep the labels of the last 4096 completed operations (see completedOps). */
  recordOps?: boolean;
}

export interface EventOptions {
  /** Record timestamps so elapsedTime() works (CUDA events without timing are cheaper). */
  timing?: boolean;
}

/**
 * Awaits a native completion promise with a timeout. The native side never keeps the process
 * alive by itself; the timer here does, for exactly as long as someone waits.
 */
async function bounded(
  p: Promise<void>,
  operation: string,
  timeoutMs: number,
  site: Error,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    // An infinite wait still needs a live handle, or Node would exit under a pending await.
    const ms = timeoutMs === Number.POSITIVE_INFINITY ? 2 ** 31 - 1 : timeoutMs;
    const arm = (): void => {
      timer = setTimeout(() => {
        if (timeoutMs === Number.POSITIVE_INFINITY) arm();
        else reject(new TimeoutError(operation, timeoutMs));
      }, ms);
    };
    arm();
  });
  try {
    await Promise.race([p.catch((err) => Promise.reject(fromNative(err, site))), limit]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * An in-order queue of device work. Every copy, fill, kernel and collective in x names the stream it
 * runs on; there is no default or current stream. Enqueue methods return at once; completion is
 * observed with events (`record`) or `synchronize`.
 */
export class Stream {
  readonly device: Device;
  #handle: NativeHandle | undefined;

  private constructor(device: Device, handle: NativeHandle) {
    this.device = device;
    this.#handle = handle;
  }

  /** Creates a stream on "cpu" (its own native thread) or "cuda:N" (a non-blocking CUstream). */
  static create(device: DeviceName | Device, options: StreamOptions = {}): Stream {
    const d = parseDevice(device);
    if (d.kind === 'cuda') requireCuda(d);
    const h = callNative(() => native().createStream(d.index, options.recordOps === true));
    return new Stream(d, h);
  }

  /** The native handle (an `x_stream*` for other addons through the C function table). */
  get nativeHandle(): bigint {
    return native().handle(this.handle());
  }

  /** Copies `byteLength` bytes from src to dst (host or device addresses), in stream order. */
  copy(dst: bigint, src: bigint, byteLength: number | bigint): this {
    assertPointer('dst', dst);
    assertPointer('src', src);
    const n = toBytes('byteLength', byteLength);
    callNative(() => native().streamCopy(this.handle(), dst, src, n));
    return this;
  }

  /**
   * Writes `byteLength` bytes at dst with `value` repeated in units of `width` bytes (little
   * endian). byteLength must be a multiple of width.
   */
  fill(
    dst: bigint,
    byteLength: number | bigint,
    value: number | bigint,
    width: 1 | 2 | 4 | 8 = 1,
  ): this {
    assertPointer('dst', dst);
    const n = toBytes('byteLength', byteLength);
    assertOneOf('width', width, [1, 2, 4, 8] as const);
    if (n % BigInt(width) !== 0n) {
      throw new InvalidArgumentError('byteLength', `a multiple of width ${width}`, byteLength);
    }
    const max = (1n << BigInt(8 * width)) - 1n;
    const v = typeof value === 'bigint' ? value : BigInt(assertInteger('value', value, 0));
    if (v < 0n || v > max)
      throw new InvalidArgumentError('value', `an integer in [0, ${max}]`, value);
    callNative(() => native().streamFill(this.handle(), dst, n, v, width));
    return this;
  }

  /** Occupies the stream for `ms` milliseconds (a GPU spin kernel on CUDA, a sleep on the CPU). */
  delay(ms: number): this {
    if (typeof ms !== 'number' || !(ms >= 0) || !Number.isFinite(ms)) {
      throw new InvalidArgumentError('ms', 'a finite number of milliseconds >= 0', ms);
    }
    callNative(() => native().streamDelay(this.handle(), BigInt(Math.round(ms * 1e6))));
    return this;
  }

  /** Records `event` (or a new one) at the current end of the stream and returns it. */
  record(event?: Event): Event {
    const e = event ?? Event.create(this.device);
    e.record(this);
    return e;
  }

  /** Makes all later work on this stream wait until `event` completes. */
  waitEvent(event: Event): this {
    if (!(event instanceof Event)) throw new InvalidArgumentError('event', 'an Event', event);
    callNative(() => native().streamWaitEvent(this.handle(), event._handle()));
    return this;
  }

  /**
   * Resolves when all work enqueued so far finished; rejects with the first failure of that work,
   * or TimeoutError. Never blocks the JS thread.
   */
  async synchronize(options: WaitOptions = {}): Promise<void> {
    const timeoutMs = assertTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const site = new Error();
    const p = callNative(() => native().streamWait(this.handle()));
    await bounded(p, 'stream.synchronize', timeoutMs, site);
  }

  /** Blocks the calling thread until the stream drains (shutdown paths and benchmarks only). */
  synchronizeSync(options: WaitOptions = {}): void {
    const timeoutMs = assertTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    callNative(() => native().streamSynchronizeSync(this.handle(), timeoutMs));
  }

  /** True while this stream captures a CUDA graph (see CudaGraph.capture). */
  get capturing(): boolean {
    return callNative(() => native().streamCapturing(this.handle()));
  }

  /** Labels of completed operations, oldest first (CPU streams created with recordOps). */
  completedOps(): string[] {
    return callNative(() => native().streamCompletedOps(this.handle()));
  }

  /** Stops accepting work. Work already enqueued still runs. Idempotent. */
  dispose(): void {
    if (this.#handle === undefined) return;
    native().streamClose(this.#handle);
    this.#handle = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  handle(): NativeHandle {
    if (this.#handle === undefined) throw new DisposedError(`Stream on ${this.device.name}`);
    return this.#handle;
  }
}

/**
 * A point in a stream's work. `record(stream)` marks it; other streams `waitEvent` it; the host
 * `await`s it without blocking.
 */
export class Event {
  readonly device: Device;
  readonly timing: boolean;
  #handle: NativeHandle | undefined;

  private constructor(device: Device, timing: boolean, handle: NativeHandle) {
    this.device = device;
    this.timing = timing;
    this.#handle = handle;
  }

  /** Creates an event for streams of `device`. */
  static create(device: DeviceName | Device, options: EventOptions = {}): Event {
    const d = parseDevice(device);
    if (d.kind === 'cuda') requireCuda(d);
    const timing = options.timing === true;
    return new Event(
      d,
      timing,
      callNative(() => native().createEvent(d.index, timing)),
    );
  }

  /** The native handle (an `x_event*` for other addons). */
  get nativeHandle(): bigint {
    return native().handle(this._handle());
  }

  /** Marks the current end of `stream`; the event completes when the work before it has. */
  record(stream: Stream): this {
    if (!(stream instanceof Stream)) throw new InvalidArgumentError('stream', 'a Stream', stream);
    callNative(() => native().streamRecord(stream.handle(), this._handle()));
    return this;
  }

  /** True when the work before the last record completed (or it was never recorded). */
  query(): boolean {
    return callNative(() => native().eventQuery(this._handle()));
  }

  /** Resolves when the event completes; TimeoutError after `timeoutMs`. Never blocks the JS thread. */
  async wait(options: WaitOptions = {}): Promise<void> {
    const timeoutMs = assertTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const site = new Error();
    const p = callNative(() => native().eventWait(this._handle()));
    await bounded(p, 'event.wait', timeoutMs, site);
  }

  /** Blocks the calling thread until the event completes (benchmarks, shutdown). */
  synchronizeSync(options: WaitOptions = {}): void {
    const timeoutMs = assertTimeout('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    callNative(() => native().eventSynchronizeSync(this._handle(), timeoutMs));
  }

  /** Milliseconds from this event to `end`; both completed, created with `timing: true`. */
  elapsedTime(end: Event): number {
    if (!(end instanceof Event)) throw new InvalidArgumentError('end', 'an Event', end);
    if (!this.timing || !end.timing) {
      throw new InvalidArgumentError(
        'event',
        'events created with { timing: true }',
        'an event without timing',
      );
    }
    return callNative(() => native().eventElapsed(this._handle(), end._handle()));
  }

  /** Releases the event. Idempotent. */
  dispose(): void {
    this.#handle = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  _handle(): NativeHandle {
    if (this.#handle === undefined) throw new DisposedError(`Event on ${this.device.name}`);
    return this.#handle;
  }
}

function toBytes(name: string, value: number | bigint): bigint {
  if (typeof value === 'bigint') {
    if (value < 0n) throw new InvalidArgumentError(name, 'a byte count >= 0', value);
    return value;
  }
  return BigInt(assertInteger(name, value, 0));
}
