// Workspace.upload moves only what a step's kernels read: every input, and the block-table rows
// of the step's sequences (a decode workspace is planned for the largest batch bucket and the
// longest model length; copying all of its tables every step would dominate a small step's
// host→device traffic). The rows past the step's stay as they were on the device.
import { HostBuffer, InvalidArgumentError, Stream, type Tensor } from '@x/core';
import { Allocator } from '@x/cumem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stageInputs } from './step-inputs.js';
import { Workspace } from './workspace.js';

let allocator: Allocator;
let stream: Stream;
beforeAll(async () => {
  allocator = await Allocator.create({ device: 'cpu' });
  stream = Stream.create('cpu');
});
afterAll(async () => {
  stream.dispose();
  await allocator.dispose();
});

const MB = 6; // block-table columns
const plan = () =>
  new Workspace(allocator, {
    tokens: 4,
    seqs: 4,
    maxBlocksPerSeq: MB,
    hidden: 8,
    qWidth: 8,
    kvWidth: 4,
    intermediate: 8,
    vocab: 11,
  });

async function readI32(t: Tensor): Promise<Int32Array> {
  const h = HostBuffer.alloc(t.byteLength);
  stream.copy(h.ptr, t.ptr, t.byteLength);
  await stream.synchronize();
  const out = new Int32Array(h.buffer.slice(0, t.byteLength));
  h.dispose();
  return out;
}

describe('Workspace.upload', () => {
  it('copies every input and only the block-table rows of the step', async () => {
    const ws = plan();
    try {
      const poison = 0x7e7e7e7e;
      stream.fill(ws.blockTables.ptr, ws.blockTables.byteLength, poison, 4);
      stream.fill(ws.seqLens.ptr, ws.seqLens.byteLength, poison, 4);
      await ws.nextStaging(1000);
      const step = { tokens: [5], blockTable: [3, 1], contextLength: 20 };
      stageInputs(ws, [step], 16, 1);
      ws.upload(stream, 1);
      const tables = await readI32(ws.blockTables);
      expect([...tables.subarray(0, 2)]).toEqual([3, 1]);
      expect([...tables.subarray(MB)]).toEqual(new Array(3 * MB).fill(poison));
      expect((await readI32(ws.seqLens))[0]).toBe(20);
      expect((await readI32(ws.ids))[0]).toBe(5);
      expect(ws.uploadBytes(1)).toBe(ws.uploadBytes(0) + MB * 4);
      expect(ws.uploadBytes()).toBeLessThanOrEqual(ws.inputBytes);

      // All rows (the default): the whole tables.
      await ws.nextStaging(1000);
      stageInputs(ws, [step, step, step, step], 16);
      ws.upload(stream);
      const all = await readI32(ws.blockTables);
      for (let r = 0; r < 4; r++) expect([...all.subarray(r * MB, r * MB + 2)]).toEqual([3, 1]);
    } finally {
      await stream.synchronize();
      ws.dispose();
    }
  });

  it('refuses more rows than the plan has, naming the argument', () => {
    const ws = plan();
    try {
      for (const bad of [5, -1, 1.5]) {
        expect(() => ws.upload(stream, bad)).toThrow(InvalidArgumentError);
        expect(() => ws.upload(stream, bad)).toThrow(/seqs/);
      }
    } finally {
      ws.dispose();
    }
  });
});
