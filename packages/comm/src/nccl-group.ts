import {
  type CommError,
  capi,
  type Device,
  DisposedError,
  InvalidArgumentError,
  Stream,
  Tensor,
} from '@x/core';
import { callComm, settle, toCommError } from './errors.js';
import { DTYPE_CODE, type NativeHandle, type NativeOp, native, OP, REDUCE_CODE } from './native.js';
import { base, checkReduce, type ExchangeItem, emptyOp, type ReduceOp } from './ops.js';
import type { Store } from './store.js';

/** How an NCCL group was formed: shared by a world and its subgroups. @internal */
export interface NcclGroupContext {
  store: Store;
  device: Device;
  timeoutMs: number;
  /** World ranks of the members, indexed by group rank. */
  worldRanks: readonly number[];
}

/**
 * A process group over NCCL on one CUDA device (one GPU per rank). Every operation takes CUDA
 * tensors of the group's device and the CUDA `Stream` it runs on (mandatory; there is no current
 * stream): the call enqueues the NCCL kernel on that stream and returns at once, so it orders with
 * the kernels and copies before and after it on the same stream, and with other streams through
 * events. Completion: `await g.wait()` (every operation enqueued so far finished) or the stream's
 * own synchronize/events.
 *
 * A watchdog thread watches every operation: one that has not completed `timeoutMs` after it was
 * enqueued (a rank never joined it, a peer died, the GPU hangs), or an asynchronous NCCL error,
 * aborts the communicator (ncclCommAbort) and fails the group with CommError { rank, op,
 * timeoutMs }: `wait()` rejects with it, `lastError()` returns it, and later calls throw at once.
 * Unlike the gloo group, NCCL does not check that ranks passed matching sizes: a mismatch hangs
 * until the watchdog fires, or corrupts the result.
 */
export class NcclGroup {
  readonly backend = 'nccl' as const;
  /** This process's rank in the group. */
  readonly rank: number;
  /** Number of ranks in the group. */
  readonly size: number;
  /** World ranks of the members, indexed by group rank. */
  readonly worldRanks: readonly number[];
  /** The CUDA device of this rank's tensors and streams. */
  readonly device: Device;
  /** Bound on init and on every operation, from its enqueue to its completion. */
  readonly timeoutMs: number;
  readonly #ctx: NcclGroupContext;
  readonly #prefix: string;
  #handle: NativeHandle | undefined;
  #subgroups = 0;
  #children: NcclGroup[] = [];
  #onDispose: (() => void) | undefined;

  private constructor(ctx: NcclGroupContext, prefix: string, rank: number, handle: NativeHandle) {
    this.#ctx = ctx;
    this.#prefix = prefix;
    this.rank = rank;
    this.size = ctx.worldRanks.length;
    this.worldRanks = ctx.worldRanks;
    this.device = ctx.device;
    this.timeoutMs = ctx.timeoutMs;
    this.#handle = handle;
  }

  /**
   * @internal Rendezvous under `prefix`, unique id through the store, communicator init and a
   * warm-up all-reduce, all on a native thread. Bounded: the rendezvous and the warm-up each by
   * timeoutMs; should NCCL's own init not return either, the promise still rejects after 3 ×
   * timeoutMs and the communicator is released when it does.
   */
  static async _connect(ctx: NcclGroupContext, prefix: string, rank: number): Promise<NcclGroup> {
    const h = callComm(
      () =>
        native().createNcclGroup(
          ctx.store._handle(),
          `${ctx.store.prefix}${prefix}`,
          rank,
          ctx.worldRanks.length,
          ctx.device.index,
          ctx.timeoutMs,
        ),
      rank,
    );
    const site = new Error();
    let timer: NodeJS.Timeout | undefined;
    const bound = 3 * ctx.timeoutMs;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        native().closeNcclGroup(h);
        reject(
          toCommError(
            Object.assign(
              new Error(
                `rank ${rank}: NCCL init did not finish within ${bound} ms (3 × timeoutMs)`,
              ),
              { code: 'X_COMM_ERROR', operation: 'init', rank, timeoutMs: ctx.timeoutMs },
            ),
            site,
            rank,
          ),
        );
      }, bound);
    });
    try {
      await Promise.race([settle(native().connectNcclGroup(h), site, rank), limit]);
    } catch (err) {
      native().closeNcclGroup(h);
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return new NcclGroup(ctx, prefix, rank, h);
  }

  /** @internal Runs `fn` when the group is disposed (the world closes its store server). */
  _onDispose(fn: () => void): void {
    this.#onDispose = fn;
  }

  /** Reduces `data` across ranks in place. */
  allReduce(data: Tensor, op: ReduceOp, stream: Stream): void {
    const reduce = REDUCE_CODE[checkReduce(op)];
    this.enqueue({ ...base(OP.allReduce, this.tensor('data', data)), reduce }, stream);
  }

  /** Copies `root`'s `data` to every rank, in place. */
  broadcast(data: Tensor, root: number, stream: Stream): void {
    this.checkRank('root', root);
    this.enqueue({ ...base(OP.broadcast, this.tensor('data', data)), root }, stream);
  }

  /** Gathers every rank's `input` into `output` (size × input elements, rank order). */
  allGather(input: Tensor, output: Tensor, stream: Stream): void {
    const i = this.tensor('input', input);
    const o = this.tensor('output', output, i.dtype, i.numel * this.size);
    this.enqueue({ ...base(OP.allGather, i), out: o.ptr }, stream);
  }

  /** Reduces `input` (size × n elements) across ranks; this rank gets chunk `rank` in `output`. */
  reduceScatter(input: Tensor, output: Tensor, op: ReduceOp, stream: Stream): void {
    const reduce = REDUCE_CODE[checkReduce(op)];
    const o = this.tensor('output', output);
    const i = this.tensor('input', input, o.dtype, o.numel * this.size);
    this.enqueue({ ...base(OP.reduceScatter, o), in: i.ptr, out: o.ptr, reduce }, stream);
  }

  /** Sends `data` to `peer`; the matching recv must name this rank and the same size. */
  send(data: Tensor, peer: number, stream: Stream): void {
    this.checkPeer('peer', peer);
    this.enqueue({ ...base(OP.send, this.tensor('data', data)), root: peer }, stream);
  }

  /** Receives `data`'s size from `peer` into `data`. */
  recv(data: Tensor, peer: number, stream: Stream): void {
    this.checkPeer('peer', peer);
    this.enqueue({ ...base(OP.recv, this.tensor('data', data)), root: peer }, stream);
  }

  /**
   * Grouped point-to-point (ncclGroupStart/End): every send and receive is posted at once, so
   * pipeline stages (send to the next stage, receive from the previous one) cannot deadlock on
   * ordering. Tags are not supported by NCCL: messages between two ranks match in call order.
   */
  exchange(items: readonly ExchangeItem<Tensor>[], stream: Stream): void {
    if (!Array.isArray(items) || items.length === 0) {
      throw new InvalidArgumentError('items', 'a non-empty array of {op, data, peer}', items);
    }
    const p2p = items.map((it, i) => {
      if (it?.op !== 'send' && it?.op !== 'recv') {
        throw new InvalidArgumentError(`items[${i}].op`, '"send" or "recv"', it?.op);
      }
      this.checkPeer(`items[${i}].peer`, it.peer);
      if (it.tag !== undefined && it.tag !== 0) {
        throw new InvalidArgumentError(
          `items[${i}].tag`,
          'no tag (NCCL matches in call order)',
          it.tag,
        );
      }
      const t = this.tensor(`items[${i}].data`, it.data);
      return {
        send: it.op === 'send',
        ptr: t.ptr,
        count: t.numel,
        dtype: DTYPE_CODE[t.dtype],
        peer: it.peer,
        tag: 0,
      };
    });
    this.enqueue({ ...emptyOp(OP.exchange), items: p2p }, stream);
  }

  /** Every rank reaches this point of its stream before any continues (a 1-byte all-reduce). */
  barrier(stream: Stream): void {
    this.enqueue(emptyOp(OP.barrier), stream);
  }

  /**
   * Resolves when every operation this group enqueued so far has completed on the GPU; rejects
   * with the group's CommError when the watchdog fired or NCCL failed. Never blocks the JS thread.
   */
  async wait(): Promise<void> {
    const site = new Error();
    await settle(native().ncclWait(this.handle()), site, this.rank);
  }

  /** The failure that ended the group (watchdog timeout, NCCL error), as CommError. */
  lastError(): CommError | undefined {
    const e = native().ncclLastError(this.handle());
    return e === null ? undefined : (toCommError(e, undefined, this.rank) as CommError);
  }

  /**
   * A subgroup of `ranks` (ranks of this group) with its own communicator: every member calls
   * newGroup with the same ranks, members create their subgroups in the same order, non-members
   * do not call it.
   */
  async newGroup(ranks: readonly number[]): Promise<NcclGroup> {
    if (!Array.isArray(ranks) || ranks.length === 0) {
      throw new InvalidArgumentError('ranks', 'a non-empty array of ranks', ranks);
    }
    for (const [i, r] of ranks.entries()) this.checkRank(`ranks[${i}]`, r);
    if (new Set(ranks).size !== ranks.length) {
      throw new InvalidArgumentError('ranks', 'distinct ranks', ranks);
    }
    const me = ranks.indexOf(this.rank);
    if (me < 0) {
      throw new InvalidArgumentError('ranks', `a list containing this rank (${this.rank})`, ranks);
    }
    const n = this.#subgroups++;
    return this.child(`${this.#prefix}sub${n}-${ranks.join('.')}/`, ranks, me);
  }

  /**
   * Splits the group: ranks passing the same `color` form one subgroup, ordered by (`key`, rank).
   * Every rank calls split (colors are exchanged through the store); a negative color joins none.
   */
  async split(color: number, key: number = this.rank): Promise<NcclGroup | undefined> {
    if (!Number.isInteger(color)) throw new InvalidArgumentError('color', 'an integer', color);
    if (!Number.isInteger(key)) throw new InvalidArgumentError('key', 'an integer', key);
    this.handle();
    const n = this.#subgroups++;
    const store = this.#ctx.store;
    const at = (r: number) => `${this.#prefix}split${n}/${r}`;
    const t = { timeoutMs: this.timeoutMs };
    await store.set(at(this.rank), `${color},${key}`, t);
    const all = await Promise.all(
      Array.from({ length: this.size }, (_, r) => store.getString(at(r), t)),
    );
    if (color < 0) return undefined;
    const members = all
      .map((v, rank) => ({ rank, c: Number(v.split(',')[0]), k: Number(v.split(',')[1]) }))
      .filter((m) => m.c === color)
      .sort((a, b) => a.k - b.k || a.rank - b.rank)
      .map((m) => m.rank);
    return this.child(`${this.#prefix}split${n}-c${color}/`, members, members.indexOf(this.rank));
  }

  /**
   * Destroys the communicator (and the subgroups'); aborts it when work is still pending, so it
   * never waits for peers. Rank 0 of a world also stops its store server: dispose it last. A
   * process that exits without disposing (an uncaught exception, process.exit) has its live
   * communicators aborted by @x/comm's exit handler before CUDA tears down (docs/comm.md).
   */
  dispose(): void {
    if (this.#handle === undefined) return;
    for (const c of this.#children) c.dispose();
    native().closeNcclGroup(this.#handle);
    this.#handle = undefined;
    this.#onDispose?.();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private async child(prefix: string, ranks: number[], me: number): Promise<NcclGroup> {
    const ctx = { ...this.#ctx, worldRanks: ranks.map((r) => this.worldRanks[r]!) };
    const g = await NcclGroup._connect(ctx, prefix, me);
    this.#children.push(g);
    return g;
  }

  private enqueue(op: NativeOp, stream: Stream): void {
    const h = this.handle();
    const s = this.stream(stream);
    callComm(() => native().ncclEnqueue(h, capi(), s.nativeHandle, op), this.rank);
  }

  private stream(stream: unknown): Stream {
    if (!(stream instanceof Stream)) {
      throw new InvalidArgumentError(
        'stream',
        `a CUDA Stream of ${this.device.name} (operations take their stream explicitly)`,
        stream,
      );
    }
    const s = stream;
    if (s.device.kind !== 'cuda' || s.device.index !== this.device.index) {
      throw new InvalidArgumentError(
        'stream',
        `a CUDA Stream of ${this.device.name} (the group's device)`,
        s.device.name,
      );
    }
    return s;
  }

  private tensor(name: string, t: unknown, dtype?: string, numel?: number): Tensor {
    if (!(t instanceof Tensor)) {
      throw new InvalidArgumentError(name, `a Tensor on ${this.device.name}`, t);
    }
    if (t.device.kind !== 'cuda' || t.device.index !== this.device.index) {
      throw new InvalidArgumentError(name, `a Tensor on ${this.device.name}`, t.toString());
    }
    if (!t.isContiguous) throw new InvalidArgumentError(name, 'a contiguous tensor', t.toString());
    if (dtype !== undefined && t.dtype !== dtype) {
      throw new InvalidArgumentError(`${name}.dtype`, dtype, t.dtype);
    }
    if (numel !== undefined && t.numel !== numel) {
      throw new InvalidArgumentError(`${name}.numel`, `${numel} elements`, t.numel);
    }
    return t;
  }

  private checkRank(name: string, r: unknown): void {
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r >= this.size) {
      throw new InvalidArgumentError(name, `a rank in [0, ${this.size})`, r);
    }
  }

  private checkPeer(name: string, r: unknown): void {
    this.checkRank(name, r);
    if (r === this.rank) {
      throw new InvalidArgumentError(name, `a rank other than this one (${this.rank})`, r);
    }
  }

  private handle(): NativeHandle {
    if (this.#handle === undefined) throw new DisposedError(`NcclGroup (rank ${this.rank})`);
    return this.#handle;
  }
}
