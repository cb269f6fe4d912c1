import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { initGroup } from './init-group.js';

// The NCCL backend on a machine that cannot run it: a typed error naming the missing library or
// driver, before any rendezvous, and no crash. Each case runs in a child process because libnccl
// and the driver are opened once per process (X_NCCL_LIBRARY / X_DISABLE_CUDA pick what it finds).
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));

interface Outcome {
  status: { available: boolean; library: string; version: string | null; reason: string | null };
  error: {
    name: string;
    code: string;
    isNoDevice: boolean;
    library: string | null;
    driver: string | null;
    message: string;
    ms: number;
  } | null;
}

function probe(env: Record<string, string>): Outcome {
  const script = `
    import { NoDeviceError } from '@x/core';
    import { initGroup, ncclStatus } from ${JSON.stringify(dist)};
    const status = ncclStatus();
    const t0 = Date.now();
    let error = null;
    try {
      // worldSize 2 and nobody else: a rendezvous would wait for the 30 s timeout.
      await initGroup({ backend: 'nccl', rank: 0, worldSize: 2, initMethod: 'tcp://127.0.0.1:1', timeoutMs: 30000 });
    } catch (e) {
      error = { name: e.name, code: e.code, isNoDevice: e instanceof NoDeviceError, library: e.library ?? null,
                driver: e.driver ?? null, message: e.message, ms: Date.now() - t0 };
    }
    console.log(JSON.stringify({ status, error }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    timeout: 20_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Outcome;
}

describe('initGroup({ backend: "nccl" }) without NCCL', () => {
  it('names a library that cannot be opened, at once and without a crash', () => {
    const { status, error } = probe({ X_NCCL_LIBRARY: '/nonexistent/libnccl.so.2' });
    expect(status).toMatchObject({ available: false, library: '/nonexistent/libnccl.so.2' });
    expect(status.version).toBeNull();
    expect(status.reason).toMatch(/dlopen \/nonexistent\/libnccl\.so\.2 failed.*X_NCCL_LIBRARY/);
    expect(error).toMatchObject({
      name: 'NcclUnavailableError',
      code: 'X_NO_DEVICE',
      isNoDevice: true,
    });
    expect(error!.library).toMatch(/\/nonexistent\/libnccl\.so\.2/);
    expect(error!.message).toMatch(
      /NCCL backend is unavailable on this machine: NCCL is not installed here/,
    );
    expect(error!.message).toMatch(/use backend "gloo"/);
    expect(error!.ms).toBeLessThan(5000);
  });

  it('names a library that lacks the NCCL entry points', () => {
    const { status, error } = probe({ X_NCCL_LIBRARY: 'libc.so.6' });
    expect(status.available).toBe(false);
    expect(status.reason).toMatch(/libc\.so\.6 lacks NCCL entry points x needs \(ncclGetVersion, /);
    expect(error?.name).toBe('NcclUnavailableError');
    expect(error!.library).toMatch(/ncclCommInitRankConfig/);
  });

  it('names the missing CUDA driver', () => {
    const { status, error } = probe({ X_DISABLE_CUDA: '1' });
    expect(status.available).toBe(false);
    expect(status.reason).toMatch(/no CUDA driver: CUDA disabled by X_DISABLE_CUDA=1/);
    expect(error).toMatchObject({ name: 'NcclUnavailableError', isNoDevice: true });
    expect(error!.driver).toBe('CUDA disabled by X_DISABLE_CUDA=1');
    expect(error!.message).toMatch(/no CUDA driver: CUDA disabled by X_DISABLE_CUDA=1/);
  });

  it('rejects a CPU device for the nccl backend and a CUDA device for gloo', async () => {
    await expect(
      initGroup({ backend: 'nccl', rank: 0, worldSize: 1, device: 'cpu' }),
    ).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(
      initGroup({ backend: 'gloo', rank: 0, worldSize: 1, device: 'cuda:0' }),
    ).rejects.toThrow(/"cpu" for the gloo backend/);
  });
});
