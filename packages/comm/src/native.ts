import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capi, loadNativeAddon } from '@x/core';

/** Opaque native handle (a Node-API External). */
export type NativeHandle = { readonly __commNative: unique symbol };

/** Operation codes of native/comm/csrc/gloo_group.h (OpKind). */
export const OP = {
  allReduce: 0,
  broadcast: 1,
  allGather: 2,
  reduceScatter: 3,
  send: 4,
  recv: 5,
  barrier: 6,
  exchange: 7,
} as const;

/** Element type codes of native/comm/csrc/reduce.h (DType). */
export const DTYPE_CODE = { f32: 0, f64: 1, i32: 2, i64: 3, u8: 4, f16: 5, bf16: 6 } as const;
/** Reduction codes of native/comm/csrc/reduce.h (ReduceOp). */
export const REDUCE_CODE = { sum: 0, min: 1, max: 2, prod: 3 } as const;

/** A buffer for native code: an address (tensor forms) or a TypedArray (host forms). */
export type NativeBuffer = bigint | ArrayBufferView | undefined;

/** One send or receive of an exchange, as native code reads it. */
export interface NativeP2P {
  send: boolean;
  ptr: NativeBuffer;
  count: number;
  dtype: number;
  peer: number;
  tag: number;
}

/** One operation, as native code reads it (OpDesc). */
export interface NativeOp {
  kind: number;
  in: NativeBuffer;
  out: NativeBuffer;
  count: number;
  dtype: number;
  reduce: number;
  root: number;
  tag: number;
  timeoutMs: number;
  items?: NativeP2P[];
}

/** The typed surface of x_comm.node (native/comm/binding/addon.cc). Internal. */
export interface CommNative {
  startStoreServer(host: string, port: number): { port: number; handle: NativeHandle };
  stopStoreServer(server: NativeHandle): void;
  connectTcpStore(host: string, port: number, timeoutMs: number): Promise<NativeHandle>;
  openFileStore(dir: string): NativeHandle;
  storeOp(
    store: NativeHandle,
    op: 'set' | 'get' | 'add' | 'cas' | 'delete' | 'wait',
    key: string | string[],
    a: unknown,
    b: unknown,
    timeoutMs: number,
  ): Promise<unknown>;
  createGroup(
    store: NativeHandle,
    prefix: string,
    rank: number,
    size: number,
    timeoutMs: number,
    host: string,
  ): NativeHandle;
  connectGroup(group: NativeHandle): Promise<void>;
  closeGroup(group: NativeHandle): void;
  enqueue(
    group: NativeHandle,
    capi: bigint,
    stream: bigint,
    op: NativeOp,
    wantPromise: boolean,
  ): Promise<void> | undefined;
  lastError(group: NativeHandle): Error | null;
  ncclStatus(): {
    available: boolean;
    library: string;
    version: string | null;
    reason: string | null;
  };
  createNcclGroup(
    store: NativeHandle,
    prefix: string,
    rank: number,
    size: number,
    device: number,
    timeoutMs: number,
  ): NativeHandle;
  connectNcclGroup(group: NativeHandle): Promise<void>;
  closeNcclGroup(group: NativeHandle): void;
  ncclEnqueue(group: NativeHandle, capi: bigint, stream: bigint, op: NativeOp): void;
  ncclWait(group: NativeHandle): Promise<void>;
  ncclLastError(group: NativeHandle): Error | null;
}

const packageRoot = dirname(dirname(fileURLToPath(import.meta.url)));
let addon: CommNative | undefined;

/** Loads x_comm.node once (per thread). Internal. */
export function native(): CommNative {
  if (addon === undefined) {
    // @x/core's addon first: an environment's cleanup hooks run in reverse order of registration,
    // so comm's (which aborts operations in flight on core's stream threads) then runs before
    // core's (which waits, bounded, for those threads) when a worker thread is torn down.
    capi();
    addon = loadNativeAddon<CommNative>({
      packageName: '@x/comm',
      addonName: 'x_comm',
      envVar: 'X_COMM_NATIVE',
      packageRoot,
    }).addon;
  }
  return addon;
}
