import { Worker as ThreadWorker } from 'node:worker_threads';
import { InvalidArgumentError, TimeoutError } from '@x/core';
import type { PauseMode } from '@x/scheduler';
import type { EngineConfig } from './engine-setup.js';
import { EngineDeadError } from './errors.js';
import type { ExecutorMemory } from './executor.js';
import {
  deserializeError,
  type EngineCall,
  type FromEngine,
  type SerializedError,
  type ToEngine,
} from './messages.js';
import type {
  AbortReason,
  CompletionOutput,
  EngineInfo,
  EngineRequest,
  EngineStats,
  EngineStatus,
} from './types.js';

/** Options of {@link EngineClient.start}. */
export interface EngineClientOptions {
  config: EngineConfig;
  /** The engine thread's entry; default dist/engine-core-thread.js next to this module. */
  threadUrl?: URL;
  /** Bound on model loading and warm-up (ms). Default 600 000. */
  startTimeoutMs?: number;
  /** Bound on admin calls other than sleep/pause/reload (ms). Default 60 000. */
  callTimeoutMs?: number;
}

/** The outputs of one request (all n completions), in order; ends when every completion did. */
export class CompletionStream implements AsyncIterable<CompletionOutput> {
  readonly requestId: string;
  readonly n: number;
  readonly #queue: CompletionOutput[] = [];
  readonly #onAbort: () => void;
  #finished = 0;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  /** @internal */
  constructor(requestId: string, n: number, onAbort: () => void) {
    this.requestId = requestId;
    this.n = n;
    this.#onAbort = onAbort;
  }

  /** Every completion finished (or the stream failed). */
  get done(): boolean {
    return this.#finished >= this.n || this.#error !== null;
  }

  /** Asks the engine to abort the request; the stream then ends with finishReason 'abort'. */
  abort(): void {
    if (!this.done) this.#onAbort();
  }

  /** @internal */
  push(o: CompletionOutput): void {
    this.#queue.push(o);
    if (o.finishReason !== null) this.#finished++;
    this.#notify();
  }

  /** @internal */
  fail(err: Error): void {
    if (this.done) return;
    this.#error = err;
    this.#notify();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<CompletionOutput> {
    for (;;) {
      const o = this.#queue.shift();
      if (o !== undefined) {
        yield o;
        continue;
      }
      if (this.#error !== null) throw this.#error;
      if (this.#finished >= this.n) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
}

interface PendingCall {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * The frontend's handle on the engine core, which runs in its own worker thread (see
 * docs/decisions/0007-engine-core-in-a-worker-thread.md). Requests go in as token ids and come
 * back as CompletionOutputs (text already decoded); admin calls are bounded by timeouts; if the
 * thread dies, every stream and call fails with EngineDeadError and `status.dead` turns true.
 */
export class EngineClient {
  readonly info: EngineInfo;
  readonly #thread: ThreadWorker;
  readonly #streams = new Map<string, CompletionStream>();
  readonly #calls = new Map<number, PendingCall>();
  readonly #callTimeoutMs: number;
  readonly #deathListeners: Array<(err: Error) => void> = [];
  #status: EngineStatus;
  #nextId = 1;
  #dead: Error | null = null;
  #closing = false;
  #exited: Promise<void>;

  private constructor(
    thread: ThreadWorker,
    info: EngineInfo,
    status: EngineStatus,
    o: EngineClientOptions,
  ) {
    this.#thread = thread;
    this.info = info;
    this.#status = status;
    this.#callTimeoutMs = o.callTimeoutMs ?? 60_000;
    this.#exited = new Promise((resolve) => thread.once('exit', () => resolve()));
    thread.on('message', (m: FromEngine) => this.#onMessage(m));
    thread.on('error', (err) => this.#die(err));
    thread.on('exit', (code) =>
      this.#die(new EngineDeadError(`the engine thread exited (${code})`)),
    );
  }

  /** Starts the engine thread, loads the model and resolves once it serves. */
  static async start(o: EngineClientOptions): Promise<EngineClient> {
    const url = o.threadUrl ?? new URL('./engine-core-thread.js', import.meta.url);
    const thread = new ThreadWorker(url, { workerData: { config: o.config } });
    const timeoutMs = o.startTimeoutMs ?? 600_000;
    try {
      const ready = await new Promise<Extract<FromEngine, { type: 'ready' }>>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new TimeoutError('engine start (model load and warm-up)', timeoutMs)),
          timeoutMs,
        );
        const done = () => {
          clearTimeout(timer);
          thread.off('message', onMessage);
          thread.off('error', onError);
          thread.off('exit', onExit);
        };
        const onMessage = (m: FromEngine) => {
          if (m.type === 'ready') {
            done();
            resolve(m);
          } else if (m.type === 'init-error') {
            done();
            reject(deserializeError(m.error));
          }
        };
        const onError = (err: Error) => {
          done();
          reject(err);
        };
        const onExit = (code: number) => {
          done();
          reject(new EngineDeadError(`the engine thread exited (${code}) while starting`));
        };
        thread.on('message', onMessage);
        thread.on('error', onError);
        thread.on('exit', onExit);
      });
      return new EngineClient(thread, ready.info, ready.status, o);
    } catch (err) {
      await thread.terminate();
      throw err;
    }
  }

  /** The engine state as of the last message from it. */
  get status(): EngineStatus {
    if (this.#dead !== null && !this.#status.dead) {
      return { ...this.#status, dead: true, error: this.#dead.message };
    }
    return this.#status;
  }

  /** Requests in flight (streams not ended). */
  get numActive(): number {
    return this.#streams.size;
  }

  /** Called once when the engine dies (thread error, exit, or a fatal loop error). */
  onDeath(listener: (err: Error) => void): void {
    this.#deathListeners.push(listener);
  }

  /**
   * Submits a request. Resolves once the engine accepted it (or rejects with its typed error:
   * InvalidArgumentError, EngineUnavailableError, EngineDeadError). `signal` aborts it.
   */
  async generate(request: EngineRequest, signal?: AbortSignal): Promise<CompletionStream> {
    if (this.#dead !== null) throw new EngineDeadError(this.#dead.message);
    const id = request?.requestId;
    if (typeof id !== 'string' || id.length === 0) {
      throw new InvalidArgumentError('requestId', 'a non-empty string', id);
    }
    if (this.#streams.has(id)) {
      throw new InvalidArgumentError('requestId', 'an id not used by a request in flight', id);
    }
    const n = request.sampling?.n ?? 1;
    const stream = new CompletionStream(id, n, () => this.abort(id));
    this.#streams.set(id, stream);
    try {
      await this.#request({ type: 'add', id: this.#nextId++, request }, this.#callTimeoutMs);
    } catch (err) {
      this.#streams.delete(id);
      throw err;
    }
    if (signal) {
      if (signal.aborted) this.abort(id);
      else signal.addEventListener('abort', () => this.abort(id), { once: true });
    }
    return stream;
  }

  /** Aborts requests (all their completions); finished or unknown ids are ignored. */
  abort(requestId: string | string[], reason: AbortReason = 'client'): void {
    if (this.#dead !== null) return;
    const requestIds = Array.isArray(requestId) ? requestId : [requestId];
    this.#post({ type: 'abort', requestIds, reason });
  }

  pause(mode: PauseMode, drainTimeoutMs = 30_000): Promise<void> {
    return this.#call({ method: 'pause', mode, drainTimeoutMs }, drainTimeoutMs * 2 + 60_000);
  }

  resume(): Promise<void> {
    return this.#call({ method: 'resume' });
  }

  sleep(o: {
    level?: 1 | 2;
    tags?: string[];
    mode?: PauseMode;
    drainTimeoutMs?: number;
  }): Promise<void> {
    const drain = o.drainTimeoutMs ?? 30_000;
    return this.#call({ method: 'sleep', ...o, drainTimeoutMs: drain }, drain * 2 + 120_000);
  }

  wake(tags?: string[]): Promise<void> {
    return this.#call({ method: 'wake', ...(tags === undefined ? {} : { tags }) }, 300_000);
  }

  reloadWeights(dir?: string): Promise<void> {
    return this.#call({ method: 'reloadWeights', ...(dir === undefined ? {} : { dir }) }, 600_000);
  }

  resetPrefixCache(): Promise<number> {
    return this.#call({ method: 'resetPrefixCache' });
  }

  stats(): Promise<EngineStats> {
    return this.#call({ method: 'stats' });
  }

  memory(): Promise<ExecutorMemory> {
    return this.#call({ method: 'memory' });
  }

  /** Aborts what runs, frees the engine and ends the thread (terminated after `timeoutMs`). */
  async shutdown(timeoutMs = 30_000): Promise<void> {
    this.#closing = true;
    if (this.#dead === null) {
      await this.#call({ method: 'shutdown' }, timeoutMs).catch(() => undefined);
    }
    const exited = await Promise.race([
      this.#exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref()),
    ]);
    if (!exited) await this.#thread.terminate();
  }

  #call<T>(call: EngineCall, timeoutMs = this.#callTimeoutMs): Promise<T> {
    if (this.#dead !== null) return Promise.reject(new EngineDeadError(this.#dead.message));
    return this.#request({ type: 'call', id: this.#nextId++, call }, timeoutMs) as Promise<T>;
  }

  #request(m: Extract<ToEngine, { id: number }>, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#calls.delete(m.id);
        const what = m.type === 'add' ? 'engine add' : `engine ${m.call.method}`;
        reject(new TimeoutError(what, timeoutMs));
      }, timeoutMs);
      this.#calls.set(m.id, { resolve, reject, timer });
      this.#post(m);
    });
  }

  #post(m: ToEngine): void {
    this.#thread.postMessage(m);
  }

  #onMessage(m: FromEngine): void {
    if (m.type === 'outputs') {
      for (const o of m.outputs) {
        const s = this.#streams.get(o.requestId);
        if (s === undefined) continue;
        s.push(o);
        if (s.done) this.#streams.delete(o.requestId);
      }
    } else if (m.type === 'result') {
      this.#status = m.status;
      const c = this.#calls.get(m.id);
      if (c === undefined) return;
      this.#calls.delete(m.id);
      clearTimeout(c.timer);
      if (m.ok) c.resolve(m.value);
      else c.reject(deserializeError(m.error));
    } else if (m.type === 'status') {
      this.#status = m.status;
    } else if (m.type === 'fatal') {
      this.#status = m.status;
      this.#die(deserializeError(m.error as SerializedError));
    }
  }

  #die(err: Error): void {
    if (this.#dead !== null) return;
    this.#dead = err;
    const dead = err instanceof EngineDeadError ? err : new EngineDeadError(err.message);
    for (const s of this.#streams.values()) s.fail(dead);
    this.#streams.clear();
    for (const c of this.#calls.values()) {
      clearTimeout(c.timer);
      c.reject(dead);
    }
    this.#calls.clear();
    if (!this.#closing) for (const l of this.#deathListeners) l(dead);
  }
}
