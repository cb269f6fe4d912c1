import type { EngineClient, EngineStats } from '@x/engine';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

// vLLM's buckets, so dashboards built for vllm:* metrics read ours the same way.
const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
  160, 640, 2560,
];
const ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];
const LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

/** Metric name prefix: vLLM's names (`vllm:num_requests_running`) under our own namespace. */
export const PREFIX = 'x:';

/**
 * Prometheus metrics of one server (prom-client, its own registry). Request timings are measured
 * here as outputs arrive (TTFT, inter-token latency, end-to-end latency); gauges and engine
 * counters are read from the engine at scrape time.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly #engine: EngineClient;
  readonly #labels: { model_name: string };
  readonly #ttft: Histogram<'model_name'>;
  readonly #itl: Histogram<'model_name'>;
  readonly #e2e: Histogram<'model_name'>;
  readonly #queue: Histogram<'model_name'>;
  readonly #promptTokens: Counter<'model_name'>;
  readonly #generationTokens: Counter<'model_name'>;
  readonly #success: Counter<'model_name' | 'finished_reason'>;
  readonly #running: Gauge<'model_name'>;
  readonly #waiting: Gauge<'model_name'>;
  readonly #kvUsage: Gauge<'model_name'>;
  readonly #prefixQueries: Counter<'model_name'>;
  readonly #prefixHits: Counter<'model_name'>;
  readonly #preemptions: Counter<'model_name'>;
  readonly #sleepState: Gauge<'model_name' | 'sleep_state'>;
  readonly #engineState: Gauge<'model_name' | 'state'>;
  #last: EngineStats | null = null;

  constructor(engine: EngineClient, modelName: string) {
    this.#engine = engine;
    this.#labels = { model_name: modelName };
    const r = [this.registry];
    const labelNames = ['model_name'] as const;
    const hist = (name: string, help: string, buckets: number[]) =>
      new Histogram({ name: PREFIX + name, help, buckets, labelNames, registers: r });
    const counter = (name: string, help: string) =>
      new Counter({ name: PREFIX + name, help, labelNames, registers: r });
    const gauge = (name: string, help: string) =>
      new Gauge({ name: PREFIX + name, help, labelNames, registers: r });
    this.#ttft = hist('time_to_first_token_seconds', 'Time to first token (s).', TTFT_BUCKETS);
    this.#itl = hist('inter_token_latency_seconds', 'Inter-token latency (s).', ITL_BUCKETS);
    this.#e2e = hist(
      'e2e_request_latency_seconds',
      'End-to-end request latency (s).',
      LATENCY_BUCKETS,
    );
    this.#queue = hist(
      'request_queue_time_seconds',
      'Time waiting before first scheduled (s).',
      LATENCY_BUCKETS,
    );
    this.#promptTokens = counter('prompt_tokens_total', 'Prefill tokens processed.');
    this.#generationTokens = counter('generation_tokens_total', 'Generation tokens produced.');
    this.#success = new Counter({
      name: `${PREFIX}request_success_total`,
      help: 'Finished requests, by finish reason.',
      labelNames: ['model_name', 'finished_reason'],
      registers: r,
    });
    this.#running = gauge('num_requests_running', 'Requests running in the engine.');
    this.#waiting = gauge('num_requests_waiting', 'Requests waiting to be scheduled.');
    this.#kvUsage = gauge('kv_cache_usage_perc', 'Fraction of KV cache blocks in use (0-1).');
    this.#prefixQueries = counter('prefix_cache_queries_total', 'Prefix cache queries, in tokens.');
    this.#prefixHits = counter('prefix_cache_hits_total', 'Prefix cache hits, in tokens.');
    this.#preemptions = counter('num_preemptions_total', 'Preemptions (by recompute).');
    this.#sleepState = new Gauge({
      name: `${PREFIX}engine_sleep_state`,
      help: '1 for the current sleep state: awake, weights_offloaded (level 1), discard_all (level 2).',
      labelNames: ['model_name', 'sleep_state'],
      registers: r,
    });
    this.#engineState = new Gauge({
      name: `${PREFIX}engine_state`,
      help: '1 for the current engine state: running, pausing, paused, sleeping, dead.',
      labelNames: ['model_name', 'state'],
      registers: r,
    });
  }

  /** A request's completion produced its first token `seconds` after arrival. */
  firstToken(seconds: number): void {
    this.#ttft.observe(this.#labels, seconds);
  }

  interToken(seconds: number): void {
    this.#itl.observe(this.#labels, seconds);
  }

  queueTime(seconds: number): void {
    this.#queue.observe(this.#labels, seconds);
  }

  generated(tokens: number): void {
    if (tokens > 0) this.#generationTokens.inc(this.#labels, tokens);
  }

  /** One completion finished (every reason but a client abort counts, as in vLLM). */
  finished(reason: string, e2eSeconds: number, promptTokens: number): void {
    this.#success.inc({ ...this.#labels, finished_reason: reason });
    this.#e2e.observe(this.#labels, e2eSeconds);
    this.#promptTokens.inc(this.#labels, promptTokens);
  }

  /** Reads the engine's gauges and counters; then renders the exposition text. */
  async render(): Promise<string> {
    const status = this.#engine.status;
    if (!status.dead) {
      const s = await this.#engine.stats().catch(() => null);
      if (s !== null) {
        this.#running.set(this.#labels, s.numRunning);
        this.#waiting.set(this.#labels, s.numWaiting);
        this.#kvUsage.set(this.#labels, s.kvCacheUsage);
        const last = this.#last;
        this.#prefixQueries.inc(
          this.#labels,
          s.prefixCacheQueries - (last?.prefixCacheQueries ?? 0),
        );
        this.#prefixHits.inc(this.#labels, s.prefixCacheHits - (last?.prefixCacheHits ?? 0));
        this.#preemptions.inc(this.#labels, s.numPreemptions - (last?.numPreemptions ?? 0));
        this.#last = s;
      }
    }
    const level = status.state === 'sleeping' ? status.sleepLevel : null;
    for (const [name, on] of [
      ['awake', level === null],
      ['weights_offloaded', level === 1],
      ['discard_all', level === 2],
    ] as const) {
      this.#sleepState.set({ ...this.#labels, sleep_state: name }, on ? 1 : 0);
    }
    const state = status.dead ? 'dead' : status.state;
    for (const name of ['running', 'pausing', 'paused', 'sleeping', 'dead']) {
      this.#engineState.set({ ...this.#labels, state: name }, name === state ? 1 : 0);
    }
    return this.registry.metrics();
  }
}
