// GPU checks of matmul (cuBLASLt) against the CPU kernel: odd and Llama-like shapes, bias epilogue,
// row-strided outputs (half of a wider buffer, as a fused gate/up writes), f32 logits output.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  checkKernelErrors,
  gpuKernelInfo,
  MATMUL_WORKSPACE_BYTES,
  matmul,
} from '../../dist/index.js';
import {
  assertClose,
  CpuArena,
  encode,
  GpuArena,
  randomF32,
  rng,
  roundTo,
  SMALL,
} from './util.mjs';

let gpu;
let cpu;
let ws;
before(async () => {
  gpu = await GpuArena.create();
  cpu = new CpuArena();
  ws = gpu.tensor('u8', [MATMUL_WORKSPACE_BYTES]);
});
after(async () => {
  await gpu.dispose();
  cpu.dispose();
});

describe('matmul on CUDA (cuBLASLt)', () => {
  it('opens cuBLASLt', () => {
    const info = gpuKernelInfo();
    console.log(`# ${info.cublasLtDetail}`);
    assert.equal(info.cublasLt, true, info.cublasLtDetail);
  });

  for (const dtype of ['bf16', 'f16']) {
    const shapes = SMALL
      ? [
          [3, 64, 32, false, dtype],
          [5, 40, 24, true, 'f32'],
        ]
      : [
          [1, 4096, 4096, false, dtype],
          [7, 1000, 312, false, dtype],
          [64, 6144, 4096, false, dtype],
          [33, 256, 512, true, dtype],
          [129, 384, 1000, true, 'f32'],
          [8, 32000, 512, false, 'f32'],
        ];
    for (const [m, n, k, bias, outDtype] of shapes) {
      it(`${dtype}: [${m}, ${k}] · [${n}, ${k}]ᵀ${bias ? ' + bias' : ''} -> ${outDtype}`, async () => {
        const rand = rng(m * 7 + n + k);
        const a = roundTo(dtype, randomF32(m * k, rand));
        const w = roundTo(dtype, randomF32(n * k, rand, -0.5, 0.5));
        const b = roundTo(outDtype === 'f32' ? 'bf16' : dtype, randomF32(n, rand));
        const aT = await gpu.upload(dtype, [m, k], encode(dtype, a));
        const wT = await gpu.upload(dtype, [n, k], encode(dtype, w));
        const biasT = bias
          ? await gpu.upload(outDtype, [n], outDtype === 'f32' ? b : encode(dtype, b))
          : undefined;
        const out = gpu.tensor(outDtype, [m, n]);
        matmul(gpu.stream, out, aT, wT, { workspace: ws, ...(biasT ? { bias: biasT } : {}) });
        const co = cpu.tensor('f32', [m, n]);
        matmul(
          cpu.stream,
          co,
          cpu.tensor('f32', [m, k], a),
          cpu.tensor('f32', [n, k], w),
          bias ? { bias: cpu.tensor('f32', [n], b) } : {},
        );
        await cpu.stream.synchronize();
        assertClose(`matmul ${m}x${n}x${k}`, await gpu.readF32(out), cpu.read(co), dtype);
      });
    }

    it(`${dtype}: writes into half of a wider buffer (row stride), without a workspace`, async () => {
      const [m, n, k] = SMALL ? [4, 64, 32] : [17, 512, 256];
      const rand = rng(99);
      const a = roundTo(dtype, randomF32(m * k, rand));
      const w = roundTo(dtype, randomF32(n * k, rand));
      const wide = gpu.tensor(dtype, [m, 2 * n]);
      const aT = await gpu.upload(dtype, [m, k], encode(dtype, a));
      const wT = await gpu.upload(dtype, [n, k], encode(dtype, w));
      matmul(gpu.stream, wide.slice(1, n, 2 * n), aT, wT);
      const got = await gpu.readF32(wide);
      const co = cpu.tensor('f32', [m, n]);
      matmul(cpu.stream, co, cpu.tensor('f32', [m, k], a), cpu.tensor('f32', [n, k], w));
      await cpu.stream.synchronize();
      const right = new Float32Array(m * n);
      const left = new Float32Array(m * n);
      for (let r = 0; r < m; r++) {
        right.set(got.subarray(r * 2 * n + n, r * 2 * n + 2 * n), r * n);
        left.set(got.subarray(r * 2 * n, r * 2 * n + n), r * n);
      }
      assertClose('strided out', right, cpu.read(co), dtype);
      assert.ok(left.every(Number.isNaN), 'matmul wrote outside its half');
      await checkKernelErrors(gpu.stream);
    });
  }
});
