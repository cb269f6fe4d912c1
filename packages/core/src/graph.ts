import type { Device } from './device.js';
import { callNative, DisposedError, InvalidArgumentError } from './errors.js';
import { type NativeHandle, native } from './native.js';
import { Stream } from './stream.js';

/**
 * How a capture treats other threads' CUDA calls. `thread-local` (default): only this thread's
 * unsafe calls (synchronous copies, allocations that may synchronize) break the capture;
 * `relaxed`: none are checked. Both capture only work enqueued on the capturing stream.
 */
export type CaptureMode = 'thread-local' | 'relaxed';

/** Options of {@link CudaGraph.capture} and {@link CudaGraph.beginCapture}. */
export interface CaptureOptions {
  mode?: CaptureMode;
}

const MODES: Record<CaptureMode, number> = { 'thread-local': 1, relaxed: 2 };

function cudaStream(stream: unknown, what: string): Stream {
  if (!(stream instanceof Stream)) throw new InvalidArgumentError(what, 'a Stream', stream);
  if (stream.device.kind !== 'cuda') {
    throw new InvalidArgumentError(
      `${what}.device`,
      'a CUDA stream (graphs are CUDA only)',
      stream.device.name,
    );
  }
  return stream;
}

/**
 * A CUDA graph: device work recorded once from a stream and replayed with one launch. Replays use
 * exactly the addresses captured, so every buffer a graph touches must outlive it (DESIGN.md
 * rule 3): while capturing, x accepts only memory it manages (@x/cumem allocations, host buffers)
 * and records each one; every `launch` checks they still exist and are awake, failing with
 * `InvalidArgumentError` (freed) or `AsleepError` (slept) instead of an illegal address on the
 * GPU. @x/cumem keeps addresses across sleep/wake, so a graph stays valid over a sleep/wake cycle.
 *
 * While a stream captures, `synchronize`, host functions and waits on it are refused.
 */
export class CudaGraph {
  readonly device: Device;
  /** Nodes in the graph (kernels, copies, fills). */
  readonly nodeCount: number;
  /** Distinct allocations the graph uses (re-checked at every launch). */
  readonly bufferCount: number;
  #handle: NativeHandle | undefined;

  private constructor(device: Device, handle: NativeHandle, nodes: number, buffers: number) {
    this.device = device;
    this.#handle = handle;
    this.nodeCount = nodes;
    this.bufferCount = buffers;
  }

  /**
   * Captures what `record` enqueues on `stream` and instantiates it. `record` runs synchronously;
   * if it throws, the capture is ended and discarded and the error rethrown.
   */
  static capture(stream: Stream, record: () => void, options: CaptureOptions = {}): CudaGraph {
    CudaGraph.beginCapture(stream, options);
    try {
      record();
    } catch (err) {
      try {
        CudaGraph.endCapture(stream).dispose();
      } catch {
        // The capture may already be invalid; the error that matters is the caller's.
      }
      throw err;
    }
    return CudaGraph.endCapture(stream);
  }

  /** Starts capturing `stream` (prefer {@link CudaGraph.capture}). */
  static beginCapture(stream: Stream, options: CaptureOptions = {}): void {
    const s = cudaStream(stream, 'stream');
    const mode = options.mode ?? 'thread-local';
    if (!Object.hasOwn(MODES, mode)) {
      throw new InvalidArgumentError('options.mode', '"thread-local" or "relaxed"', mode);
    }
    callNative(() => native().streamBeginCapture(s.handle(), MODES[mode]));
  }

  /** Ends the capture started by {@link CudaGraph.beginCapture} and instantiates the graph. */
  static endCapture(stream: Stream): CudaGraph {
    const s = cudaStream(stream, 'stream');
    const [h, nodes, ranges] = callNative(() => native().streamEndCapture(s.handle()));
    return new CudaGraph(s.device, h, nodes, ranges);
  }

  /** Enqueues one replay on `stream` (same device; not itself capturing). Returns at once. */
  launch(stream: Stream): void {
    const s = cudaStream(stream, 'stream');
    if (s.device.index !== this.device.index) {
      throw new InvalidArgumentError(
        'stream.device',
        `${this.device.name} (the graph's device)`,
        s.device.name,
      );
    }
    callNative(() => native().graphLaunch(this.#live(), s.handle()));
  }

  /** Releases the graph (replays already enqueued still run). Idempotent. */
  dispose(): void {
    if (this.#handle === undefined) return;
    native().graphDispose(this.#handle);
    this.#handle = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): NativeHandle {
    if (this.#handle === undefined) throw new DisposedError(`CudaGraph on ${this.device.name}`);
    return this.#handle;
  }
}
