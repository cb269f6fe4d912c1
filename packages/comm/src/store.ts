import { InvalidArgumentError } from '@x/core';
import { callComm, settle } from './errors.js';
import { type NativeHandle, native } from './native.js';

/** Options of a store call that may wait. */
export interface StoreCallOptions {
  /** Milliseconds before the call fails with TimeoutError (default: the store's timeout). */
  timeoutMs?: number;
}

/** Default bound on a store call (rendezvous waits for every rank to start). */
export const DEFAULT_STORE_TIMEOUT_MS = 60_000;

type Value = string | Uint8Array;

function checkTimeout(value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidArgumentError('timeoutMs', 'a finite number of milliseconds > 0', value);
  }
  return Math.ceil(value);
}

function checkKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new InvalidArgumentError('key', 'a non-empty string', key);
  }
  return key;
}

/**
 * A rendezvous key-value store: the TCP store served by rank 0 (`Store.connect`) or a directory on
 * one host (`Store.openFile`). Every call that can wait has a timeout. `prefixed` gives a view whose
 * keys live under a namespace, so groups and jobs never see each other's keys.
 */
export class Store {
  readonly prefix: string;
  readonly timeoutMs: number;
  /** The TCP store's host (undefined for a file store, which serves one host). */
  readonly host: string | undefined;
  readonly #handle: NativeHandle;

  private constructor(handle: NativeHandle, prefix: string, timeoutMs: number, host?: string) {
    this.#handle = handle;
    this.prefix = prefix;
    this.timeoutMs = timeoutMs;
    this.host = host;
  }

  /** Connects to a TCP store at host:port, retrying until it is up or `timeoutMs` runs out. */
  static async connect(host: string, port: number, options: StoreCallOptions = {}): Promise<Store> {
    if (typeof host !== 'string' || host.length === 0)
      throw new InvalidArgumentError('host', 'a host name or address', host);
    checkPort(port);
    const t = checkTimeout(options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS);
    const h = await settle(native().connectTcpStore(host, port, t), new Error());
    return new Store(h, '', t, host);
  }

  /** Opens (creating it if needed) a file store in `dir`, for ranks on one host. */
  static openFile(dir: string, options: StoreCallOptions = {}): Store {
    if (typeof dir !== 'string' || dir.length === 0)
      throw new InvalidArgumentError('dir', 'a directory path', dir);
    const t = checkTimeout(options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS);
    return new Store(
      callComm(() => native().openFileStore(dir)),
      '',
      t,
    );
  }

  /** A view of this store whose keys are prefixed with `prefix` (joined with "/"). */
  prefixed(prefix: string): Store {
    checkKey(prefix);
    return new Store(this.#handle, `${this.prefix}${prefix}/`, this.timeoutMs, this.host);
  }

  /** Stores `value` under `key` (overwriting). */
  async set(key: string, value: Value, options: StoreCallOptions = {}): Promise<void> {
    const v = toBytes(value);
    await this.call('set', checkKey(key), v, undefined, options);
  }

  /** Waits until `key` exists and returns its bytes. */
  async get(key: string, options: StoreCallOptions = {}): Promise<Uint8Array> {
    const b = (await this.call('get', checkKey(key), undefined, undefined, options)) as Buffer;
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }

  /** Waits until `key` exists and returns its value as UTF-8 text. */
  async getString(key: string, options: StoreCallOptions = {}): Promise<string> {
    return Buffer.from(await this.get(key, options)).toString('utf8');
  }

  /** Adds `delta` to the integer at `key` (missing counts as 0) and returns the new value. */
  async add(key: string, delta: number, options: StoreCallOptions = {}): Promise<number> {
    if (!Number.isSafeInteger(delta))
      throw new InvalidArgumentError('delta', 'a safe integer', delta);
    return (await this.call('add', checkKey(key), delta, undefined, options)) as number;
  }

  /**
   * Sets `key` to `desired` when it currently holds `expected` (a missing key matches ""). Returns
   * the value after the call: `desired` when it was swapped in, else the current value.
   */
  async compareSet(
    key: string,
    expected: Value,
    desired: Value,
    options: StoreCallOptions = {},
  ): Promise<Uint8Array> {
    const b = (await this.call(
      'cas',
      checkKey(key),
      toBytes(expected),
      toBytes(desired),
      options,
    )) as Buffer;
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }

  /** Deletes `key`; true when it existed. */
  async delete(key: string, options: StoreCallOptions = {}): Promise<boolean> {
    return (await this.call('delete', checkKey(key), undefined, undefined, options)) as boolean;
  }

  /** Waits until every key exists. */
  async wait(keys: readonly string[], options: StoreCallOptions = {}): Promise<void> {
    if (!Array.isArray(keys)) throw new InvalidArgumentError('keys', 'an array of keys', keys);
    const full = keys.map((k) => this.prefix + checkKey(k));
    const t = checkTimeout(options.timeoutMs ?? this.timeoutMs);
    await settle(
      native().storeOp(this.#handle, 'wait', full, undefined, undefined, t),
      new Error(),
    );
  }

  /** @internal */
  _handle(): NativeHandle {
    return this.#handle;
  }

  private async call(
    op: 'set' | 'get' | 'add' | 'cas' | 'delete',
    key: string,
    a: unknown,
    b: unknown,
    options: StoreCallOptions,
  ): Promise<unknown> {
    const t = checkTimeout(options.timeoutMs ?? this.timeoutMs);
    return settle(native().storeOp(this.#handle, op, this.prefix + key, a, b, t), new Error());
  }
}

/** The TCP store server rank 0 runs; `port` is the one it listens on (useful with port 0). */
export class StoreServer {
  readonly port: number;
  #handle: NativeHandle | undefined;

  private constructor(port: number, handle: NativeHandle) {
    this.port = port;
    this.#handle = handle;
  }

  /** Listens on host:port (port 0 picks a free port). */
  static listen(host: string, port: number): StoreServer {
    if (typeof host !== 'string')
      throw new InvalidArgumentError('host', 'a host name or address', host);
    if (port !== 0) checkPort(port);
    const r = callComm(() => native().startStoreServer(host, port));
    return new StoreServer(r.port, r.handle);
  }

  /** Stops serving; clients' later calls fail. Idempotent. */
  close(): void {
    if (this.#handle === undefined) return;
    native().stopStoreServer(this.#handle);
    this.#handle = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function checkPort(port: unknown): void {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError('port', 'an integer in [1, 65535]', port);
  }
}

function toBytes(value: unknown): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array)
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new InvalidArgumentError('value', 'a string or Uint8Array', value);
}
