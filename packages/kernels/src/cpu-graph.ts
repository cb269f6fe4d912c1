import { callNative, DisposedError, InvalidArgumentError, type Stream } from '@x/core';
import { cpuStream } from './check.js';
import { native } from './native.js';

/** Handle of a captured graph inside x_kernels.node. */
type NativeGraph = object;

/**
 * A sequence of @x/kernels ops captured from a CPU stream and replayed as one stream operation —
 * the CPU analogue of a CUDA graph, for the ~100 small kernels of a decode step whose per-op JS
 * call and stream hand-off would cost more than the kernels.
 *
 * Capture records the kernels' arguments (pointers, shapes) instead of running them; each launch
 * runs them in order on the launching stream, reading whatever the buffers hold then. So every
 * buffer must outlive the graph and keep its address (all @x/cumem allocations do); the ranges are
 * checked again at every launch, so a freed buffer or a sleeping tag is a typed error. Only
 * @x/kernels ops are captured: stream operations of @x/core (copy, record, waitEvent) issued
 * during a capture run at once, outside the graph, so keep them out of the captured function.
 */
export class CpuGraph {
  #native: NativeGraph | undefined;
  /** Kernels in the graph. */
  readonly ops: number;

  private constructor(handle: NativeGraph, ops: number) {
    this.#native = handle;
    this.ops = ops;
  }

  /**
   * Captures the kernels `record` enqueues on `stream` (a CPU stream). Nothing runs during the
   * capture; if `record` throws, the capture is dropped and the error rethrown.
   */
  static capture(stream: Stream, record: () => void): CpuGraph {
    const h = cpuStream(stream);
    if (typeof record !== 'function') {
      throw new InvalidArgumentError('record', 'a function that enqueues kernels', record);
    }
    const n = native();
    callNative(() => n.beginCapture(h));
    let graph: NativeGraph | undefined;
    try {
      record();
    } catch (err) {
      callNative(() => n.endCapture(h, false));
      throw err;
    }
    graph = callNative(() => n.endCapture(h, true)) as NativeGraph;
    const { ops } = callNative(() => n.graphInfo(graph!));
    return new CpuGraph(graph, ops);
  }

  /** Enqueues the whole graph on `stream` (one operation; returns at once). */
  launch(stream: Stream): void {
    const g = this.#native;
    if (g === undefined) throw new DisposedError('CpuGraph');
    const h = cpuStream(stream);
    callNative(() => native().graphLaunch(h, g));
  }

  /** Releases the graph; launches already enqueued still complete. */
  dispose(): void {
    if (this.#native === undefined) return;
    native().graphDispose(this.#native);
    this.#native = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
