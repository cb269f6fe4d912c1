import { timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { ServerContext, type ServerOptions } from './context.js';
import { HttpError, toHttpError } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { registerAdmin } from './routes/admin.js';
import { registerChat } from './routes/chat.js';
import { registerCompletions } from './routes/completions.js';
import { registerInfo } from './routes/info.js';

const { version: packageVersion } = createRequire(import.meta.url)('../package.json') as {
  version: string;
};

const ADMIN_PATHS = [
  '/sleep',
  '/wake_up',
  '/is_sleeping',
  '/pause',
  '/resume',
  '/is_paused',
  '/reset_prefix_cache',
  '/reload_weights',
];

function sameKey(given: string, key: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Fastify's own errors (body limits, bad JSON, media types) as OpenAI error JSON. */
function frameworkError(err: FastifyError): HttpError {
  const status = err.statusCode ?? 500;
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return new HttpError(413, `The request body is larger than the limit (${err.message})`, {
      param: 'body',
    });
  }
  if (status >= 400 && status < 500) {
    return new HttpError(status, err.message, { param: status === 400 ? 'body' : null });
  }
  return new HttpError(500, err.message);
}

/**
 * The OpenAI-compatible HTTP server over an EngineClient (Fastify; not listening yet — call
 * `listen`). Routes: /v1/completions, /v1/chat/completions, /v1/models, /tokenize,
 * /detokenize, /version, /health, /metrics, and with `enableSleepMode` the admin endpoints.
 * Every error answers in OpenAI's JSON shape; 503s carry Retry-After when retrying can help.
 */
export function createServer(options: ServerOptions): FastifyInstance {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 16 * 1024 * 1024,
    forceCloseConnections: true,
  });
  // An empty JSON body is no body (admin POSTs often send none); bad JSON is a 400.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(
        new HttpError(400, `The body is not valid JSON: ${(err as Error).message}`, {
          param: 'body',
        }),
        undefined,
      );
    }
  });
  const metrics = new ServerMetrics(options.engine, options.servedModelName);
  const ctx = new ServerContext(options, metrics);

  const key = options.apiKey;
  if (key !== undefined && key.length > 0) {
    app.addHook('onRequest', async (req) => {
      const path = req.url.split('?')[0]!;
      if (!path.startsWith('/v1') && !ADMIN_PATHS.includes(path)) return;
      const auth = req.headers.authorization ?? '';
      const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      if (!sameKey(given, key))
        throw new HttpError(401, 'Unauthorized: a valid API key is required');
    });
  }

  app.setErrorHandler(async (err: FastifyError, req, reply) => {
    const promptField = req.url.startsWith('/v1/chat') ? 'messages' : 'prompt';
    const h =
      err instanceof HttpError ||
      (err as { code?: string }).code?.startsWith('X_') ||
      !('statusCode' in err)
        ? toHttpError(err, ctx.retryAfterSeconds, promptField)
        : frameworkError(err);
    if (h.status >= 500 && h.status !== 503) req.log.error(err);
    if (h.retryAfterSeconds !== null) reply.header('retry-after', String(h.retryAfterSeconds));
    return reply.code(h.status).send(h.body());
  });
  app.setNotFoundHandler(async (req, reply) =>
    reply
      .code(404)
      .send(new HttpError(404, `Not found: ${req.method} ${req.url.split('?')[0]}`).body()),
  );

  registerCompletions(app, ctx);
  registerChat(app, ctx);
  registerInfo(app, ctx, options.version ?? packageVersion);
  if (options.enableSleepMode) registerAdmin(app, ctx);
  return app;
}
