/**
 * @x/core/testing — helpers for tests and benchmarks. Not for engine code: engine memory comes from
 * @x/cumem, which keeps addresses stable across sleep/wake.
 */
import { spawn } from 'node:child_process';
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

/** What {@link runNodeChild} saw of the child: exit code, signal and its output. */
export interface NodeChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `source` as an ES module in a new Node process (teardown tests: a crash shows as a signal,
 * not as a failure of the test runner). Rejects when the child does not exit within `timeoutMs`
 * (it is killed with SIGKILL) or cannot be started.
 */
export function runNodeChild(source: string, timeoutMs = 60_000): Promise<NodeChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
