/**
 * @x/server — the OpenAI-compatible HTTP API of x (Fastify): completions and chat completions
 * with vLLM-compatible SSE, models, tokenize/detokenize, health, Prometheus metrics, and the
 * admin endpoints (sleep, wake, pause, resume, prefix-cache reset, weight reload).
 */
export type { ServerOptions } from './context.js';
export { type ErrorBody, HttpError } from './errors.js';
export { PREFIX as METRICS_PREFIX, ServerMetrics } from './metrics.js';
export { createServer } from './server.js';
