import { DisposedError, HostBuffer, InvalidArgumentError, Stream, Tensor } from '@x/core';
import { afterEach, describe, expect, it } from 'vitest';
import { CpuGraph } from './cpu-graph.js';
import { matmul } from './matmul.js';
import { rmsNorm } from './rms-norm.js';
import { siluAndMul } from './silu-and-mul.js';
import { Arena, expectClose, randomF32, rng } from './test-util.js';

const stream = Stream.create('cpu', { recordOps: true });
const arena = new Arena();
afterEach(async () => {
  await stream.synchronize();
  arena.dispose();
});

/** norm → matmul → silu-and-mul: a small chain whose every op reads the previous op's output. */
function chain(rows: number) {
  const rand = rng(rows);
  const [h, inter] = [24, 10];
  const x = arena.f32([rows, h], randomF32(rows * h, rand));
  const w = arena.f32([h], randomF32(h, rand, 0.5, 1.5));
  const up = arena.f32([2 * inter, h], randomF32(2 * inter * h, rand));
  const normed = arena.f32([rows, h]);
  const gateUp = arena.f32([rows, 2 * inter]);
  const out = arena.f32([rows, inter]);
  const record = () => {
    rmsNorm(stream, normed, x, w, { eps: 1e-5 });
    matmul(stream, gateUp, normed, up);
    siluAndMul(stream, out, gateUp);
  };
  return { x, out, record };
}

describe('CpuGraph', () => {
  it('records without running, then replays the kernels in order as one stream op', async () => {
    const eager = chain(3);
    eager.record();
    await stream.synchronize();
    const want = Float32Array.from(arena.read(eager.out));

    const c = chain(3);
    const before = stream.completedOps().length;
    const graph = CpuGraph.capture(stream, c.record);
    expect(graph.ops).toBe(3);
    await stream.synchronize();
    expect(stream.completedOps().length).toBe(before); // nothing ran during the capture
    expect(arena.read(c.out).every(Number.isNaN)).toBe(true); // still the poison fill
    graph.launch(stream);
    await stream.synchronize();
    expect(stream.completedOps().slice(before)).toEqual(['kernels.graph']);
    expectClose(arena.read(c.out), want);
    graph.dispose();
  });

  it('reads the buffers at launch time, so each replay sees new inputs', async () => {
    const c = chain(2);
    const graph = CpuGraph.capture(stream, c.record);
    const results: Float32Array[] = [];
    for (const scale of [1, -2]) {
      const x = arena.read(c.x);
      for (let i = 0; i < x.length; i++) x[i] = (i % 7) * 0.1 * scale + 0.05;
      graph.launch(stream);
      await stream.synchronize();
      results.push(Float32Array.from(arena.read(c.out)));
      // Eager on the same inputs gives the same numbers.
      c.record();
      await stream.synchronize();
      expectClose(results.at(-1)!, arena.read(c.out));
    }
    expect(results[0]).not.toEqual(results[1]);
    graph.dispose();
  });

  it('drops the capture when the recording function throws', async () => {
    const c = chain(2);
    const bad = arena.f32([5, 5]);
    expect(() =>
      CpuGraph.capture(stream, () => {
        c.record();
        matmul(stream, bad, bad, bad); // fine
        matmul(stream, bad, c.x, bad); // shape mismatch: throws
      }),
    ).toThrow(InvalidArgumentError);
    // The stream is not capturing any more: kernels run eagerly again.
    const before = stream.completedOps().length;
    c.record();
    await stream.synchronize();
    expect(stream.completedOps().length).toBe(before + 3);
  });

  it('refuses to launch over memory freed since the capture, and after dispose', async () => {
    const buf = HostBuffer.alloc(4 * 8 * 8);
    const t = new Tensor({ ptr: buf.ptr, dtype: 'f32', shape: [8, 8], device: 'cpu' });
    const out = arena.f32([8, 8]);
    const graph = CpuGraph.capture(stream, () => matmul(stream, out, t, t));
    graph.launch(stream);
    await stream.synchronize();
    buf.dispose();
    expect(() => graph.launch(stream)).toThrow(
      /^a: pointer 0x[0-9a-f]+\+256 is not memory x manages/,
    );
    graph.dispose();
    expect(() => graph.launch(stream)).toThrow(DisposedError);
    graph.dispose(); // twice is a no-op
  });

  it('refuses nested captures and launching into a capturing stream', () => {
    const c = chain(1);
    const graph = CpuGraph.capture(stream, c.record);
    expect(() => CpuGraph.capture(stream, () => CpuGraph.capture(stream, c.record))).toThrow(
      /already capturing/,
    );
    expect(() => CpuGraph.capture(stream, () => graph.launch(stream))).toThrow(/is capturing/);
    expect(() => CpuGraph.capture(stream, 42 as unknown as () => void)).toThrow(
      InvalidArgumentError,
    );
    graph.dispose();
  });
});
