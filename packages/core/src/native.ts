import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNativeAddon } from './load-native.js';

/** Opaque native handles (External values); never inspected in JS. */
export type NativeHandle = { readonly __native: unique symbol };

/** The typed surface of x_core.node (see native/core/binding/addon.cc). Internal. */
export interface CoreNative {
  buildInfo(): {
    cudaKernels: boolean;
    cudaArchitectures: string;
    napiVersion: number;
    capiVersion: number;
    compiler?: string;
  };
  driverInfo(): { available: boolean; library: string; version: number; reason: string };
  cudaDevices(): Array<{
    index: number;
    name: string;
    totalBytes: number;
    freeBytes: number;
    computeCapability: string;
    multiprocessors: number;
    virtualMemoryManagement: boolean;
  }>;
  cudaMemInfo(device: number): { freeBytes: number; totalBytes: number };
  createStream(device: number, recordOps: boolean): NativeHandle;
  handle(h: NativeHandle): bigint;
  streamCopy(s: NativeHandle, dst: bigint, src: bigint, bytes: bigint): void;
  streamFill(s: NativeHandle, dst: bigint, bytes: bigint, pattern: bigint, width: number): void;
  streamDelay(s: NativeHandle, ns: bigint): void;
  streamRecord(s: NativeHandle, e: NativeHandle): void;
  streamWaitEvent(s: NativeHandle, e: NativeHandle): void;
  streamSynchronizeSync(s: NativeHandle, timeoutMs: number): void;
  streamWait(s: NativeHandle): Promise<void>;
  streamCompletedOps(s: NativeHandle): string[];
  streamClose(s: NativeHandle): void;
  streamBeginCapture(s: NativeHandle, mode: number): void;
  streamEndCapture(s: NativeHandle): [NativeHandle, number, number];
  streamCapturing(s: NativeHandle): boolean;
  graphLaunch(g: NativeHandle, s: NativeHandle): void;
  graphDispose(g: NativeHandle): void;
  createEvent(device: number, timing: boolean): NativeHandle;
  eventQuery(e: NativeHandle): boolean;
  eventWait(e: NativeHandle): Promise<void>;
  eventSynchronizeSync(e: NativeHandle, timeoutMs: number): void;
  eventElapsed(start: NativeHandle, end: NativeHandle): number;
  hostAlloc(device: number, bytes: bigint): [bigint, ArrayBuffer, NativeHandle];
  hostFree(buffer: ArrayBuffer, block: NativeHandle): void;
  deviceAllocForTesting(device: number, bytes: bigint): bigint;
  deviceFreeForTesting(device: number, ptr: bigint): void;
  capi(): bigint;
  ranges(): Array<{
    device: number;
    base: bigint;
    size: bigint;
    state: 'mapped' | 'unmapped' | 'draining';
    owner: string;
  }>;
}

/** The package root: dist/ (built) and src/ (tests) both sit one level below it. */
export const packageRoot = dirname(dirname(fileURLToPath(import.meta.url)));

let loaded: { path: string; addon: CoreNative } | undefined;

/** Loads x_core.node once (lazily, so importing @x/core never fails by itself). Internal. */
export function native(): CoreNative {
  if (!loaded) {
    loaded = loadNativeAddon<CoreNative>({
      packageName: '@x/core',
      addonName: 'x_core',
      envVar: 'X_CORE_NATIVE',
      packageRoot,
    });
  }
  return loaded.addon;
}

/** Where x_core.node was loaded from. */
export function nativePath(): string {
  native();
  return loaded!.path;
}
