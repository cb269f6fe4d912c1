import { InvalidArgumentError, type Tensor } from '@x/core';
import { DTYPE_CODE, type NativeOp, REDUCE_CODE } from './native.js';

// Argument checks and native descriptors shared by the gloo and NCCL groups.

/** Host arrays the promise forms accept (control-plane data). */
export type HostArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array;

/** Reductions of allReduce / reduceScatter. */
export type ReduceOp = keyof typeof REDUCE_CODE;

/** One side of a grouped point-to-point exchange (pipeline stages). */
export interface ExchangeItem<T extends Tensor | HostArray = Tensor | HostArray> {
  op: 'send' | 'recv';
  data: T;
  peer: number;
  /** Distinguishes several messages between the same two ranks (default 0). */
  tag?: number;
}

/** Options of a point-to-point operation. */
export interface P2POptions {
  tag?: number;
}

/** Narrows a reduction name or throws InvalidArgumentError. */
export function checkReduce(op: unknown): ReduceOp {
  if (typeof op !== 'string' || !Object.hasOwn(REDUCE_CODE, op)) {
    throw new InvalidArgumentError('op', `one of ${Object.keys(REDUCE_CODE).join(', ')}`, op);
  }
  return op as ReduceOp;
}

/** A descriptor with every field zero. */
export function emptyOp(kind: number): NativeOp {
  return {
    kind,
    in: undefined,
    out: undefined,
    count: 0,
    dtype: 0,
    reduce: 0,
    root: 0,
    tag: 0,
    timeoutMs: 0,
  };
}

/** A descriptor for an operation on one tensor. */
export function base(kind: number, t: Tensor): NativeOp {
  return { ...emptyOp(kind), in: t.ptr, count: t.numel, dtype: DTYPE_CODE[t.dtype] };
}

/** A p2p tag, or 0. */
export function checkTag(name: string, tag: unknown): number {
  if (tag === undefined) return 0;
  if (typeof tag !== 'number' || !Number.isInteger(tag) || tag < 0 || tag > 0xffffff) {
    throw new InvalidArgumentError(name, 'an integer in [0, 16777215]', tag);
  }
  return tag;
}
