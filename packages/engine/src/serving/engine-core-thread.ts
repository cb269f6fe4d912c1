// Entry of the engine-core worker thread (dist/engine-core-thread.js). It owns the allocator, the
// model, the executor and the EngineCore; the main thread (HTTP) only sends requests and admin
// calls and receives outputs, so a long step never stalls the event loop that serves HTTP.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createEngine, type Engine } from './engine-setup.js';
import {
  type EngineCall,
  type EngineThreadData,
  type FromEngine,
  serializeError,
  type ToEngine,
} from './messages.js';
import type { CompletionOutput, EngineStatus } from './types.js';

if (isMainThread || parentPort === null) {
  throw new Error('engine-core-thread.js runs only as a worker thread (see EngineClient.start)');
}
const port = parentPort;
const { config } = workerData as EngineThreadData;

function post(m: FromEngine): void {
  port.postMessage(m);
}

let engine: Engine | undefined;
let closing = false;

// Outputs of one loop turn are sent as one message.
let pending: CompletionOutput[] = [];
let flushQueued = false;
function onOutputs(outputs: CompletionOutput[]): void {
  for (const o of outputs) pending.push(o);
  if (flushQueued) return;
  flushQueued = true;
  queueMicrotask(() => {
    flushQueued = false;
    const batch = pending;
    pending = [];
    if (batch.length > 0) post({ type: 'outputs', outputs: batch });
    pushStatus();
  });
}

function status(): EngineStatus {
  try {
    return engine!.core.status();
  } catch (err) {
    // After shutdown the allocator is gone: report a stopped engine.
    return {
      state: 'paused',
      sleepLevel: null,
      asleepTags: [],
      weightsValid: false,
      pausedByUser: null,
      dead: true,
      error: err instanceof Error ? err.message : String(err),
    };
  }
}

// The frontend answers /health and 503s from the last status it saw: send every change.
let lastStatus = '';
function pushStatus(): void {
  if (engine === undefined || closing) return;
  const s = status();
  const key = JSON.stringify(s);
  if (key === lastStatus) return;
  lastStatus = key;
  post({ type: 'status', status: s });
}

async function call(c: EngineCall): Promise<unknown> {
  const core = engine!.core;
  switch (c.method) {
    case 'pause':
      return core.pause(c.mode, c.drainTimeoutMs);
    case 'resume':
      return core.resume();
    case 'sleep':
      return core.sleep(c);
    case 'wake':
      return core.wake(c.tags);
    case 'reloadWeights':
      return core.reloadWeights(c.dir);
    case 'resetPrefixCache':
      return core.resetPrefixCache();
    case 'stats':
      return core.stats();
    case 'memory':
      return core.memory();
    case 'shutdown':
      closing = true;
      await engine!.dispose();
      return undefined;
  }
}

port.on('message', (m: ToEngine) => {
  if (engine === undefined) return;
  if (m.type === 'add') {
    try {
      engine.core.add(m.request);
      post({ type: 'result', id: m.id, ok: true, value: null, status: status() });
    } catch (err) {
      post({ type: 'result', id: m.id, ok: false, error: serializeError(err), status: status() });
    }
  } else if (m.type === 'abort') {
    for (const id of m.requestIds) engine.core.abort(id, m.reason);
  } else if (m.type === 'call') {
    if (closing && m.call.method !== 'shutdown') {
      post({
        type: 'result',
        id: m.id,
        ok: false,
        error: { name: 'EngineDeadError', code: 'X_INTERNAL', message: 'shutting down' },
        status: status(),
      });
      return;
    }
    const running = call(m.call);
    pushStatus();
    running.then(
      (value) => {
        post({ type: 'result', id: m.id, ok: true, value: value ?? null, status: status() });
        if (m.call.method === 'shutdown') port.close();
      },
      (err) =>
        post({ type: 'result', id: m.id, ok: false, error: serializeError(err), status: status() }),
    );
  }
});

// An error nothing caught (a bug outside the engine loop, which catches its own): report the
// engine dead, then free it in order — streams drained before memory goes — instead of letting
// the thread die with device work in flight.
let failing = false;
async function failThread(err: unknown): Promise<void> {
  if (failing) return;
  failing = true;
  const error = serializeError(err);
  post({ type: 'fatal', error, status: { ...status(), dead: true, error: error.message } });
  closing = true;
  await engine?.dispose().catch(() => undefined);
  port.close();
}
process.on('uncaughtException', (err) => void failThread(err));
process.on('unhandledRejection', (err) => void failThread(err));

try {
  engine = await createEngine(config, {
    onOutputs,
    onFatal: (err) => post({ type: 'fatal', error: serializeError(err), status: status() }),
  });
  engine.core.start();
  lastStatus = JSON.stringify(status());
  post({ type: 'ready', info: engine.info, status: status() });
  // Admin calls change the state in several stages (pausing → paused → sleeping): poll for them.
  setInterval(pushStatus, 50).unref();
} catch (err) {
  post({ type: 'init-error', error: serializeError(err) });
  port.close();
}
