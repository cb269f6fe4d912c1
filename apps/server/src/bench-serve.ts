import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError } from '@x/core';
import { resolveModelDir, Tokenizer } from '@x/engine';
import type { Command } from 'commander';
import {
  type RequestConfig,
  type RequestOutput,
  randomDataset,
  rng,
  type SampleRequest,
  sendRequest,
} from './bench-serve-client.js';

/** `x bench serve` flags (vLLM's names). */
interface BenchFlags {
  backend: string;
  baseUrl?: string;
  host: string;
  port: string;
  endpoint?: string;
  model?: string;
  tokenizer?: string;
  datasetName: string;
  numPrompts: string;
  randomInputLen: string;
  randomOutputLen: string;
  randomRangeRatio: string;
  randomPrefixLen: string;
  inputLen?: string;
  outputLen?: string;
  requestRate: string;
  burstiness: string;
  maxConcurrency?: string;
  seed: string;
  ignoreEos?: boolean;
  logprobs?: string;
  percentileMetrics: string;
  metricPercentiles: string;
  saveResult?: boolean;
  resultDir?: string;
  resultFilename?: string;
  requestTimeout: string;
}

/** numpy's default (linear) percentile. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  const at = (p / 100) * (s.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return s[lo]! + (s[hi]! - s[lo]!) * (at - lo);
}

const mean = (v: readonly number[]) =>
  v.length === 0 ? 0 : v.reduce((a, b) => a + b, 0) / v.length;
const std = (v: readonly number[]) => {
  const m = mean(v);
  return Math.sqrt(mean(v.map((x) => (x - m) ** 2)));
};

/** The metrics vLLM's calculate_metrics computes, from the same per-request measurements. */
export function calculateMetrics(outputs: readonly RequestOutput[], durationS: number) {
  const ok = outputs.filter((o) => o.success);
  const outputLens = ok.map((o) => o.outputTokens || 1);
  const tpots: number[] = [];
  ok.forEach((o, i) => {
    if (outputLens[i]! > 1) tpots.push((o.latency - o.ttft) / (outputLens[i]! - 1));
  });
  const totalInput = ok.reduce((a, o) => a + o.promptLen, 0);
  const totalOutput = outputLens.reduce((a, b) => a + b, 0);
  // Peak output tokens per second (1 s buckets) and peak concurrency (sweep over [start, end)).
  let peakTokens = 0;
  let peakConcurrency = 0;
  if (ok.length > 0) {
    const t0 = Math.min(...ok.map((o) => o.startTime));
    const buckets = new Map<number, number>();
    const events: Array<[number, number]> = [];
    for (const o of ok) {
      let t = o.startTime + o.ttft;
      const times = [t];
      for (const d of o.itl) {
        t += d;
        times.push(t);
      }
      for (const x of times) {
        const b = Math.floor(x - t0);
        buckets.set(b, (buckets.get(b) ?? 0) + 1);
      }
      events.push([o.startTime, 1], [o.startTime + o.latency, -1]);
    }
    peakTokens = Math.max(0, ...buckets.values());
    events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let cur = 0;
    for (const [, d] of events) {
      cur += d;
      peakConcurrency = Math.max(peakConcurrency, cur);
    }
  }
  return {
    completed: ok.length,
    failed: outputs.length - ok.length,
    totalInput,
    totalOutput,
    requestThroughput: ok.length / durationS,
    outputThroughput: totalOutput / durationS,
    totalTokenThroughput: (totalInput + totalOutput) / durationS,
    peakTokens,
    peakConcurrency,
    series: {
      ttft: ok.map((o) => o.ttft),
      tpot: tpots,
      itl: ok.flatMap((o) => o.itl),
      e2el: ok.map((o) => o.latency),
      client_queue_time: ok.map((o) => o.clientQueueTime),
    } as Record<string, number[]>,
  };
}

const HEADERS: Record<string, [string, string]> = {
  ttft: ['TTFT', 'Time to First Token'],
  tpot: ['TPOT', 'Time per Output Token (excl. 1st token)'],
  itl: ['ITL', 'Inter-token Latency'],
  e2el: ['E2EL', 'End-to-end Latency'],
  client_queue_time: ['Client Queue Time', 'Client-side Queueing'],
};

/** Python's "{:<40} {:<10}" and "{s:{c}^{n}}" formats. */
const row = (label: string, value: string) => `${label.padEnd(40)} ${value.padEnd(10)}`;
const center = (s: string, fill: string) => {
  const left = Math.floor((50 - s.length) / 2);
  return fill.repeat(Math.max(0, left)) + s + fill.repeat(Math.max(0, 50 - s.length - left));
};

/** The result block, line for line as `vllm bench serve` prints it; and the result JSON. */
export function formatResult(
  m: ReturnType<typeof calculateMetrics>,
  o: {
    durationS: number;
    maxConcurrency: number | undefined;
    requestRate: number;
    metrics: string[];
    percentiles: number[];
  },
): { text: string; json: Record<string, number> } {
  const lines = [center(' Serving Benchmark Result ', '=')];
  const json: Record<string, number> = {
    duration: o.durationS,
    completed: m.completed,
    failed: m.failed,
    total_input_tokens: m.totalInput,
    total_output_tokens: m.totalOutput,
    request_throughput: m.requestThroughput,
    output_throughput: m.outputThroughput,
    total_token_throughput: m.totalTokenThroughput,
    max_output_tokens_per_s: m.peakTokens,
    max_concurrent_requests: m.peakConcurrency,
  };
  lines.push(row('Successful requests:', String(m.completed)));
  lines.push(row('Failed requests:', String(m.failed)));
  if (o.maxConcurrency !== undefined)
    lines.push(row('Maximum request concurrency:', String(o.maxConcurrency)));
  if (Number.isFinite(o.requestRate))
    lines.push(row('Request rate configured (RPS):', o.requestRate.toFixed(2)));
  lines.push(row('Benchmark duration (s):', o.durationS.toFixed(2)));
  lines.push(row('Total input tokens:', String(m.totalInput)));
  lines.push(row('Total generated tokens:', String(m.totalOutput)));
  lines.push(row('Request throughput (req/s):', m.requestThroughput.toFixed(2)));
  lines.push(row('Output token throughput (tok/s):', m.outputThroughput.toFixed(2)));
  lines.push(row('Peak output token throughput (tok/s):', m.peakTokens.toFixed(2)));
  lines.push(row('Peak concurrent requests:', m.peakConcurrency.toFixed(2)));
  lines.push(row('Total token throughput (tok/s):', m.totalTokenThroughput.toFixed(2)));
  const names = [...o.metrics.filter((x) => x !== 'client_queue_time')];
  if (o.maxConcurrency !== undefined) names.push('client_queue_time');
  for (const key of names) {
    const [name, header] = HEADERS[key]!;
    const v = m.series[key]!.map((x) => x * 1000);
    lines.push(center(header, '-'));
    const med = percentile(v, 50);
    lines.push(row(`Mean ${name} (ms):`, mean(v).toFixed(2)));
    lines.push(row(`Median ${name} (ms):`, med.toFixed(2)));
    json[`mean_${key}_ms`] = mean(v);
    json[`median_${key}_ms`] = med;
    json[`std_${key}_ms`] = std(v);
    for (const p of o.percentiles) {
      const word = Number.isInteger(p) ? String(p) : String(p);
      const value = percentile(v, p);
      lines.push(row(`P${word} ${name} (ms):`, value.toFixed(2)));
      json[`p${word}_${key}_ms`] = value;
    }
  }
  lines.push('='.repeat(50));
  return { text: lines.join('\n'), json };
}

/** Gamma(shape, scale) by Marsaglia–Tsang (shape < 1 boosted), on a seeded uniform source. */
function gamma(rand: () => number, shape: number, scale: number): number {
  if (shape < 1) return gamma(rand, shape + 1, scale) * rand() ** (1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      const u1 = rand() || 1e-12;
      const u2 = rand();
      x = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rand();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) {
      return d * v * scale;
    }
  }
}

function num(flag: string, v: string, ok: (x: number) => boolean, want: string): number {
  const n = v === 'inf' ? Number.POSITIVE_INFINITY : Number(v);
  if (v.trim() === '' || Number.isNaN(n) || !ok(n))
    throw new InvalidArgumentError(`--${flag}`, want, v);
  return n;
}

async function runBench(flags: BenchFlags): Promise<void> {
  if (flags.datasetName !== 'random') {
    throw new InvalidArgumentError(
      '--dataset-name',
      '"random" (the only dataset x bench serve has)',
      flags.datasetName,
    );
  }
  const backend = flags.backend as RequestConfig['backend'];
  if (!['openai', 'vllm', 'openai-chat'].includes(backend)) {
    throw new InvalidArgumentError('--backend', 'openai, vllm or openai-chat', flags.backend);
  }
  const int = (f: string, v: string, min: number) =>
    num(f, v, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
  const base = flags.baseUrl ?? `http://${flags.host}:${int('port', flags.port, 1)}`;
  const endpoint =
    flags.endpoint ?? (backend === 'openai-chat' ? '/v1/chat/completions' : '/v1/completions');
  const apiKey = process.env.OPENAI_API_KEY;
  const models = (await (
    await fetch(`${base}/v1/models`, { signal: AbortSignal.timeout(30_000) })
  ).json()) as {
    data: Array<{ id: string; root: string }>;
  };
  const model = flags.model ?? models.data[0]!.id;
  const tokDir =
    flags.tokenizer ??
    (existsSync(models.data[0]!.root) ? models.data[0]!.root : resolveModelDir());
  const tokenizer = await Tokenizer.load(tokDir);
  const seed = int('seed', flags.seed, 0);
  const numPrompts = int('num-prompts', flags.numPrompts, 1);
  const requests = await randomDataset(tokenizer, {
    numPrompts,
    inputLen: int('random-input-len', flags.inputLen ?? flags.randomInputLen, 1),
    outputLen: int('random-output-len', flags.outputLen ?? flags.randomOutputLen, 1),
    rangeRatio: num(
      'random-range-ratio',
      flags.randomRangeRatio,
      (x) => x >= 0 && x < 1,
      'a number in [0, 1)',
    ),
    prefixLen: int('random-prefix-len', flags.randomPrefixLen, 0),
    seed,
  });
  const rate = num('request-rate', flags.requestRate, (x) => x > 0, 'a number > 0 or inf');
  const burstiness = num('burstiness', flags.burstiness, (x) => x > 0, 'a number > 0');
  const maxConcurrency =
    flags.maxConcurrency === undefined
      ? undefined
      : int('max-concurrency', flags.maxConcurrency, 1);
  const metrics = flags.percentileMetrics.split(',').map((s) => s.trim());
  for (const m of metrics) {
    if (!(m in HEADERS))
      throw new InvalidArgumentError('--percentile-metrics', 'a list of ttft, tpot, itl, e2el', m);
  }
  const percentiles = flags.metricPercentiles
    .split(',')
    .map((s) => num('metric-percentiles', s, (x) => x >= 0 && x <= 100, 'percentiles in [0, 100]'));
  const config: RequestConfig = {
    apiUrl: base + endpoint,
    model,
    backend,
    ignoreEos: flags.ignoreEos === true,
    logprobs: flags.logprobs === undefined ? undefined : int('logprobs', flags.logprobs, 0),
    apiKey,
    timeoutMs: int('request-timeout', flags.requestTimeout, 1) * 1000,
  };
  const say = (s: string) => process.stdout.write(`${s}\n`);
  say('Starting initial single prompt test run...');
  const test = await sendRequest(config, requests[0]!);
  if (!test.success) throw new Error(`Initial test run failed: ${test.error}`);
  say('Initial test run completed. Starting main benchmark run...');
  say(`Traffic request rate: ${Number.isFinite(rate) ? rate : 'inf'}`);
  say(
    `Burstiness factor: ${burstiness} (${burstiness === 1 ? 'Poisson process' : 'Gamma distribution'})`,
  );
  say(`Maximum request concurrency: ${maxConcurrency ?? 'None'}`);

  const rand = rng(seed + 1);
  let slots = maxConcurrency ?? Number.POSITIVE_INFINITY;
  const waiting: Array<() => void> = [];
  const acquire = (): Promise<void> => {
    if (slots > 0) {
      slots--;
      return Promise.resolve();
    }
    return new Promise<void>((r) => waiting.push(r));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else slots++;
  };
  const limited = async (r: SampleRequest) => {
    const arrival = performance.now() / 1000;
    await acquire();
    try {
      const o = await sendRequest(config, r);
      o.clientQueueTime = o.startTime - arrival;
      return o;
    } finally {
      release();
    }
  };
  const started = performance.now();
  const tasks: Array<Promise<RequestOutput>> = [];
  for (const r of requests) {
    tasks.push(limited(r));
    if (Number.isFinite(rate)) {
      const wait = gamma(rand, burstiness, 1 / (rate * burstiness));
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
  }
  const outputs = await Promise.all(tasks);
  const durationS = (performance.now() - started) / 1000;
  for (const [i, o] of outputs
    .filter((x) => !x.success)
    .slice(0, 10)
    .entries())
    say(`Error ${i}: ${o.error}`);
  const m = calculateMetrics(outputs, durationS);
  const { text, json } = formatResult(m, {
    durationS,
    maxConcurrency,
    requestRate: rate,
    metrics,
    percentiles,
  });
  say(text);
  if (flags.saveResult) {
    const name =
      flags.resultFilename ??
      `${backend}-${Number.isFinite(rate) ? rate : 'inf'}qps${maxConcurrency ? `-concurrency${maxConcurrency}` : ''}-${model.split('/').at(-1)}-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}.json`;
    const path = flags.resultDir ? join(flags.resultDir, name) : name;
    if (flags.resultDir) mkdirSync(flags.resultDir, { recursive: true });
    writeFileSync(
      path,
      JSON.stringify(
        {
          backend,
          model_id: model,
          num_prompts: numPrompts,
          request_rate: Number.isFinite(rate) ? rate : 'inf',
          burstiness,
          max_concurrency: maxConcurrency ?? null,
          ...json,
        },
        null,
        2,
      ),
    );
    say(`Results saved to ${path}`);
  }
}

/** Registers `x bench serve`: vLLM's serving benchmark client against a running server. */
export function registerBenchServe(program: Command): void {
  const bench =
    program.commands.find((c) => c.name() === 'bench') ??
    program
      .command('bench')
      .description('benchmarks (serve: the online serving client of vllm bench serve)');
  bench
    .command('serve')
    .description(
      'benchmark a running OpenAI-compatible server (vllm bench serve protocol and output)',
    )
    .option('--backend <backend>', 'openai / vllm (completions) or openai-chat', 'vllm')
    .option('--base-url <url>', 'server base URL (instead of --host/--port)')
    .option('--host <host>', 'server host', '127.0.0.1')
    .option('--port <port>', 'server port', '8000')
    .option('--endpoint <path>', 'API endpoint (default by backend)')
    .option('--model <name>', 'model name (default: the first of /v1/models)')
    .option('--tokenizer <dir>', 'tokenizer directory (default: the served model directory)')
    .option('--dataset-name <name>', 'dataset', 'random')
    .option('--num-prompts <n>', 'number of prompts', '1000')
    .option('--random-input-len <n>', 'input tokens per prompt', '1024')
    .option('--random-output-len <n>', 'output tokens per request', '128')
    .option('--random-range-ratio <r>', 'lengths vary uniformly in len × [1 − r, 1 + r]', '0.0')
    .option('--random-prefix-len <n>', 'shared random prefix tokens', '0')
    .option('--input-len <n>', 'alias of --random-input-len')
    .option('--output-len <n>', 'alias of --random-output-len')
    .option('--request-rate <rps>', 'requests per second (inf: all at once)', 'inf')
    .option('--burstiness <f>', '1 = Poisson arrivals; other values: gamma', '1.0')
    .option('--max-concurrency <n>', 'most requests in flight')
    .option('--seed <n>', 'dataset and arrival seed', '0')
    .option('--ignore-eos', 'generate exactly the output length')
    .option('--logprobs <n>', 'log-probabilities per token')
    .option('--percentile-metrics <list>', 'metrics to report percentiles of', 'ttft,tpot,itl,e2el')
    .option('--metric-percentiles <list>', 'percentiles to report', '99')
    .option('--save-result', 'write the result JSON')
    .option('--result-dir <dir>', 'folder of the result JSON')
    .option('--result-filename <name>', 'file name of the result JSON')
    .option('--request-timeout <s>', 'bound on each request (seconds)', '21600')
    .action(async (flags: BenchFlags) => {
      await runBench(flags);
    });
}
