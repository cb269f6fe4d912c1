/**
 * @x/core/testing — helpers for tests and benchmarks. Not for engine code: engine memory comes from
 * @x/cumem, which keeps addresses stable across sleep/wake.
 */
import { type DeviceName, parseDevice, requireCuda } from './device.js';
import { callNative } from './errors.js';
import { native, packageRoot } from './native.js';

/** Plain device memory (cuMemAlloc). */
export function deviceAllocForTesting(device: DeviceName, byteLength: number): bigint {
  const d = parseDevice(device);
  requireCuda(d);
  return callNative(() => native().deviceAllocForTesting(d.index, BigInt(byteLength)));
}

/** Frees memory from deviceAllocForTesting. */
export function deviceFreeForTesting(device: DeviceName, ptr: bigint): void {
  const d = parseDevice(device);
  callNative(() => native().deviceFreeForTesting(d.index, ptr));
}

/** The memory registry: every range x manages, with its state. */
export function registeredRanges(): Array<{
  device: number;
  base: bigint;
  size: bigint;
  state: 'mapped' | 'unmapped' | 'draining';
  owner: string;
}> {
  return callNative(() => native().ranges());
}

/** Path of the test-only second addon that uses the C function table (present in source builds). */
export function capiTestAddonPath(): string {
  return `${packageRoot}/build/Release/x_core_capi_test.node`;
}
