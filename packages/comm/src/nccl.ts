import { cudaStatus, NoDeviceError } from '@x/core';
import { native } from './native.js';

/** Whether NCCL can be used here, and if not, why (the library, the CUDA driver, or both). */
export interface NcclStatus {
  available: boolean;
  /** The library that was opened or tried ("libnccl.so.2", or $X_NCCL_LIBRARY). */
  library: string;
  /** e.g. "2.28.7"; null when the library could not be opened. */
  version: string | null;
  /** Why NCCL cannot be used; null when it can. */
  reason: string | null;
}

/** Opens libnccl (once per process, at run time) and reports whether groups can use it. */
export function ncclStatus(): NcclStatus {
  const lib = native().ncclStatus();
  const cuda = cudaStatus();
  const reasons = [lib.reason, cuda.available ? null : `no CUDA driver: ${cuda.reason}`].filter(
    (r): r is string => r !== null,
  );
  return {
    available: reasons.length === 0,
    library: lib.library,
    version: lib.version,
    reason: reasons.length === 0 ? null : reasons.join('; '),
  };
}

/**
 * The NCCL backend cannot run here: libnccl could not be opened (or is too old), or there is no
 * CUDA driver. `library` and `driver` say which; `code` is X_NO_DEVICE.
 */
export class NcclUnavailableError extends NoDeviceError {
  /** Why libnccl cannot be used, or null when it loaded. */
  readonly library: string | null;
  /** Why the CUDA driver cannot be used, or null when it loaded. */
  readonly driver: string | null;
  constructor(library: string | null, driver: string | null) {
    const parts = [library, driver === null ? null : `no CUDA driver: ${driver}`].filter(
      (p): p is string => p !== null,
    );
    super(
      `@x/comm: the NCCL backend is unavailable on this machine: ${parts.join('; ')}. ` +
        'Install NCCL 2.17+ (libnccl.so.2, or point $X_NCCL_LIBRARY at it) on a host with an NVIDIA GPU, or use backend "gloo" on CPU tensors.',
    );
    this.library = library;
    this.driver = driver;
  }
}

/** Throws NcclUnavailableError unless both libnccl and the CUDA driver are usable. */
export function requireNccl(): void {
  const lib = native().ncclStatus();
  const cuda = cudaStatus();
  if (lib.available && cuda.available) return;
  throw new NcclUnavailableError(lib.reason, cuda.available ? null : (cuda.reason ?? 'unknown'));
}
