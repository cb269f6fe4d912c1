import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateMetrics, percentile } from './bench-serve.js';
import { CLI, type Served, startServe } from './serve-test-util.js';

describe('x bench serve', () => {
  it("computes vLLM's numbers: numpy percentiles, TPOT without the first token, peaks", () => {
    expect(percentile([1, 2, 3, 4], 99)).toBeCloseTo(3.97, 10);
    expect(percentile([5], 50)).toBe(5);
    const out = (startTime: number, ttft: number, itl: number[], outputTokens: number) => ({
      success: true,
      error: '',
      generatedText: '',
      outputTokens,
      promptLen: 10,
      ttft,
      itl,
      latency: ttft + itl.reduce((a, b) => a + b, 0),
      startTime,
      clientQueueTime: 0,
    });
    const m = calculateMetrics([out(0, 0.1, [0.05, 0.05], 3), out(0.15, 0.2, [0.1], 2)], 2);
    expect(m.completed).toBe(2);
    expect(m.totalOutput).toBe(5);
    expect(m.series.tpot!.map((x) => x.toFixed(6))).toEqual(['0.050000', '0.100000']);
    expect(m.series.itl).toEqual([0.05, 0.05, 0.1]);
    expect(m.peakConcurrency).toBe(2);
    expect(m.requestThroughput).toBe(1);
  });

  let server: Served;
  beforeAll(async () => {
    server = await startServe();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('prints the result block of vllm bench serve and saves the JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'x-bench-'));
    const port = new URL(server.url).port;
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'bench',
        'serve',
        '--port',
        port,
        '--num-prompts',
        '12',
        '--random-input-len',
        '24',
        '--random-output-len',
        '8',
        '--ignore-eos',
        '--max-concurrency',
        '4',
        '--save-result',
        '--result-dir',
        dir,
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const block = r.stdout.slice(
      r.stdout.indexOf('============ Serving Benchmark Result ============'),
    );
    const labels = block
      .split('\n')
      .filter((l) => l.includes(':'))
      .map((l) => l.slice(0, 40).trimEnd());
    expect(labels).toEqual([
      'Successful requests:',
      'Failed requests:',
      'Maximum request concurrency:',
      'Benchmark duration (s):',
      'Total input tokens:',
      'Total generated tokens:',
      'Request throughput (req/s):',
      'Output token throughput (tok/s):',
      'Peak output token throughput (tok/s):',
      'Peak concurrent requests:',
      'Total token throughput (tok/s):',
      ...['TTFT', 'TPOT', 'ITL', 'E2EL', 'Client Queue Time'].flatMap((n) => [
        `Mean ${n} (ms):`,
        `Median ${n} (ms):`,
        `P99 ${n} (ms):`,
      ]),
    ]);
    expect(block).toMatch(/^Successful requests: {21}12 {8}$/m);
    expect(block).toMatch(/^Total generated tokens: {18}96 {8}$/m);
    expect(block).toMatch(/^-+Time to First Token-+$/m);
    expect(block).toMatch(/\n={50}\nResults saved to /);
    const [file] = readdirSync(dir);
    const json = JSON.parse(readFileSync(join(dir, file!), 'utf8'));
    expect(json).toMatchObject({
      completed: 12,
      failed: 0,
      total_output_tokens: 96,
      max_concurrency: 4,
    });
    expect(json.p99_ttft_ms).toBeGreaterThan(0);
  });
});
