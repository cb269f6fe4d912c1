import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AsleepError,
  capi,
  type Device,
  type DeviceName,
  fromNativeError,
  HostBuffer,
  InvalidArgumentError,
  OutOfMemoryError,
  parseDevice,
  Stream,
  TimeoutError,
} from '@x/core';
import { Allocation, type AllocationHost, type AllocationState } from './allocation.js';
import {
  type NativeHandleLike,
  type NativeSleepItem,
  type NativeWakeItem,
  native,
  RANGE_DRAINING,
  RANGE_MAPPED,
  RANGE_UNMAPPED,
} from './native.js';
import { BUILTIN_TAGS, checkTag, type TagOptions } from './tags.js';

export interface AllocatorOptions {
  device: DeviceName | Device;
  /** Discarded memory reads as 0xFF bytes after wake (NaN in every float dtype). Default: X_CUMEM_POISON=1. */
  poison?: boolean;
  /** Folder for tags that offload to disk (default: <tmpdir>/x-cumem). */
  diskDir?: string;
  /** Bound on each barrier callback (default 60000 ms). */
  barrierTimeoutMs?: number;
  /** Bound on waiting for registered streams before unmapping (default 60000 ms). */
  quiesceTimeoutMs?: number;
}

/** Called before and after the mapping change, e.g. for a cross-rank agreement. */
export type Barrier = (
  phase: 'before' | 'after',
  info: { op: 'sleep' | 'wake'; tags: string[] },
) => unknown;

export interface SleepOptions {
  /** Tags to sleep (default: every tag whose policy is not keep). */
  tags?: string[];
  /** 1: offload tags offload, the rest is discarded (default). 2: everything is discarded. */
  level?: 1 | 2;
  barrier?: Barrier;
}

export interface WakeOptions {
  /** Tags to wake (default: every sleeping tag). */
  tags?: string[];
  barrier?: Barrier;
}

export interface TagStats {
  /** Bytes asked for by live allocations. */
  allocated: number;
  /** Bytes of physical memory mapped now. */
  mapped: number;
  /** Bytes of valid backups (host or disk). */
  backedUp: number;
  /** Bytes of host memory held for backups, valid or kept for reuse (see reuseHostMemory). */
  hostReserved: number;
}

export interface AuditEntry {
  ptr: bigint;
  size: number;
  paddedSize: number;
  tag: string;
  owner: string;
  state: AllocationState;
  backedUp: boolean;
}

interface TagState {
  options: TagOptions;
  phase: 'awake' | 'draining' | 'asleep';
  /** How the last sleep treated the contents: restore on wake only if offloaded. */
  offloaded: boolean;
  sleepHooks: Array<() => unknown>;
  wakeHooks: Array<() => unknown>;
}

const STAGING_BYTES = 8 << 20;
let nextAllocatorId = 1;

/**
 * A tagged virtual-memory allocator for one device. Allocations keep their address from alloc to
 * free; sleep releases physical memory per tag policy and wake maps new memory at the same
 * addresses. Sleep first drains every registered stream (and, on CUDA, the whole device).
 */
export class Allocator implements AllocationHost {
  readonly device: Device;
  readonly poison: boolean;
  readonly #pool: NativeHandleLike;
  readonly #tags = new Map<string, TagState>();
  readonly #live = new Map<bigint, Allocation>();
  readonly #streams = new Set<Stream>();
  readonly #io: Stream;
  readonly #id = nextAllocatorId++;
  readonly #diskDir: string;
  readonly #barrierTimeoutMs: number;
  readonly #quiesceTimeoutMs: number;
  #staging: HostBuffer | undefined;
  #ops: Promise<unknown> = Promise.resolve(); // sleep/wake run one at a time, in call order
  #io_lock: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(device: Device, pool: NativeHandleLike, options: AllocatorOptions) {
    this.device = device;
    this.#pool = pool;
    this.poison = options.poison ?? process.env.X_CUMEM_POISON === '1';
    this.#diskDir = options.diskDir ?? join(tmpdir(), 'x-cumem');
    this.#barrierTimeoutMs = options.barrierTimeoutMs ?? 60_000;
    this.#quiesceTimeoutMs = options.quiesceTimeoutMs ?? 60_000;
    this.#io = Stream.create(device);
    this.#streams.add(this.#io);
    for (const [name, opts] of Object.entries(BUILTIN_TAGS)) this.defineTag(name, opts);
  }

  /** Creates an allocator on "cpu" or "cuda:N". */
  static async create(options: AllocatorOptions): Promise<Allocator> {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('options', 'an object with a device', options);
    }
    const device = parseDevice(options.device, 'options.device');
    const pool = call(() => native().createPool(device.index, capi()));
    return new Allocator(device, pool, options);
  }

  /** Sizes are rounded up to this many bytes (page size on the CPU, VMM granularity on CUDA). */
  get granularity(): number {
    return native().granularity(this.#pool);
  }

  /** Defines a tag (or redefines one that has no allocations). */
  defineTag(name: string, options: TagOptions): void {
    this.#check();
    const opts = checkTag(name, options);
    const existing = this.#tags.get(name);
    if (existing && [...this.#live.values()].some((a) => a.tag === name)) {
      throw new InvalidArgumentError('tag', `a tag without live allocations to redefine`, name);
    }
    this.#tags.set(name, {
      options: opts,
      phase: 'awake',
      offloaded: false,
      sleepHooks: existing?.sleepHooks ?? [],
      wakeHooks: existing?.wakeHooks ?? [],
    });
  }

  /** The policies of every tag. */
  tags(): Record<string, TagOptions & { asleep: boolean }> {
    return Object.fromEntries(
      [...this.#tags].map(([n, t]) => [n, { ...t.options, asleep: t.phase !== 'awake' }]),
    );
  }

  /** True while `tag` is asleep (or going to sleep). */
  isAsleep(tag: string): boolean {
    return this.#tag(tag).phase !== 'awake';
  }

  /** Streams whose work sleep waits for before it unmaps anything. */
  registerStream(stream: Stream): void {
    if (!(stream instanceof Stream)) throw new InvalidArgumentError('stream', 'a Stream', stream);
    this.#streams.add(stream);
  }

  unregisterStream(stream: Stream): void {
    this.#streams.delete(stream);
  }

  /** Runs `fn` (in registration order) when `tag` goes to sleep, before anything is unmapped. */
  onSleep(tag: string, fn: () => unknown): void {
    this.#tag(tag).sleepHooks.push(fn);
  }

  /** Runs `fn` (in registration order) after `tag` woke and its contents were restored. */
  onWake(tag: string, fn: () => unknown): void {
    this.#tag(tag).wakeHooks.push(fn);
  }

  /** Reserves and maps `bytes` under `tag`. AsleepError while the tag sleeps. */
  alloc(bytes: number, options: { tag: string; owner?: string }): Allocation {
    this.#check();
    if (!Number.isSafeInteger(bytes) || bytes < 1) {
      throw new InvalidArgumentError('bytes', 'an integer >= 1', bytes);
    }
    const tag = options?.tag;
    const state = this.#tag(tag);
    if (state.phase !== 'awake') {
      throw new AsleepError(`cannot allocate from tag "${tag}" while it is asleep; wake it first`);
    }
    const owner = options.owner ?? 'anonymous';
    const label = `cumem(${tag}):${owner}`;
    const [ptr, paddedSize] = call(
      () => native().alloc(this.#pool, BigInt(bytes), true, label),
      tag,
      bytes,
    );
    const a = new Allocation(this, {
      ptr,
      size: bytes,
      paddedSize,
      tag,
      owner,
      device: this.device,
    });
    this.#live.set(ptr, a);
    return a;
  }

  /** Releases an allocation in any state (awake or asleep). */
  free(allocation: Allocation): void {
    this.#check();
    if (!(allocation instanceof Allocation) || this.#live.get(allocation.ptr) !== allocation) {
      throw new InvalidArgumentError(
        'allocation',
        'a live allocation of this allocator',
        allocation,
      );
    }
    if (this.#tag(allocation.tag).phase === 'draining') {
      throw new InvalidArgumentError(
        'allocation',
        'an allocation whose tag is not mid-sleep',
        allocation.owner,
      );
    }
    this.#live.delete(allocation.ptr);
    call(() => native().free(this.#pool, allocation.ptr));
  }

  /** Puts tags to sleep. Idempotent; resolves once physical memory is released. */
  sleep(options: SleepOptions = {}): Promise<void> {
    return this.#serial(() => this.#sleep(options));
  }

  /** Wakes tags. Idempotent; resolves once every restore finished. All or nothing on OOM. */
  wake(options: WakeOptions = {}): Promise<void> {
    return this.#serial(() => this.#wake(options));
  }

  /**
   * Allocates the host memory that sleeping `tags` (default: every host-offload tag) will copy into,
   * now. Pinning is the slow part of a first sleep (seconds for many GiB); an engine can pay it at
   * load time instead. The memory is kept (see reuseHostMemory) and counted in hostReserved.
   */
  reserveBackups(options: { tags?: string[] } = {}): Promise<void> {
    return this.#serial(async () => {
      const names = (options.tags ?? [...this.#tags.keys()]).filter((n) => {
        const t = this.#tag(n).options;
        return t.onSleep === 'offload' && t.offloadTo !== 'disk';
      });
      const vas = this.#allocsOf(names).map((a) => a.ptr);
      await native()
        .reserveBackups(this.#pool, vas)
        .catch((e: unknown) => Promise.reject(fromNativeError(e)));
    });
  }

  /** Bytes per tag: allocated, mapped and backed up. */
  stats(): Record<string, TagStats> {
    const out: Record<string, TagStats> = {};
    for (const name of this.#tags.keys()) {
      out[name] = { allocated: 0, mapped: 0, backedUp: 0, hostReserved: 0 };
    }
    for (const a of this.#live.values()) {
      const i = native().info(this.#pool, a.ptr);
      const s = out[a.tag]!;
      s.allocated += a.size;
      if (i.mapped) s.mapped += i.padded;
      s.backedUp += i.backedUp;
      s.hostReserved += i.hostReserved;
    }
    return out;
  }

  /** Every live allocation with its tag, size, state and owner. */
  audit(): AuditEntry[] {
    return [...this.#live.values()].map((a) => ({
      ptr: a.ptr,
      size: a.size,
      paddedSize: a.paddedSize,
      tag: a.tag,
      owner: a.owner,
      state: a.state,
      backedUp: native().info(this.#pool, a.ptr).backedUp > 0,
    }));
  }

  /** Testing: the next `after` mappings succeed and the one after fails as out of memory. */
  injectMapFailure(after: number): void {
    native().injectMapFailure(this.#pool, after);
  }

  /** Frees everything in any state. Waits for a sleep or wake in progress first. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#ops.catch(() => {});
    await this.#io_lock.catch(() => {});
    this.#disposed = true;
    await this.#io.synchronize({ timeoutMs: this.#quiesceTimeoutMs }).catch(() => {});
    this.#io.dispose();
    this.#staging?.dispose();
    native().shutdown(this.#pool);
    this.#live.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  // ---- sleep and wake ----

  async #sleep(options: SleepOptions): Promise<void> {
    const level = options.level ?? 1;
    if (level !== 1 && level !== 2) throw new InvalidArgumentError('level', '1 or 2', level);
    const names = this.#select(options.tags, 'awake');
    if (names.length === 0) return;
    const info = { op: 'sleep' as const, tags: names };
    await this.#barrier(options.barrier, 'before', info);
    for (const n of names) for (const hook of this.#tag(n).sleepHooks) await hook();

    const allocs = this.#allocsOf(names);
    const vas = allocs.map((a) => a.ptr);
    for (const n of names) this.#tag(n).phase = 'draining';
    call(() => native().setState(this.#pool, vas, RANGE_DRAINING));
    try {
      // Quiesce: queued work that touches these ranges finishes before anything is unmapped.
      await Promise.all(
        [...this.#streams].map((s) => s.synchronize({ timeoutMs: this.#quiesceTimeoutMs })),
      );
      const items: NativeSleepItem[] = allocs.map((a) => this.#sleepItem(a, level));
      if (items.some((i) => i.offload === 2)) mkdirSync(this.#diskDir, { recursive: true });
      await native()
        .sleep(this.#pool, items)
        .catch((e: unknown) => Promise.reject(fromNativeError(e)));
    } catch (err) {
      call(() => native().setState(this.#pool, vas, RANGE_MAPPED));
      for (const n of names) this.#tag(n).phase = 'awake';
      throw err;
    }
    call(() => native().setState(this.#pool, vas, RANGE_UNMAPPED));
    for (const n of names) {
      const t = this.#tag(n);
      t.phase = 'asleep';
      t.offloaded = level === 1 && t.options.onSleep === 'offload';
    }
    await this.#barrier(options.barrier, 'after', info);
  }

  async #wake(options: WakeOptions): Promise<void> {
    const names = this.#select(options.tags, 'asleep');
    if (names.length === 0) return;
    const info = { op: 'wake' as const, tags: names };
    await this.#barrier(options.barrier, 'before', info);
    const allocs = this.#allocsOf(names);
    const items: NativeWakeItem[] = allocs.map((a) => {
      const t = this.#tag(a.tag);
      return {
        va: a.ptr,
        restore: t.offloaded,
        poison: this.poison && !t.offloaded,
        keepBackup: t.offloaded && t.options.keepBackup === true,
        retainHost: t.options.reuseHostMemory !== false,
      };
    });
    try {
      await native().wake(this.#pool, items);
    } catch (err) {
      const failed = (err as { failedVa?: bigint }).failedVa;
      const a = failed === undefined ? undefined : this.#live.get(failed);
      if (a && (err as { code?: string }).code === 'X_OUT_OF_MEMORY') {
        throw new OutOfMemoryError(
          `wake ran out of memory mapping ${a.paddedSize} bytes for ${a.owner} (tag "${a.tag}"); ` +
            'nothing stayed mapped, free memory and retry',
          a.paddedSize,
          a.tag,
        );
      }
      throw fromNativeError(err);
    }
    call(() =>
      native().setState(
        this.#pool,
        allocs.map((a) => a.ptr),
        RANGE_MAPPED,
      ),
    );
    for (const n of names) this.#tag(n).phase = 'awake';
    for (const n of names) for (const hook of this.#tag(n).wakeHooks) await hook();
    await this.#barrier(options.barrier, 'after', info);
  }

  #sleepItem(a: Allocation, level: 1 | 2): NativeSleepItem {
    const t = this.#tag(a.tag).options;
    if (level === 2 || t.onSleep !== 'offload') return { va: a.ptr, offload: 0, reuse: false };
    const reuse = t.keepBackup === true;
    if (t.offloadTo === 'disk') {
      const path = join(this.#diskDir, `${process.pid}-${this.#id}-${a.ptr.toString(16)}.bin`);
      return { va: a.ptr, offload: 2, path, reuse };
    }
    return { va: a.ptr, offload: 1, reuse };
  }

  async #barrier(
    fn: Barrier | undefined,
    phase: 'before' | 'after',
    info: { op: 'sleep' | 'wake'; tags: string[] },
  ) {
    if (fn === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError(`${info.op} barrier (${phase})`, this.#barrierTimeoutMs)),
        this.#barrierTimeoutMs,
      );
    });
    try {
      await Promise.race([Promise.resolve().then(() => fn(phase, info)), limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  #select(tags: string[] | undefined, want: 'awake' | 'asleep'): string[] {
    if (tags !== undefined && !Array.isArray(tags)) {
      throw new InvalidArgumentError('tags', 'an array of tag names', tags);
    }
    const names = tags ?? [...this.#tags.keys()];
    for (const n of names) this.#tag(n);
    return [...new Set(names)].filter((n) => {
      const t = this.#tag(n);
      return t.options.onSleep !== 'keep' && t.phase === want;
    });
  }

  #allocsOf(names: string[]): Allocation[] {
    const set = new Set(names);
    return [...this.#live.values()].filter((a) => set.has(a.tag));
  }

  #tag(name: unknown): TagState {
    const t = typeof name === 'string' ? this.#tags.get(name) : undefined;
    if (t === undefined) {
      throw new InvalidArgumentError(
        'tag',
        `a defined tag (${[...this.#tags.keys()].join(', ')})`,
        name,
      );
    }
    return t;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    this.#check();
    const run = this.#ops.then(fn, fn);
    this.#ops = run.catch(() => {});
    return run;
  }

  #check(): void {
    if (this.#disposed)
      throw new InvalidArgumentError('allocator', 'an allocator not yet disposed', 'disposed');
  }

  // ---- AllocationHost: read/write through @x/core copies on the allocator's own stream ----

  stateOf(a: Allocation): AllocationState {
    if (this.#live.get(a.ptr) !== a) return 'freed';
    return this.#tag(a.tag).phase === 'awake' ? 'awake' : 'asleep';
  }

  markDirty(a: Allocation): void {
    if (this.#live.get(a.ptr) === a) native().markDirty(this.#pool, a.ptr);
  }

  readBytes(a: Allocation, offset: number, length: number): Promise<Uint8Array> {
    this.#checkAccess(a, offset, length, 'read');
    const out = new Uint8Array(length);
    return this.#withStaging(async (staging) => {
      for (let done = 0; done < length; done += STAGING_BYTES) {
        const n = Math.min(STAGING_BYTES, length - done);
        this.#checkAccess(a, offset, length, 'read');
        this.#io.copy(staging.ptr, a.ptr + BigInt(offset + done), n);
        await this.#io.synchronize({ timeoutMs: this.#quiesceTimeoutMs });
        out.set(staging.bytes.subarray(0, n), done);
      }
      return out;
    });
  }

  writeBytes(a: Allocation, offset: number, data: Uint8Array): Promise<void> {
    this.#checkAccess(a, offset, data.byteLength, 'write');
    this.markDirty(a);
    return this.#withStaging(async (staging) => {
      for (let done = 0; done < data.byteLength; done += STAGING_BYTES) {
        const n = Math.min(STAGING_BYTES, data.byteLength - done);
        staging.bytes.set(data.subarray(done, done + n));
        this.#checkAccess(a, offset, data.byteLength, 'write');
        this.#io.copy(a.ptr + BigInt(offset + done), staging.ptr, n);
        await this.#io.synchronize({ timeoutMs: this.#quiesceTimeoutMs });
      }
    });
  }

  #checkAccess(a: Allocation, offset: number, length: number, op: string): void {
    const state = this.stateOf(a);
    if (state === 'freed')
      throw new InvalidArgumentError('allocation', 'a live allocation', `freed ${a.owner}`);
    if (state === 'asleep') {
      throw new AsleepError(`cannot ${op} ${a.owner}: tag "${a.tag}" is asleep; wake it first`);
    }
    if (
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      !Number.isSafeInteger(length) ||
      length < 0 ||
      offset + length > a.size
    ) {
      throw new InvalidArgumentError(
        'offset/length',
        `a range inside ${a.size} bytes`,
        `${offset}+${length}`,
      );
    }
  }

  #withStaging<T>(fn: (staging: HostBuffer) => Promise<T>): Promise<T> {
    const run = this.#io_lock.then(() => {
      this.#staging ??= HostBuffer.alloc(STAGING_BYTES, { device: this.device });
      return fn(this.#staging);
    });
    this.#io_lock = run.catch(() => {});
    return run;
  }
}

/** Runs a native call; native errors become typed XErrors (OOM carries tag and bytes). */
function call<T>(fn: () => T, tag?: string, bytes?: number): T {
  try {
    return fn();
  } catch (err) {
    const e = fromNativeError(err);
    if (e instanceof OutOfMemoryError && tag !== undefined && bytes !== undefined) {
      throw new OutOfMemoryError(e.message, bytes, tag);
    }
    throw e;
  }
}
