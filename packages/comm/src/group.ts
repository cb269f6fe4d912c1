import { type CommError, capi, DisposedError, InvalidArgumentError, Stream, Tensor } from '@x/core';
import { callComm, settle, toCommError } from './errors.js';
import {
  DTYPE_CODE,
  type NativeBuffer,
  type NativeHandle,
  type NativeOp,
  native,
  OP,
  REDUCE_CODE,
} from './native.js';
import {
  base,
  checkReduce,
  checkTag,
  type ExchangeItem,
  emptyOp,
  type HostArray,
  type P2POptions,
  type ReduceOp,
} from './ops.js';
import type { Store } from './store.js';

export type { ExchangeItem, HostArray, P2POptions, ReduceOp } from './ops.js';

/** How a group was formed: shared by a world and its subgroups. @internal */
export interface GroupContext {
  store: Store;
  host: string;
  timeoutMs: number;
  /** World ranks of the members, indexed by group rank. */
  worldRanks: readonly number[];
}

function hostDType(a: HostArray, name: string): keyof typeof DTYPE_CODE {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof BigInt64Array) return 'i64';
  if (a instanceof Uint8Array) return 'u8';
  if (a instanceof Uint16Array) return 'bf16';
  throw new InvalidArgumentError(
    name,
    'a Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array or Uint16Array (bf16), or a Tensor with a Stream',
    a,
  );
}

/**
 * A process group over gloo (CPU). Two forms of every operation:
 * - tensor form: `g.allReduce(tensor, 'sum', stream)` enqueues on `stream` (a CPU stream; the
 *   argument is mandatory) and returns at once; it runs in stream order on that stream's thread and
 *   shows in `stream.completedOps()` as "comm.allReduce". A failure fails the stream (reported by its
 *   next synchronize) and is kept as a CommError in `lastError()`.
 * - host form: `await g.allReduce(float32Array, 'sum')` runs on the group's private stream and
 *   resolves with the result (in place where the op is in place) or rejects with CommError.
 * Every rank must issue a group's operations in the same order.
 */
export class ProcessGroup {
  readonly backend = 'gloo' as const;
  /** This process's rank in the group. */
  readonly rank: number;
  /** Number of ranks in the group. */
  readonly size: number;
  /** World ranks of the members, indexed by group rank. */
  readonly worldRanks: readonly number[];
  readonly #ctx: GroupContext;
  readonly #prefix: string;
  #handle: NativeHandle | undefined;
  #private: Stream | undefined;
  #subgroups = 0;
  #children: ProcessGroup[] = [];
  #onDispose: (() => void) | undefined;

  /** @internal */
  constructor(ctx: GroupContext, prefix: string, rank: number, handle: NativeHandle) {
    this.#ctx = ctx;
    this.#prefix = prefix;
    this.rank = rank;
    this.size = ctx.worldRanks.length;
    this.worldRanks = ctx.worldRanks;
    this.#handle = handle;
  }

  /** @internal Creates and connects a group (rendezvous through the store under `prefix`). */
  static async _connect(ctx: GroupContext, prefix: string, rank: number): Promise<ProcessGroup> {
    const h = callComm(() =>
      native().createGroup(
        ctx.store._handle(),
        `${ctx.store.prefix}${prefix}`,
        rank,
        ctx.worldRanks.length,
        ctx.timeoutMs,
        ctx.host,
      ),
    );
    await settle(native().connectGroup(h), new Error(), rank);
    return new ProcessGroup(ctx, prefix, rank, h);
  }

  /** @internal Runs `fn` when the group is disposed (the world closes its store server). */
  _onDispose(fn: () => void): void {
    this.#onDispose = fn;
  }

  /** Reduces `data` across ranks in place. */
  allReduce(data: Tensor, op: ReduceOp, stream: Stream): void;
  allReduce<T extends HostArray>(data: T, op?: ReduceOp): Promise<T>;
  allReduce(data: Tensor | HostArray, op: ReduceOp = 'sum', stream?: Stream): unknown {
    const reduce = REDUCE_CODE[checkReduce(op)];
    if (data instanceof Tensor) {
      const t = this.tensor('data', data);
      return this.enqueue({ ...base(OP.allReduce, t), reduce }, this.stream(stream));
    }
    const d = hostDType(data, 'data');
    return this.host({ ...hostBase(OP.allReduce, data, d), reduce }).then(() => data);
  }

  /** Copies `root`'s `data` to every rank, in place. */
  broadcast(data: Tensor, root: number, stream: Stream): void;
  broadcast<T extends HostArray>(data: T, root: number): Promise<T>;
  broadcast(data: Tensor | HostArray, root: number, stream?: Stream): unknown {
    this.checkRank('root', root);
    if (data instanceof Tensor) {
      const t = this.tensor('data', data);
      return this.enqueue({ ...base(OP.broadcast, t), root }, this.stream(stream));
    }
    const d = hostDType(data, 'data');
    return this.host({ ...hostBase(OP.broadcast, data, d), root }).then(() => data);
  }

  /** Gathers every rank's `input` into `output` (size × input elements, rank order). */
  allGather(input: Tensor, output: Tensor, stream: Stream): void;
  allGather<T extends HostArray>(input: T): Promise<T>;
  allGather(input: Tensor | HostArray, output?: Tensor, stream?: Stream): unknown {
    if (input instanceof Tensor) {
      const i = this.tensor('input', input);
      const o = this.tensor('output', output as Tensor, i.dtype, i.numel * this.size);
      return this.enqueue({ ...base(OP.allGather, i), out: o.ptr }, this.stream(stream));
    }
    const d = hostDType(input, 'input');
    const out = new (input.constructor as new (n: number) => HostArray)(input.length * this.size);
    return this.host({ ...hostBase(OP.allGather, input, d), out }).then(() => out);
  }

  /** Reduces `input` (size × n elements) across ranks; this rank gets chunk `rank` in `output`. */
  reduceScatter(input: Tensor, output: Tensor, op: ReduceOp, stream: Stream): void;
  reduceScatter<T extends HostArray>(input: T, op?: ReduceOp): Promise<T>;
  reduceScatter(
    input: Tensor | HostArray,
    outputOrOp?: Tensor | ReduceOp,
    op?: ReduceOp,
    stream?: Stream,
  ): unknown {
    if (input instanceof Tensor) {
      const reduce = REDUCE_CODE[checkReduce(op)];
      const o = this.tensor('output', outputOrOp as Tensor);
      const i = this.tensor('input', input, o.dtype, o.numel * this.size);
      const desc = { ...base(OP.reduceScatter, o), in: i.ptr, out: o.ptr, reduce };
      return this.enqueue(desc, this.stream(stream));
    }
    const reduce = REDUCE_CODE[checkReduce(outputOrOp ?? 'sum')];
    const d = hostDType(input, 'input');
    if (input.length % this.size !== 0) {
      throw new InvalidArgumentError(
        'input',
        `a length divisible by the group size ${this.size}`,
        input,
      );
    }
    const out = new (input.constructor as new (n: number) => HostArray)(input.length / this.size);
    const desc = { ...hostBase(OP.reduceScatter, input, d), count: out.length, out, reduce };
    return this.host(desc).then(() => out);
  }

  /** Sends `data` to `peer` (completes when the peer received it). */
  send(data: Tensor, peer: number, stream: Stream, options?: P2POptions): void;
  send(data: HostArray, peer: number, options?: P2POptions): Promise<void>;
  send(data: Tensor | HostArray, peer: number, a?: Stream | P2POptions, b?: P2POptions): unknown {
    return this.p2p(OP.send, data, peer, a, b);
  }

  /** Receives exactly `data`'s size from `peer` into `data`. */
  recv(data: Tensor, peer: number, stream: Stream, options?: P2POptions): void;
  recv<T extends HostArray>(data: T, peer: number, options?: P2POptions): Promise<T>;
  recv(data: Tensor | HostArray, peer: number, a?: Stream | P2POptions, b?: P2POptions): unknown {
    const r = this.p2p(OP.recv, data, peer, a, b);
    return r instanceof Promise ? r.then(() => data) : r;
  }

  /** Posts all sends and receives at once, then waits for all (no ordering deadlocks). */
  exchange(items: readonly ExchangeItem<Tensor>[], stream: Stream): void;
  exchange(items: readonly ExchangeItem<HostArray>[]): Promise<void>;
  exchange(items: readonly ExchangeItem[], stream?: Stream): unknown {
    if (!Array.isArray(items) || items.length === 0) {
      throw new InvalidArgumentError('items', 'a non-empty array of {op, data, peer}', items);
    }
    const tensors = items.every((it) => it.data instanceof Tensor);
    const p2p = items.map((it, i) => {
      if (it.op !== 'send' && it.op !== 'recv') {
        throw new InvalidArgumentError(`items[${i}].op`, '"send" or "recv"', it.op);
      }
      this.checkPeer(`items[${i}].peer`, it.peer);
      const tag = checkTag(`items[${i}].tag`, it.tag);
      if (it.data instanceof Tensor) {
        const t = this.tensor(`items[${i}].data`, it.data);
        return {
          send: it.op === 'send',
          ptr: t.ptr,
          count: t.numel,
          dtype: DTYPE_CODE[t.dtype],
          peer: it.peer,
          tag,
        };
      }
      const d = hostDType(it.data, `items[${i}].data`);
      return {
        send: it.op === 'send',
        ptr: it.data,
        count: it.data.length,
        dtype: DTYPE_CODE[d],
        peer: it.peer,
        tag,
      };
    });
    const desc: NativeOp = { ...emptyOp(OP.exchange), items: p2p };
    if (tensors) return this.enqueue(desc, this.stream(stream));
    if (items.some((it) => it.data instanceof Tensor)) {
      throw new InvalidArgumentError(
        'items',
        'all Tensors (with a Stream) or all host arrays',
        'a mix',
      );
    }
    return this.host(desc);
  }

  /** Waits until every rank reached the barrier. With a stream: enqueued on it. */
  barrier(stream: Stream): void;
  barrier(): Promise<void>;
  barrier(stream?: Stream): unknown {
    if (stream !== undefined) return this.enqueue(emptyOp(OP.barrier), this.stream(stream));
    return this.host(emptyOp(OP.barrier));
  }

  /**
   * A subgroup of `ranks` (ranks of this group). Every member calls newGroup with the same ranks,
   * and members call their newGroup/split in the same order. Non-members must not call it.
   */
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup> {
    if (!Array.isArray(ranks) || ranks.length === 0) {
      throw new InvalidArgumentError('ranks', 'a non-empty array of ranks', ranks);
    }
    for (const [i, r] of ranks.entries()) this.checkRank(`ranks[${i}]`, r);
    if (new Set(ranks).size !== ranks.length)
      throw new InvalidArgumentError('ranks', 'distinct ranks', ranks);
    const me = ranks.indexOf(this.rank);
    if (me < 0) {
      throw new InvalidArgumentError('ranks', `a list containing this rank (${this.rank})`, ranks);
    }
    const n = this.#subgroups++;
    return this.child(`${this.#prefix}sub${n}-${ranks.join('.')}/`, ranks, me);
  }

  /**
   * Splits the group: ranks passing the same `color` form one subgroup, ordered by (`key`, rank).
   * Every rank of this group calls split; a negative color joins no subgroup (resolves undefined).
   */
  async split(color: number, key: number = this.rank): Promise<ProcessGroup | undefined> {
    if (!Number.isInteger(color)) throw new InvalidArgumentError('color', 'an integer', color);
    if (!Number.isInteger(key)) throw new InvalidArgumentError('key', 'an integer', key);
    const all = await this.allGather(Int32Array.of(color, key));
    const n = this.#subgroups++;
    if (color < 0) return undefined;
    const members: Array<{ rank: number; key: number }> = [];
    for (let r = 0; r < this.size; r++) {
      if (all[2 * r] === color) members.push({ rank: r, key: all[2 * r + 1]! });
    }
    members.sort((a, b) => a.key - b.key || a.rank - b.rank);
    const ranks = members.map((m) => m.rank);
    return this.child(`${this.#prefix}split${n}-c${color}/`, ranks, ranks.indexOf(this.rank));
  }

  /** The first failure of a stream-ordered operation of this group, as CommError. */
  lastError(): CommError | undefined {
    const e = native().lastError(this.handle());
    return e === null ? undefined : (toCommError(e, undefined, this.rank) as CommError);
  }

  /**
   * Closes the connections (and subgroups'); rank 0 of a world also stops its store server. Never
   * waits for the network: an operation still on the wire fails at once with CommError (its peers
   * see the connections close), later ones fail as on a disposed group.
   */
  dispose(): void {
    if (this.#handle === undefined) return;
    for (const c of this.#children) c.dispose();
    native().closeGroup(this.#handle);
    this.#handle = undefined;
    this.#private?.dispose();
    this.#onDispose?.();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private async child(prefix: string, ranks: number[], me: number): Promise<ProcessGroup> {
    const ctx = { ...this.#ctx, worldRanks: ranks.map((r) => this.worldRanks[r]!) };
    const g = await ProcessGroup._connect(ctx, prefix, me);
    this.#children.push(g);
    return g;
  }

  private p2p(
    kind: number,
    data: Tensor | HostArray,
    peer: number,
    a: Stream | P2POptions | undefined,
    b: P2POptions | undefined,
  ): unknown {
    this.checkPeer('peer', peer);
    if (data instanceof Tensor) {
      const t = this.tensor('data', data);
      const tag = checkTag('options.tag', b?.tag);
      return this.enqueue({ ...base(kind, t), root: peer, tag }, this.stream(a as Stream));
    }
    const tag = checkTag('options.tag', (a as P2POptions | undefined)?.tag);
    const d = hostDType(data, 'data');
    return this.host({ ...hostBase(kind, data, d), root: peer, tag });
  }

  private enqueue(op: NativeOp, stream: Stream): void {
    const h = this.handle();
    callComm(() => native().enqueue(h, capi(), stream.nativeHandle, op, false), this.rank);
  }

  private host(op: NativeOp): Promise<void> {
    const h = this.handle();
    this.#private ??= Stream.create('cpu');
    const s = this.#private;
    // Native code copies op's arrays when it enqueues, runs the operation on the copies, and
    // writes the results back into the arrays (holding references to them) on this thread before
    // the promise settles: native threads never touch JS memory, so a worker thread torn down
    // mid-operation cannot have it written after it was freed.
    const p = callComm(() => native().enqueue(h, capi(), s.nativeHandle, op, true), this.rank);
    return settle(p as Promise<void>, new Error(), this.rank);
  }

  private stream(stream: unknown): Stream {
    if (!(stream instanceof Stream)) {
      throw new InvalidArgumentError(
        'stream',
        'a Stream (tensor operations take their stream explicitly)',
        stream,
      );
    }
    if (stream.device.kind !== 'cpu') {
      throw new InvalidArgumentError(
        'stream',
        'a CPU stream (gloo groups run on the CPU)',
        stream.device.name,
      );
    }
    return stream;
  }

  private tensor(name: string, t: unknown, dtype?: string, numel?: number): Tensor {
    if (!(t instanceof Tensor)) throw new InvalidArgumentError(name, 'a Tensor', t);
    if (t.device.kind !== 'cpu')
      throw new InvalidArgumentError(name, 'a CPU tensor (gloo)', t.toString());
    if (!t.isContiguous) throw new InvalidArgumentError(name, 'a contiguous tensor', t.toString());
    if (dtype !== undefined && t.dtype !== dtype)
      throw new InvalidArgumentError(`${name}.dtype`, dtype, t.dtype);
    if (numel !== undefined && t.numel !== numel)
      throw new InvalidArgumentError(`${name}.numel`, `${numel} elements`, t.numel);
    return t;
  }

  private checkRank(name: string, r: unknown): void {
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r >= this.size) {
      throw new InvalidArgumentError(name, `a rank in [0, ${this.size})`, r);
    }
  }

  private checkPeer(name: string, r: unknown): void {
    this.checkRank(name, r);
    if (r === this.rank)
      throw new InvalidArgumentError(name, `a rank other than this one (${this.rank})`, r);
  }

  private handle(): NativeHandle {
    if (this.#handle === undefined) throw new DisposedError(`ProcessGroup (rank ${this.rank})`);
    return this.#handle;
  }
}

function hostBase(kind: number, a: HostArray, d: keyof typeof DTYPE_CODE): NativeOp {
  return { ...emptyOp(kind), in: a as NativeBuffer, count: a.length, dtype: DTYPE_CODE[d] };
}
