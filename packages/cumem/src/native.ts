import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNativeAddon } from '@x/core';

/** Opaque native handle (a Node-API External). */
export type NativeHandleLike = { readonly __cumemNative: unique symbol };

/** One sleep instruction for an allocation. offload: 0 discard, 1 host, 2 disk. */
export interface NativeSleepItem {
  va: bigint;
  offload: 0 | 1 | 2;
  path?: string;
  reuse: boolean;
}

/** One wake instruction for an allocation. */
export interface NativeWakeItem {
  va: bigint;
  restore: boolean;
  poison: boolean;
  keepBackup: boolean;
  retainHost: boolean;
}

/** The typed surface of x_cumem.node (native/cumem/binding/addon.cc). Internal. */
export interface CumemNative {
  createPool(device: number, capi: bigint): NativeHandleLike;
  granularity(pool: NativeHandleLike): number;
  alloc(pool: NativeHandleLike, bytes: bigint, mapNow: boolean, label: string): [bigint, number];
  free(pool: NativeHandleLike, va: bigint): void;
  setState(pool: NativeHandleLike, vas: bigint[], state: 0 | 1 | 2): void;
  sleep(pool: NativeHandleLike, items: NativeSleepItem[]): Promise<void>;
  wake(pool: NativeHandleLike, items: NativeWakeItem[]): Promise<void>;
  reserveBackups(pool: NativeHandleLike, vas: bigint[]): Promise<void>;
  dropBackup(pool: NativeHandleLike, va: bigint): void;
  markDirty(pool: NativeHandleLike, va: bigint): void;
  info(
    pool: NativeHandleLike,
    va: bigint,
  ): { size: number; padded: number; mapped: boolean; backedUp: number; hostReserved: number };
  injectMapFailure(pool: NativeHandleLike, after: number): void;
  shutdown(pool: NativeHandleLike): void;
}

/** Registry states of x/core_api.h. */
export const RANGE_UNMAPPED = 0;
export const RANGE_MAPPED = 1;
export const RANGE_DRAINING = 2;

const packageRoot = dirname(dirname(fileURLToPath(import.meta.url)));
let addon: CumemNative | undefined;

/** Loads x_cumem.node once. Internal. */
export function native(): CumemNative {
  addon ??= loadNativeAddon<CumemNative>({
    packageName: '@x/cumem',
    addonName: 'x_cumem',
    envVar: 'X_CUMEM_NATIVE',
    packageRoot,
  }).addon;
  return addon;
}
