import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

function runCli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env });
}

describe('x info --json', () => {
  it('reports build, driver and devices as one JSON object', () => {
    // X_DISABLE_CUDA hides any driver, so the test means the same on GPU and GPU-less machines.
    const result = runCli(['info', '--json'], { ...process.env, X_DISABLE_CUDA: '1' });
    expect(result.status, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout);
    expect(Object.keys(report).sort()).toEqual(['build', 'devices', 'driver']);
    expect(typeof report.build.cudaKernels).toBe('boolean');
    expect(Array.isArray(report.build.cudaArchitectures)).toBe(true);
    expect(report.driver.available).toBe(false);
    expect(typeof report.driver.reason).toBe('string');
    expect(report.driver.reason.length).toBeGreaterThan(0);
    expect(report.devices[0].device).toBe('cpu');
    expect(report.devices[0].kind).toBe('cpu');
  });

  it('gives a reason whenever the driver is unavailable', () => {
    // No override: on a GPU-less machine this is the real "no driver" path.
    const result = runCli(['info', '--json']);
    expect(result.status, result.stderr).toBe(0);
    const { driver } = JSON.parse(result.stdout);
    if (driver.available) {
      expect(driver.driverVersion).toMatch(/^\d+\.\d+$/);
    } else {
      expect(driver.reason).toEqual(expect.stringMatching(/\S/));
    }
  });
});

describe('x info', () => {
  it('prints aligned sections for humans', () => {
    const result = runCli(['info'], { ...process.env, X_DISABLE_CUDA: '1' });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^x \S+ \(@x\/core \S+\)/);
    expect(result.stdout).toContain('\nbuild\n');
    expect(result.stdout).toContain('\ndriver\n');
    expect(result.stdout).toMatch(/\n {2}cpu +/);
  });
});

describe('x', () => {
  it('prints its version', () => {
    const result = runCli(['--version']);
    expect(result.status).toBe(0);
    expect(result.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('rejects an unknown command with a helpful message', () => {
    const result = runCli(['nonsense']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("unknown command 'nonsense'");
    expect(result.stderr).toContain('x --help');
  });

  it('has serve and bench serve with vLLM flag names', () => {
    const serve = runCli(['serve', '--help']);
    expect(serve.status).toBe(0);
    for (const flag of [
      '--model',
      '--host',
      '--port',
      '--device',
      '--dtype',
      '--max-model-len',
      '--max-num-seqs',
      '--max-num-batched-tokens',
      '--block-size',
      '--gpu-memory-utilization',
      '--enable-prefix-caching',
      '--enable-sleep-mode',
      '--api-key',
      '--served-model-name',
      '--seed',
    ]) {
      expect(serve.stdout).toContain(flag);
    }
    const bench = runCli(['bench', 'serve', '--help']);
    expect(bench.status).toBe(0);
    for (const flag of [
      '--random-input-len',
      '--random-output-len',
      '--max-concurrency',
      '--request-rate',
      '--num-prompts',
      '--ignore-eos',
      '--seed',
    ]) {
      expect(bench.stdout).toContain(flag);
    }
  });
});
