import { EngineDeadError, EngineUnavailableError } from '@x/engine';

/** The body of every error response: OpenAI's shape, as vLLM sends it. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

const TYPES: Record<number, string> = {
  400: 'BadRequestError',
  401: 'AuthenticationError',
  404: 'NotFoundError',
  409: 'ConflictError',
  413: 'RequestTooLargeError',
  415: 'UnsupportedMediaTypeError',
  500: 'InternalServerError',
  503: 'ServiceUnavailableError',
};

/** An error with its HTTP status, the request field it concerns, and Retry-After for 503s. */
export class HttpError extends Error {
  readonly status: number;
  readonly param: string | null;
  readonly retryAfterSeconds: number | null;
  constructor(
    status: number,
    message: string,
    options: { param?: string | null; retryAfterSeconds?: number | null } = {},
  ) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds ?? null;
  }

  body(): ErrorBody {
    return {
      error: {
        message: this.message,
        type: TYPES[this.status] ?? 'Error',
        param: this.param,
        code: this.status,
      },
    };
  }
}

/** A 400 naming the bad field: "Expected <what> for <param> but received <got>". */
export function badField(param: string, expected: string, received: unknown): HttpError {
  return new HttpError(400, `Expected ${expected} for ${param} but received ${show(received)}`, {
    param,
  });
}

function show(v: unknown): string {
  if (v === undefined) return 'undefined';
  try {
    const s = JSON.stringify(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
}

/** Maps the engine's field names (sampling.topP) to the request's (top_p). */
const ENGINE_FIELDS: Record<string, string> = {
  maxTokens: 'max_tokens',
  minTokens: 'min_tokens',
  stopTokenIds: 'stop_token_ids',
  ignoreEos: 'ignore_eos',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  repetitionPenalty: 'repetition_penalty',
  logitBias: 'logit_bias',
  promptTokenIds: 'prompt',
};

/** The request field an engine-side InvalidArgumentError names (`sampling.topP` → `top_p`). */
export function engineParam(argument: string, promptField: string): string {
  const path = argument.replace(/^sampling\./, '');
  const head = path.match(/^[A-Za-z]+/)?.[0] ?? path;
  const mapped = head === 'promptTokenIds' ? promptField : (ENGINE_FIELDS[head] ?? head);
  return mapped + path.slice(head.length);
}

/**
 * The HTTP error for anything a handler throws: HttpError as is; engine errors by kind (invalid
 * argument 400, unavailable 503 + Retry-After, dead 503); the rest 500.
 */
export function toHttpError(
  err: unknown,
  retryAfterSeconds: number,
  promptField = 'prompt',
): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof EngineUnavailableError || (err as Error)?.name === 'EngineUnavailableError') {
    return new HttpError(503, (err as Error).message, { retryAfterSeconds });
  }
  if (err instanceof EngineDeadError || (err as Error)?.name === 'EngineDeadError') {
    return new HttpError(503, (err as Error).message);
  }
  const e = err as { code?: string; argument?: string; message?: string };
  if (e?.code === 'X_INVALID_ARGUMENT') {
    const param = typeof e.argument === 'string' ? engineParam(e.argument, promptField) : null;
    return new HttpError(400, e.message ?? 'invalid request', { param });
  }
  return new HttpError(500, e?.message ?? String(err));
}
