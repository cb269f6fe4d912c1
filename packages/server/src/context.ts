import { randomUUID } from 'node:crypto';
import type { ChatTemplate, EngineClient, GenerationDefaults, Tokenizer } from '@x/engine';
import { HttpError } from './errors.js';
import type { Fields } from './fields.js';
import type { ServerMetrics } from './metrics.js';

/** Options of {@link createServer}. */
export interface ServerOptions {
  engine: EngineClient;
  /** The served model's tokenizer, loaded in this (the HTTP) thread. */
  tokenizer: Tokenizer;
  /** The name /v1/models lists and requests must use (vLLM --served-model-name). */
  servedModelName: string;
  /** Sampling defaults (generation_config.json), applied where a request leaves a field out. */
  generationDefaults?: GenerationDefaults;
  /** Overrides the tokenizer's chat template (vLLM --chat-template). */
  chatTemplate?: ChatTemplate;
  /** When set, /v1/* and the admin endpoints need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Enables the admin endpoints: sleep, wake_up, pause, resume, reset_prefix_cache, reload. */
  enableSleepMode?: boolean;
  /** Most generation requests in the server at once; more get 503. Default 1024. */
  maxQueueLen?: number;
  /** Largest request body, bytes. Default 16 MiB. */
  bodyLimit?: number;
  /** Retry-After of 503 answers while asleep or paused, seconds. Default 5. */
  retryAfterSeconds?: number;
  /** Fastify's request logging. Default off. */
  logger?: boolean;
  /** Reported by /version. */
  version?: string;
}

/** What every route needs: the engine, the tokenizer, metrics and the limits. */
export class ServerContext {
  readonly engine: EngineClient;
  readonly tokenizer: Tokenizer;
  readonly metrics: ServerMetrics;
  readonly modelName: string;
  readonly defaults: GenerationDefaults;
  readonly chatTemplate: ChatTemplate | null;
  readonly retryAfterSeconds: number;
  readonly maxQueueLen: number;
  readonly created = Math.floor(Date.now() / 1000);
  /** Generation requests being served now (the queue-length limit counts these). */
  active = 0;

  constructor(o: ServerOptions, metrics: ServerMetrics) {
    this.engine = o.engine;
    this.tokenizer = o.tokenizer;
    this.metrics = metrics;
    this.modelName = o.servedModelName;
    this.defaults = o.generationDefaults ?? {};
    this.chatTemplate = o.chatTemplate ?? o.tokenizer.chatTemplate;
    this.retryAfterSeconds = o.retryAfterSeconds ?? 5;
    this.maxQueueLen = o.maxQueueLen ?? 1024;
  }

  get maxModelLen(): number {
    return this.engine.info.maxModelLen;
  }

  get vocabSize(): number {
    return this.engine.info.vocabSize;
  }

  /** 503 (with Retry-After) unless the engine serves now; 503 when the queue is full. */
  checkAccepting(): void {
    const s = this.engine.status;
    if (s.dead) throw new HttpError(503, `The engine is not running: ${s.error ?? 'it stopped'}`);
    if (s.state === 'sleeping') {
      throw new HttpError(503, 'The engine is asleep (POST /wake_up).', {
        retryAfterSeconds: this.retryAfterSeconds,
      });
    }
    if (!s.weightsValid) {
      throw new HttpError(503, 'The engine has no valid weights (POST /reload_weights).', {
        retryAfterSeconds: this.retryAfterSeconds,
      });
    }
    if (s.state !== 'running') {
      throw new HttpError(503, `The engine is ${s.state} (POST /resume).`, {
        retryAfterSeconds: this.retryAfterSeconds,
      });
    }
    if (this.active >= this.maxQueueLen) {
      throw new HttpError(503, `The server is at its queue limit (${this.maxQueueLen} requests).`, {
        retryAfterSeconds: 1,
      });
    }
  }

  /** 404 in OpenAI's words when `model` names another model. */
  checkModel(f: Fields): void {
    const model = f.string('model');
    if (model !== undefined && model !== this.modelName) {
      throw new HttpError(404, `The model \`${model}\` does not exist.`, { param: 'model' });
    }
  }

  /** A request id with vLLM's prefixes: cmpl-…, chatcmpl-… */
  newId(prefix: string): string {
    return `${prefix}-${randomUUID().replaceAll('-', '')}`;
  }
}
