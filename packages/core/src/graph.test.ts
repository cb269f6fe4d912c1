import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from './errors.js';
import { CudaGraph } from './graph.js';
import { Stream } from './stream.js';

// CUDA graphs need a GPU; packages/core/test/gpu/core.gpu.mjs checks capture and replay there.
// On the CPU device the API must refuse clearly, and a CPU stream never reports a capture.
describe('CudaGraph on the CPU device', () => {
  it('refuses to capture a CPU stream, naming the device', () => {
    const s = Stream.create('cpu');
    expect(() => CudaGraph.capture(s, () => {})).toThrow(InvalidArgumentError);
    expect(() => CudaGraph.beginCapture(s)).toThrow(/a CUDA stream.*received "cpu"/);
    expect(() => CudaGraph.endCapture(s)).toThrow(InvalidArgumentError);
    expect(s.capturing).toBe(false);
  });

  it('validates its arguments', () => {
    expect(() => CudaGraph.capture({} as Stream, () => {})).toThrow(/Expected a Stream for stream/);
  });
});
