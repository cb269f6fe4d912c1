import type { PauseMode } from '@x/scheduler';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.js';
import { badField, HttpError, toHttpError } from '../errors.js';

const MODES: readonly PauseMode[] = ['abort', 'wait', 'keep'];

function query(req: FastifyRequest): Record<string, string | string[] | undefined> {
  return (req.query ?? {}) as Record<string, string | string[] | undefined>;
}

function one(q: Record<string, string | string[] | undefined>, key: string): string | undefined {
  const v = q[key];
  return Array.isArray(v) ? v.at(-1) : v;
}

/** `?tags=a,b` or `?tags=a&tags=b` (vLLM accepts repeated tags). */
function tags(q: Record<string, string | string[] | undefined>): string[] | undefined {
  const v = q.tags;
  if (v === undefined) return undefined;
  const list = (Array.isArray(v) ? v : [v])
    .flatMap((s) => s.split(','))
    .filter((s) => s.length > 0);
  if (list.length === 0) throw badField('tags', 'one or more @x/cumem tag names', v);
  return list;
}

function mode(q: Record<string, string | string[] | undefined>, fallback: PauseMode): PauseMode {
  const m = one(q, 'mode') ?? fallback;
  if (!MODES.includes(m as PauseMode)) throw badField('mode', 'one of "abort", "wait", "keep"', m);
  return m as PauseMode;
}

/** `drain_timeout` in seconds (default 30), bounding a 'wait' drain before it aborts. */
function drainMs(q: Record<string, string | string[] | undefined>): number {
  const s = one(q, 'drain_timeout');
  if (s === undefined) return 30_000;
  const v = Number(s);
  if (!Number.isFinite(v) || v < 0 || v > 3600) {
    throw badField('drain_timeout', 'seconds in [0, 3600]', s);
  }
  return Math.round(v * 1000);
}

/**
 * Admin endpoints (vLLM's names), registered with --enable-sleep-mode. State conflicts (resume
 * while asleep, reload while the weights sleep) are 409; bad parameters 400.
 */
export function registerAdmin(app: FastifyInstance, ctx: ServerContext): void {
  const admin = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
      return {};
    } catch (err) {
      const h = toHttpError(err, ctx.retryAfterSeconds);
      const unavailable = (err as Error)?.name === 'EngineUnavailableError';
      throw unavailable ? new HttpError(409, h.message) : h;
    }
  };

  app.post('/sleep', async (req) => {
    const q = query(req);
    const levelText = one(q, 'level') ?? '1';
    if (levelText !== '1' && levelText !== '2') throw badField('level', '1 or 2', levelText);
    const t = tags(q);
    const m = mode(q, 'abort');
    const d = drainMs(q);
    return admin(() =>
      ctx.engine.sleep({
        level: Number(levelText) as 1 | 2,
        mode: m,
        drainTimeoutMs: d,
        ...(t === undefined ? {} : { tags: t }),
      }),
    );
  });

  app.post('/wake_up', async (req) => {
    const t = tags(query(req));
    return admin(() => ctx.engine.wake(t));
  });

  app.get('/is_sleeping', async () => ({ is_sleeping: ctx.engine.status.state === 'sleeping' }));

  app.post('/pause', async (req) => {
    const q = query(req);
    const m = mode(q, 'abort');
    const d = drainMs(q);
    return admin(() => ctx.engine.pause(m, d));
  });

  app.post('/resume', async () => admin(() => ctx.engine.resume()));

  app.get('/is_paused', async () => {
    const s = ctx.engine.status.state;
    return { is_paused: s === 'paused' || s === 'pausing' };
  });

  app.post('/reset_prefix_cache', async () => admin(() => ctx.engine.resetPrefixCache()));

  app.post('/reload_weights', async (req) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const path = one(query(req), 'path') ?? body.path;
    if (path !== undefined && (typeof path !== 'string' || path.length === 0)) {
      throw badField('path', 'a model directory', path);
    }
    return admin(() => ctx.engine.reloadWeights(path as string | undefined));
  });
}
