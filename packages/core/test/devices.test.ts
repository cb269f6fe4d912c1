import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildInfo, cudaStatus, devices, memoryInfo } from '../src/index.js';

describe('devices', () => {
  it('always lists the CPU first, with memory figures', () => {
    const all = devices();
    expect(all[0]?.device).toBe('cpu');
    expect(all[0]?.totalBytes).toBeGreaterThan(0);
    expect(memoryInfo('cpu').freeBytes).toBeGreaterThan(0);
  });

  it('lists GPUs exactly when CUDA is available, else says why not', () => {
    const status = cudaStatus();
    const gpus = devices().filter((d) => d.kind === 'cuda');
    if (status.available) {
      expect(status.driverVersion).toMatch(/^\d+\.\d+$/);
      expect(gpus.length).toBeGreaterThan(0);
      expect(gpus[0]?.computeCapability).toMatch(/^\d+\.\d+$/);
    } else {
      expect(status.reason).toMatch(/driver|CUDA/);
      expect(gpus).toEqual([]);
    }
  });

  it('X_DISABLE_CUDA=1 hides the driver and the addon still loads', () => {
    const script = `import('${new URL('../dist/index.js', import.meta.url).href}').then((c) => {
      console.log(JSON.stringify({ cuda: c.cudaStatus(), n: c.devices().length }));
    });`;
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, X_DISABLE_CUDA: '1' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { cuda: { available: boolean; reason: string }; n: number };
    expect(out.cuda.available).toBe(false);
    expect(out.cuda.reason).toContain('X_DISABLE_CUDA');
    expect(out.n).toBe(1);
  });

  it('reports how the addon was built', () => {
    const b = buildInfo();
    expect(b.napiVersion).toBe(8);
    expect(b.capiVersion).toBe(1);
    expect(b.addonPath).toMatch(/x_core\.node$/);
    if (b.cudaKernels) expect(b.cudaArchitectures).toEqual(['sm_80', 'sm_90a', 'compute_90']);
  });

  it('a wrong X_CORE_NATIVE gives NativeLoadError listing what was tried', () => {
    const script = `import('${new URL('../dist/index.js', import.meta.url).href}').then((c) => {
      try { c.buildInfo(); console.log('loaded'); } catch (e) { console.log(e.code + '\\n' + e.message); }
    });`;
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, X_CORE_NATIVE: '/nonexistent/x_core.node' },
      encoding: 'utf8',
    });
    expect(r.stdout).toContain('X_NATIVE_LOAD');
    expect(r.stdout).toContain('/nonexistent/x_core.node: not found');
    expect(r.stdout).toContain('Possible fixes');
  });
});
