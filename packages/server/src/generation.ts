import type {
  CompletionOutput,
  CompletionStream,
  EngineClient,
  EngineSamplingParams,
} from '@x/engine';
import { HttpError } from './errors.js';
import type { ServerMetrics } from './metrics.js';

/** One prompt of a request, tokenized. `text` is what echo repeats. */
export interface PromptInput {
  tokenIds: number[];
  text: string;
}

/** A CompletionOutput tagged with the prompt it belongs to. */
export interface GenerationEvent {
  prompt: number;
  output: CompletionOutput;
}

export interface GenerationOptions {
  engine: EngineClient;
  metrics: ServerMetrics;
  /** Engine request ids: `id` for one prompt, `id-<i>` for several. */
  id: string;
  prompts: PromptInput[];
  /** Per prompt (max_tokens differs with the prompt's length). */
  sampling: EngineSamplingParams[];
  priority: number | undefined;
  cacheSalt: string | undefined;
  /** When the HTTP request arrived (ms since epoch). */
  arrivalTime: number;
}

interface Timing {
  first: number | null;
  last: number;
}

/**
 * The engine requests of one HTTP request (one per prompt), merged into a single event stream in
 * arrival order, with the per-completion timings the metrics need (TTFT, inter-token latency,
 * end-to-end latency). `abort()` aborts them all (client disconnect).
 */
export class Generation {
  readonly #o: GenerationOptions;
  readonly #streams: CompletionStream[];
  readonly #timings = new Map<string, Timing>();
  #aborted = false;

  private constructor(o: GenerationOptions, streams: CompletionStream[]) {
    this.#o = o;
    this.#streams = streams;
  }

  /** Submits every prompt; if one is refused, the others are aborted and the error thrown. */
  static async start(o: GenerationOptions): Promise<Generation> {
    const streams: CompletionStream[] = [];
    try {
      for (const [i, p] of o.prompts.entries()) {
        const requestId = o.prompts.length === 1 ? o.id : `${o.id}-${i}`;
        streams.push(
          await o.engine.generate({
            requestId,
            promptTokenIds: p.tokenIds,
            sampling: o.sampling[i]!,
            ...(o.priority === undefined ? {} : { priority: o.priority }),
            ...(o.cacheSalt === undefined ? {} : { cacheSalt: o.cacheSalt }),
            arrivalTime: o.arrivalTime,
          }),
        );
      }
    } catch (err) {
      for (const s of streams) s.abort();
      throw err;
    }
    return new Generation(o, streams);
  }

  /** Aborts every engine request of this HTTP request (idempotent). */
  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    for (const s of this.#streams) s.abort();
  }

  /** Every output of every prompt, as it arrives; throws EngineDeadError if the engine dies. */
  async *events(): AsyncGenerator<GenerationEvent> {
    const queue: GenerationEvent[] = [];
    let wake: (() => void) | null = null;
    let open = this.#streams.length;
    let failure: unknown = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    this.#streams.forEach((s, prompt) => {
      (async () => {
        for await (const output of s) {
          const e = { prompt, output };
          // Observed on arrival, so a consumer that stopped early (client gone) still counts.
          this.#observe(e);
          queue.push(e);
          notify();
        }
      })()
        .catch((err) => {
          failure ??= err;
        })
        .finally(() => {
          open--;
          notify();
        });
    });
    for (;;) {
      const e = queue.shift();
      if (e !== undefined) {
        yield e;
        continue;
      }
      if (failure !== null) throw failure;
      if (open === 0) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  }

  #observe({ prompt, output: o }: GenerationEvent): void {
    const m = this.#o.metrics;
    const now = Date.now();
    const key = `${prompt}/${o.index}`;
    let t = this.#timings.get(key);
    if (t === undefined) {
      t = { first: null, last: now };
      this.#timings.set(key, t);
      if (o.queueTimeMs !== undefined) m.queueTime(o.queueTimeMs / 1000);
    }
    if (o.tokenIds.length > 0) {
      if (t.first === null) {
        t.first = now;
        m.firstToken((now - this.#o.arrivalTime) / 1000);
      } else {
        m.interToken((now - t.last) / 1000);
      }
      t.last = now;
      m.generated(o.tokenIds.length);
    }
    if (o.finishReason !== null) {
      m.finished(
        o.finishReason,
        (now - this.#o.arrivalTime) / 1000,
        o.index === 0 ? o.numPromptTokens : 0,
      );
    }
  }
}

/**
 * The HTTP error for a completion the engine ended with 'abort' for a reason other than the client
 * leaving: a pause or sleep (503, retry), a shutdown (503) or an engine failure (503).
 */
export function abortError(o: CompletionOutput, retryAfterSeconds: number): HttpError | null {
  if (o.finishReason !== 'abort' || o.abortReason === 'client') return null;
  const why = {
    pause: 'the engine was paused',
    sleep: 'the engine was put to sleep',
    shutdown: 'the server is shutting down',
    error: 'the engine failed',
  }[o.abortReason ?? 'error'];
  const retry = o.abortReason === 'pause' || o.abortReason === 'sleep';
  return new HttpError(503, `The request was aborted because ${why}.`, {
    retryAfterSeconds: retry ? retryAfterSeconds : null,
  });
}
