import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capi, loadNativeAddon } from '@x/core';

/** A matrix argument as the addon reads it: row-major, rows of `cols` elements `ld` apart. */
export interface NativeMat {
  ptr: bigint;
  rows: number;
  cols: number;
  ld: number;
  bf16: boolean;
}

/** One row of a sampling batch as the addon reads it (see csrc/kernels.h SampleRow). */
export interface NativeSampleRow {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: bigint;
  step: bigint;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  promptIds?: Int32Array;
  outputIds?: Int32Array;
  biasIds?: Int32Array;
  biasValues?: Float32Array;
  suppressIds?: Int32Array;
}

type Params = Record<string, unknown>;

/** The typed surface of x_kernels.node (native/kernels/binding/addon.cc). Internal. */
export interface KernelsNative {
  init(capi: bigint): { threads: number; avx2: boolean };
  embedding(stream: bigint, params: Params): void;
  rmsNorm(stream: bigint, params: Params): void;
  rotaryEmbedding(stream: bigint, params: Params): void;
  siluAndMul(stream: bigint, params: Params): void;
  matmul(stream: bigint, params: Params): void;
  reshapeAndCache(stream: bigint, params: Params): void;
  pagedAttention(stream: bigint, params: Params): void;
  sample(stream: bigint, params: Params): void;
  sampleUniform(seed: bigint, step: bigint): number;
  beginCapture(stream: bigint): void;
  endCapture(stream: bigint, keep: boolean): object | undefined;
  graphLaunch(stream: bigint, graph: object): void;
  graphInfo(graph: object): { ops: number; ranges: number };
  graphDispose(graph: object): void;
}

const packageRoot = dirname(dirname(fileURLToPath(import.meta.url)));
let addon: KernelsNative | undefined;
let info: { threads: number; avx2: boolean } | undefined;

/** Loads x_kernels.node once and hands it @x/core's C table. Internal. */
export function native(): KernelsNative {
  if (addon === undefined) {
    const loaded = loadNativeAddon<KernelsNative>({
      packageName: '@x/kernels',
      addonName: 'x_kernels',
      envVar: 'X_KERNELS_NATIVE',
      packageRoot,
    }).addon;
    info = loaded.init(capi());
    addon = loaded;
  }
  return addon;
}

/** Threads the CPU kernels use and whether their AVX2+FMA paths are active. */
export function cpuKernelInfo(): { threads: number; avx2: boolean } {
  native();
  return { ...(info as { threads: number; avx2: boolean }) };
}
