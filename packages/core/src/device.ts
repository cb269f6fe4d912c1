import { cpus, freemem, totalmem } from 'node:os';
import { callNative, InvalidArgumentError, NoDeviceError } from './errors.js';
import { native } from './native.js';

/** A device name: "cpu" or "cuda:N". */
export type DeviceName = 'cpu' | `cuda:${number}`;

/** A parsed device. `index` is -1 for the CPU (the native convention). */
export interface Device {
  readonly kind: 'cpu' | 'cuda';
  readonly index: number;
  readonly name: DeviceName;
}

const CPU: Device = Object.freeze({ kind: 'cpu', index: -1, name: 'cpu' });

/** Parses "cpu", "cuda" (= cuda:0) or "cuda:N"; a Device passes through. */
export function parseDevice(value: unknown, argument = 'device'): Device {
  if (typeof value === 'object' && value !== null && 'kind' in value && 'index' in value) {
    return value as Device;
  }
  if (value === 'cpu') return CPU;
  if (typeof value === 'string') {
    const m = /^cuda(?::(\d+))?$/.exec(value);
    if (m) {
      const index = m[1] === undefined ? 0 : Number(m[1]);
      return Object.freeze({ kind: 'cuda', index, name: `cuda:${index}` as DeviceName });
    }
  }
  throw new InvalidArgumentError(argument, '"cpu" or "cuda:N"', value);
}

/** What `devices()` reports for each device. */
export interface DeviceInfo {
  device: DeviceName;
  kind: 'cpu' | 'cuda';
  name: string;
  totalBytes: number;
  freeBytes: number;
  computeCapability?: string;
  multiprocessors?: number;
  virtualMemoryManagement?: boolean;
}

/** Whether CUDA can be used here, and if not, why. */
export interface CudaStatus {
  available: boolean;
  /** e.g. "13.0" */
  driverVersion: string | null;
  library: string | null;
  reason: string | null;
}

/** Reports the NVIDIA driver: available with its version, or the reason it is not. */
export function cudaStatus(): CudaStatus {
  const d = callNative(() => native().driverInfo());
  if (!d.available)
    return { available: false, driverVersion: null, library: null, reason: d.reason };
  const major = Math.floor(d.version / 1000);
  const minor = Math.floor((d.version % 1000) / 10);
  return { available: true, driverVersion: `${major}.${minor}`, library: d.library, reason: null };
}

/** All devices: the CPU always, then every CUDA GPU (none when CUDA is unavailable). */
export function devices(): DeviceInfo[] {
  const os = cpuInfo();
  const out: DeviceInfo[] = [os];
  if (!cudaStatus().available) return out;
  for (const g of callNative(() => native().cudaDevices())) {
    out.push({
      device: `cuda:${g.index}`,
      kind: 'cuda',
      name: g.name,
      totalBytes: g.totalBytes,
      freeBytes: g.freeBytes,
      computeCapability: g.computeCapability,
      multiprocessors: g.multiprocessors,
      virtualMemoryManagement: g.virtualMemoryManagement,
    });
  }
  return out;
}

/** Free and total memory of one device right now, in bytes. */
export function memoryInfo(device: DeviceName | Device): { freeBytes: number; totalBytes: number } {
  const d = parseDevice(device);
  if (d.kind === 'cpu') {
    const c = cpuInfo();
    return { freeBytes: c.freeBytes, totalBytes: c.totalBytes };
  }
  requireCuda(d);
  return callNative(() => native().cudaMemInfo(d.index));
}

/** Throws NoDeviceError unless CUDA is available (and, for a device, that it exists). */
export function requireCuda(device?: Device): void {
  const s = cudaStatus();
  if (!s.available) {
    throw new NoDeviceError(
      `${device ? device.name : 'CUDA'} is not available: ${s.reason ?? 'unknown reason'}`,
    );
  }
}

function cpuInfo(): DeviceInfo {
  const model = cpus()[0]?.model?.trim() || 'unknown CPU';
  return {
    device: 'cpu',
    kind: 'cpu',
    name: `${model} (${cpus().length} threads)`,
    totalBytes: totalmem(),
    freeBytes: freemem(),
  };
}
