import { InvalidArgumentError, TimeoutError, XError, type XErrorCode } from '@x/core';
import type { PauseMode } from '@x/scheduler';
import type { EngineConfig } from './engine-setup.js';
import { EngineDeadError, EngineUnavailableError, type UnavailableState } from './errors.js';
import type {
  AbortReason,
  CompletionOutput,
  EngineInfo,
  EngineRequest,
  EngineStatus,
} from './types.js';

/**
 * The protocol between the frontend (main thread) and the engine-core thread. Messages are
 * structured-cloned; every call carries an id and gets exactly one `result`. Order is preserved
 * per direction, so an `add`'s result always arrives before that request's first output.
 */
export type EngineCall =
  | { method: 'pause'; mode: PauseMode; drainTimeoutMs?: number }
  | { method: 'resume' }
  | {
      method: 'sleep';
      level?: 1 | 2;
      tags?: string[];
      mode?: PauseMode;
      drainTimeoutMs?: number;
    }
  | { method: 'wake'; tags?: string[] }
  | { method: 'reloadWeights'; dir?: string }
  | { method: 'resetPrefixCache' }
  | { method: 'stats' }
  | { method: 'memory' }
  | { method: 'shutdown' };

/** Main thread → engine thread. */
export type ToEngine =
  | { type: 'add'; id: number; request: EngineRequest }
  | { type: 'abort'; requestIds: string[]; reason: AbortReason }
  | { type: 'call'; id: number; call: EngineCall };

/** Engine thread → main thread. */
export type FromEngine =
  | { type: 'ready'; info: EngineInfo; status: EngineStatus }
  | { type: 'init-error'; error: SerializedError }
  | { type: 'outputs'; outputs: CompletionOutput[] }
  | { type: 'status'; status: EngineStatus }
  | { type: 'result'; id: number; ok: true; value: unknown; status: EngineStatus }
  | { type: 'result'; id: number; ok: false; error: SerializedError; status: EngineStatus }
  | { type: 'fatal'; error: SerializedError; status: EngineStatus };

/** What the engine thread is started with (workerData). */
export interface EngineThreadData {
  config: EngineConfig;
}

/** An error as it crosses the thread boundary: enough to rebuild the typed error. */
export interface SerializedError {
  name: string;
  code: XErrorCode | null;
  message: string;
  argument?: string;
  expected?: string;
  received?: string;
  state?: string;
  operation?: string;
  timeoutMs?: number;
  reason?: string;
}

export function serializeError(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', code: null, message: String(err) };
  const e = err as Error & Record<string, unknown>;
  const out: SerializedError = {
    name: e.name,
    code: err instanceof XError ? err.code : null,
    message: e.message,
  };
  for (const k of ['argument', 'expected', 'received', 'state', 'operation', 'reason'] as const) {
    if (typeof e[k] === 'string') out[k] = e[k] as string;
  }
  if (typeof e.timeoutMs === 'number') out.timeoutMs = e.timeoutMs;
  return out;
}

/** Rebuilds the typed error (InvalidArgumentError keeps its argument, etc.). */
export function deserializeError(s: SerializedError): Error {
  let err: Error;
  if (s.name === 'EngineUnavailableError' && s.state !== undefined) {
    err = new EngineUnavailableError(s.state as UnavailableState);
  } else if (s.name === 'EngineDeadError') {
    err = new EngineDeadError(s.reason ?? s.message);
  } else if (s.code === 'X_TIMEOUT' && s.operation !== undefined) {
    err = new TimeoutError(s.operation, s.timeoutMs ?? 0);
    err.message = s.message;
  } else if (s.code === 'X_INVALID_ARGUMENT' && s.argument !== undefined) {
    const e = new InvalidArgumentError(s.argument, s.expected ?? '', undefined);
    Object.assign(e, { received: s.received ?? '' });
    e.message = s.message;
    err = e;
  } else if (s.code !== null) {
    err = new XError(s.code, s.message);
  } else {
    err = new Error(s.message);
  }
  if (err.name !== s.name) err.name = s.name;
  return err;
}
