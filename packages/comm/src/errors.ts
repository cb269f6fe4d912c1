import { CommError, fromNativeError, TimeoutError } from '@x/core';

interface NativeCommErrorShape {
  message: string;
  code?: string;
  operation?: string;
  rank?: number;
  peer?: number;
  timeoutMs?: number;
}

/**
 * Converts a failure from x_comm.node into a typed error: CommError (rank, op, peer, timeoutMs)
 * for collectives and rendezvous, TimeoutError for store waits, other XErrors otherwise. The stack
 * is taken from `site` so async failures point at the caller.
 */
export function toCommError(err: unknown, site?: Error, rankHint = -1): Error {
  if (!(err instanceof Error)) return err as Error;
  const e = err as Error & NativeCommErrorShape;
  let out: Error;
  if (e.code === 'X_COMM_ERROR') {
    out = new CommError(e.message, {
      rank: e.rank !== undefined && e.rank >= 0 ? e.rank : rankHint,
      op: e.operation ?? 'unknown',
      ...(e.peer !== undefined ? { peer: e.peer } : {}),
      ...(e.timeoutMs !== undefined ? { timeoutMs: e.timeoutMs } : {}),
    });
  } else if (e.code === 'X_TIMEOUT' && e.operation?.startsWith('store')) {
    const ms = Number(/after (\d+) ms/.exec(e.message)?.[1] ?? Number.NaN);
    out = new TimeoutError(e.operation, ms);
    out.message = e.message;
  } else {
    return fromNativeError(err, site);
  }
  if (site?.stack) {
    out.stack = `${out.name}: ${out.message}\n${site.stack.split('\n').slice(1).join('\n')}`;
  }
  return out;
}

/** Awaits a native promise, converting its rejection with toCommError. */
export async function settle<T>(p: Promise<T>, site: Error, rankHint = -1): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw toCommError(err, site, rankHint);
  }
}

/** Runs a synchronous native call, converting its failure with toCommError. */
export function callComm<T>(fn: () => T, rankHint = -1): T {
  try {
    return fn();
  } catch (err) {
    throw toCommError(err, new Error(), rankHint);
  }
}
