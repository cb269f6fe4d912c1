import { createRequire } from 'node:module';
import { join } from 'node:path';
import { callNative } from './errors.js';
import { native, nativePath, packageRoot } from './native.js';

/** How this build of @x/core was compiled. */
export interface BuildInfo {
  /** CUDA kernels compiled in (nvcc was found at build time). */
  cudaKernels: boolean;
  /** e.g. ["sm_80", "sm_90a", "compute_90"] (compute_* = PTX for newer GPUs). */
  cudaArchitectures: string[];
  napiVersion: number;
  /** Version of the C function table (x/core_api.h). */
  capiVersion: number;
  compiler: string;
  /** Where the addon was loaded from. */
  addonPath: string;
}

/** Reports how the native addon was built and where it was loaded from. */
export function buildInfo(): BuildInfo {
  const b = callNative(() => native().buildInfo());
  return {
    cudaKernels: b.cudaKernels,
    cudaArchitectures: b.cudaArchitectures ? b.cudaArchitectures.split(',') : [],
    napiVersion: b.napiVersion,
    capiVersion: b.capiVersion,
    compiler: b.compiler ?? 'unknown',
    addonPath: nativePath(),
  };
}

/** Address of the `x_core_api` C function table (x/core_api.h), for other native addons. */
export function capi(): bigint {
  return callNative(() => native().capi());
}

/** Version of the C function table this build provides. */
export const CAPI_VERSION = 1;

/** The version of @x/core. */
export const version: string = (
  createRequire(join(packageRoot, 'package.json'))('./package.json') as { version: string }
).version;
