// GPU checks of the row-wise kernels against the CPU kernels (Node alone):
//   source .device/activate.sh && node --test packages/kernels/test/gpu/
// Every output is poisoned (NaN bits) before the kernel runs; errors are ‖out − ref‖ / ‖ref‖ with
// the CPU kernel run in f32 on the same (bf16/f16-rounded) inputs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HostBuffer } from '../../../core/dist/index.js';
import {
  checkKernelErrors,
  copyWithIndexCopy,
  embedding,
  indexCopy,
  reshapeAndCache,
  rmsNorm,
  ropeCosSinCache,
  rotaryEmbedding,
  siluAndMul,
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
before(async () => {
  gpu = await GpuArena.create();
  cpu = new CpuArena();
});
after(async () => {
  await gpu.dispose();
  cpu.dispose();
});

for (const dtype of ['bf16', 'f16']) {
  describe(`row kernels, ${dtype}`, () => {
    it('embedding gathers rows exactly (vectorized and scalar rows)', async () => {
      const rand = rng(11);
      for (const [v, h, t] of [
        [SMALL ? 50 : 1000, 4096, 37],
        [31, 8, 9],
        [17, 13, 5],
      ]) {
        const table = roundTo(dtype, randomF32(v * h, rand));
        const ids = Int32Array.from({ length: t }, () => Math.floor(rand() * v));
        const tableT = await gpu.upload(dtype, [v, h], encode(dtype, table));
        const idsT = await gpu.upload('i32', [t], ids);
        const out = gpu.tensor(dtype, [t, h]);
        embedding(gpu.stream, out, tableT, idsT);
        const got = await gpu.readF32(out);
        const want = new Float32Array(t * h);
        ids.forEach((id, i) => {
          want.set(table.subarray(id * h, id * h + h), i * h);
        });
        assertClose(`embedding ${v}x${h}`, got, want, dtype, 0);
      }
      await checkKernelErrors(gpu.stream);
    });

    it('rmsNorm with and without the fused residual, every row width path', async () => {
      const rand = rng(12);
      const shapes = [
        [7, 4096],
        [33, 8],
        [5, 128],
        [3, 1000],
        [2, 12288],
        [2, 40000],
        [3, 13],
        [100, 4096], // past the rows that prefetch the weight
      ];
      for (const [rows, cols] of SMALL ? shapes.slice(0, 4) : shapes) {
        for (const fused of [false, true]) {
          const x = roundTo(dtype, randomF32(rows * cols, rand, -2, 2));
          const r = roundTo(dtype, randomF32(rows * cols, rand, -2, 2));
          const w = roundTo(dtype, randomF32(cols, rand, 0.5, 1.5));
          const xT = await gpu.upload(dtype, [rows, cols], encode(dtype, x));
          const rT = await gpu.upload(dtype, [rows, cols], encode(dtype, r));
          const wT = await gpu.upload(dtype, [cols], encode(dtype, w));
          const out = gpu.tensor(dtype, [rows, cols]);
          rmsNorm(gpu.stream, out, xT, wT, { eps: 1e-5, ...(fused ? { residual: rT } : {}) });
          const cx = cpu.tensor('f32', [rows, cols], x);
          const cr = cpu.tensor('f32', [rows, cols], r);
          const co = cpu.tensor('f32', [rows, cols]);
          rmsNorm(cpu.stream, co, cx, cpu.tensor('f32', [cols], w), {
            eps: 1e-5,
            ...(fused ? { residual: cr } : {}),
          });
          await cpu.stream.synchronize();
          assertClose(
            `rmsNorm ${rows}x${cols} fused=${fused}`,
            await gpu.readF32(out),
            cpu.read(co),
            dtype,
          );
          if (fused)
            assertClose(`residual ${rows}x${cols}`, await gpu.readF32(rT), cpu.read(cr), dtype);
        }
      }
      // In place (out aliases x).
      const x = roundTo(dtype, randomF32(4 * 256, rand));
      const w = roundTo(dtype, randomF32(256, rand, 0.5, 1.5));
      const xT = await gpu.upload(dtype, [4, 256], encode(dtype, x));
      rmsNorm(gpu.stream, xT, xT, await gpu.upload(dtype, [256], encode(dtype, w)), { eps: 1e-6 });
      const co = cpu.tensor('f32', [4, 256]);
      rmsNorm(cpu.stream, co, cpu.tensor('f32', [4, 256], x), cpu.tensor('f32', [256], w), {
        eps: 1e-6,
      });
      await cpu.stream.synchronize();
      assertClose('rmsNorm in place', await gpu.readF32(xT), cpu.read(co), dtype);
    });

    it('rotaryEmbedding (neox / interleaved, partial rotary, llama3 scaling) and the fused KV write', async () => {
      const rand = rng(13);
      const cases = [
        { t: 19, nq: 8, nk: 2, hd: 128, rot: 128, neox: true, i64: false, scaling: true },
        { t: 7, nq: 4, nk: 4, hd: 64, rot: 32, neox: true, i64: true, scaling: false },
        { t: 5, nq: 4, nk: 2, hd: 8, rot: 8, neox: true, i64: false, scaling: false },
        { t: 6, nq: 2, nk: 1, hd: 64, rot: 64, neox: false, i64: false, scaling: false },
      ];
      const maxPos = 4096;
      for (const c of cases) {
        const scaling = c.scaling
          ? {
              type: 'llama3',
              factor: 8,
              lowFreqFactor: 1,
              highFreqFactor: 4,
              originalMaxPositionEmbeddings: 1024,
            }
          : null;
        const cs = ropeCosSinCache({
          rotaryDim: c.rot,
          theta: 500000,
          maxPositions: maxPos,
          scaling,
        });
        const csT = await gpu.upload('f32', [maxPos, c.rot], cs);
        const pos = Int32Array.from({ length: c.t }, () => Math.floor(rand() * maxPos));
        const posT = c.i64
          ? await gpu.upload(
              'i64',
              [c.t],
              BigInt64Array.from(pos, (p) => BigInt(p)),
            )
          : await gpu.upload('i32', [c.t], pos);
        const q = roundTo(dtype, randomF32(c.t * c.nq * c.hd, rand));
        const k = roundTo(dtype, randomF32(c.t * c.nk * c.hd, rand));
        const v = roundTo(dtype, randomF32(c.t * c.nk * c.hd, rand));
        const bs = 8;
        const blocks = Math.ceil((3 * c.t) / bs); // slots up to 3·(t−1) are used
        const slots = BigInt64Array.from({ length: c.t }, (_, i) =>
          i === 1 ? -1n : BigInt(i * 3),
        );
        for (const fused of [false, true]) {
          const qT = await gpu.upload(dtype, [c.t, c.nq * c.hd], encode(dtype, q));
          const kT = await gpu.upload(dtype, [c.t, c.nk * c.hd], encode(dtype, k));
          const vT = await gpu.upload(dtype, [c.t, c.nk * c.hd], encode(dtype, v));
          const kc = gpu.tensor(dtype, [blocks, bs, c.nk, c.hd]);
          const vc = gpu.tensor(dtype, [blocks, bs, c.nk, c.hd]);
          const slotT = await gpu.upload('i64', [c.t], slots);
          const rope = { headDim: c.hd, rotaryDim: c.rot, neox: c.neox };
          rotaryEmbedding(gpu.stream, posT, qT, kT, csT, {
            ...rope,
            ...(fused ? { cache: { v: vT, kCache: kc, vCache: vc, slotMapping: slotT } } : {}),
          });
          const cq = cpu.tensor('f32', [c.t, c.nq * c.hd], q);
          const ck = cpu.tensor('f32', [c.t, c.nk * c.hd], k);
          rotaryEmbedding(
            cpu.stream,
            cpu.tensor('i32', [c.t], pos),
            cq,
            ck,
            cpu.tensor('f32', [maxPos, c.rot], cs),
            rope,
          );
          await cpu.stream.synchronize();
          const label = `rotary hd ${c.hd} rot ${c.rot} neox ${c.neox} fused ${fused}`;
          assertClose(`${label} q`, await gpu.readF32(qT), cpu.read(cq), dtype);
          const wantK = cpu.read(ck);
          assertClose(`${label} k`, await gpu.readF32(kT), wantK, dtype);
          if (!fused) continue;
          const gotKc = await gpu.read(kc);
          const gotVc = await gpu.read(vc);
          const gotK = await gpu.read(kT);
          const width = c.nk * c.hd;
          const written = new Set();
          slots.forEach((s, i) => {
            if (s < 0n) return;
            written.add(Number(s));
            const at = Number(s) * width;
            assert.deepEqual(
              gotKc.subarray(at, at + width),
              gotK.subarray(i * width, i * width + width),
              `${label}: k cached`,
            );
            assert.deepEqual(
              gotVc.subarray(at, at + width),
              encode(dtype, v.subarray(i * width, i * width + width)),
              `${label}: v cached`,
            );
          });
          for (let s = 0; s < blocks * bs; s++) {
            if (written.has(s)) continue;
            assert.ok(
              gotKc.subarray(s * width, s * width + width).every((b) => b === 0xffff),
              `${label}: slot ${s} written`,
            );
          }
        }
      }
      await checkKernelErrors(gpu.stream);
    });

    it('siluAndMul (vectorized and scalar)', async () => {
      const rand = rng(14);
      for (const [t, i] of [
        [64, 4096],
        [5, 1024],
        [3, 7],
      ]) {
        const x = roundTo(dtype, randomF32(t * 2 * i, rand, -4, 4));
        const xT = await gpu.upload(dtype, [t, 2 * i], encode(dtype, x));
        const out = gpu.tensor(dtype, [t, i]);
        siluAndMul(gpu.stream, out, xT);
        const co = cpu.tensor('f32', [t, i]);
        siluAndMul(cpu.stream, co, cpu.tensor('f32', [t, 2 * i], x));
        await cpu.stream.synchronize();
        assertClose(`silu ${t}x${i}`, await gpu.readF32(out), cpu.read(co), dtype);
      }
    });

    it('reshapeAndCache copies rows to their slots, skips slot -1, writes nothing else', async () => {
      const rand = rng(15);
      for (const [nk, hd] of [
        [2, 64],
        [3, 4],
      ]) {
        const [t, blocks, bs] = [9, 3, 4];
        const width = nk * hd;
        const k = encode(dtype, randomF32(t * width, rand));
        const v = encode(dtype, randomF32(t * width, rand));
        const slots = BigInt64Array.from([0, 5, -1, 11, 2, -1, 7, 1, 10], BigInt);
        const kc = gpu.tensor(dtype, [blocks, bs, nk, hd]);
        const vc = gpu.tensor(dtype, [blocks, bs, nk, hd]);
        reshapeAndCache(
          gpu.stream,
          await gpu.upload(dtype, [t, width], k),
          await gpu.upload(dtype, [t, width], v),
          kc,
          vc,
          await gpu.upload('i64', [t], slots),
        );
        const [gk, gv] = [await gpu.read(kc), await gpu.read(vc)];
        const expectK = new Uint16Array(blocks * bs * width).fill(0xffff);
        const expectV = new Uint16Array(blocks * bs * width).fill(0xffff);
        slots.forEach((s, i) => {
          if (s < 0n) return;
          expectK.set(k.subarray(i * width, (i + 1) * width), Number(s) * width);
          expectV.set(v.subarray(i * width, (i + 1) * width), Number(s) * width);
        });
        assert.deepEqual(gk, expectK, `k cache nk ${nk} hd ${hd}`);
        assert.deepEqual(gv, expectV, `v cache nk ${nk} hd ${hd}`);
      }
      await checkKernelErrors(gpu.stream);
    });
  });
}

describe('indexCopy on the GPU', () => {
  it('copies 32-bit patterns to their indices (300 pairs: two launches), nothing else', async () => {
    const rand = rng(21);
    const n = 300;
    const src = Int32Array.from({ length: 512 }, (_, i) =>
      i === 0 ? 0x7fc00001 : i === 1 ? 1 : Math.floor(rand() * 2 ** 31) - 2 ** 30,
    );
    // Destinations: a shuffled subset of [0, 1000); sources: random, repeats allowed.
    const slots = Array.from({ length: 1000 }, (_, i) => i);
    for (let i = slots.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [slots[i], slots[j]] = [slots[j], slots[i]];
    }
    const dstIndex = slots.slice(0, n);
    const srcIndex = Array.from({ length: n }, (_, k) => (k < 2 ? k : Math.floor(rand() * 512)));
    const srcT = await gpu.upload('i32', [512], src);
    const dstT = gpu.tensor('i32', [1000]); // poisoned: -1 everywhere
    indexCopy(gpu.stream, dstT, dstIndex, srcT, srcIndex);
    const got = await gpu.read(dstT);
    const want = new Int32Array(1000).fill(-1);
    dstIndex.forEach((d, k) => {
      want[d] = src[srcIndex[k]];
    });
    assert.deepEqual([...got], [...want]);
    await checkKernelErrors(gpu.stream);
  });
});

describe('data-dependent errors on the GPU', () => {
  it('are skipped without touching memory and reported by checkKernelErrors, once', async () => {
    const table = await gpu.upload('bf16', [8, 16], encode('bf16', randomF32(128, rng(3))));
    const out = gpu.tensor('bf16', [2, 16]);
    embedding(gpu.stream, out, table, await gpu.upload('i32', [2], Int32Array.from([1, 40])));
    await assert.rejects(
      checkKernelErrors(gpu.stream),
      /embedding: ids\[1\] = 40 is outside the vocabulary \[0, 8\)/,
    );
    const row1 = (await gpu.read(out)).subarray(16);
    assert.ok(
      row1.every((b) => b === 0xffff),
      'the bad row is not NaN',
    );
    await checkKernelErrors(gpu.stream); // cleared

    const kc = gpu.tensor('bf16', [2, 4, 1, 8]);
    const kv = await gpu.upload('bf16', [1, 8], encode('bf16', randomF32(8, rng(4))));
    reshapeAndCache(
      gpu.stream,
      kv,
      kv,
      kc,
      gpu.tensor('bf16', [2, 4, 1, 8]),
      await gpu.upload('i64', [1], BigInt64Array.from([8n])),
    );
    await assert.rejects(
      checkKernelErrors(gpu.stream),
      /slotMapping\[0\] = 8 is outside \[-1, 8\)/,
    );
    assert.ok(
      (await gpu.read(kc)).every((b) => b === 0xffff),
      'a bad slot wrote the cache',
    );

    const cs = await gpu.upload(
      'f32',
      [4, 8],
      ropeCosSinCache({ rotaryDim: 8, theta: 10000, maxPositions: 4 }),
    );
    const q = await gpu.upload('bf16', [1, 8], encode('bf16', randomF32(8, rng(5))));
    rotaryEmbedding(gpu.stream, await gpu.upload('i32', [1], Int32Array.from([9])), q, null, cs, {
      headDim: 8,
      rotaryDim: 8,
      neox: true,
    });
    await assert.rejects(
      checkKernelErrors(gpu.stream),
      /positions\[0\] = 9 is outside the cos\/sin cache \[0, 4\)/,
    );
  });
});

describe('copyWithIndexCopy on the GPU', () => {
  // Pinned host memory that kernels address in place (HostBuffer.tensor on the device).
  const held = [];
  after(() => {
    for (const h of held) h.dispose();
  });
  const pinned = (words, fill) => {
    const h = HostBuffer.alloc(words * 4, { device: gpu.stream.device });
    held.push(h);
    const v = new Int32Array(h.buffer);
    for (let i = 0; i < words; i++) v[i] = fill(i);
    return { h, v, t: h.tensor('i32', [words]) };
  };

  for (const words of [1, 259, 786_433]) {
    // The fed words: a shuffled subset of a window in the middle of the copy (300 of them where
    // the copy has room: more than one launch's 256).
    const lo = Math.floor(words / 3);
    const hi = Math.min(words, lo + 1000);
    const n = Math.min(300, hi - lo);
    for (const feedOn of ['device', 'host']) {
      it(`${words} words from pinned host memory, ${n} fed from ${feedOn} memory`, async () => {
        const rand = rng(words);
        const stage = pinned(words, () => Math.floor(rand() * 2 ** 32) - 2 ** 31);
        const big = gpu.tensor('i32', [words + 64]); // poisoned: the copy must stop at its end
        const dst = big.slice(0, 0, words);
        const win = dst.slice(0, lo, hi);
        const pos = Array.from({ length: win.numel }, (_, i) => i);
        for (let i = pos.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [pos[i], pos[j]] = [pos[j], pos[i]];
        }
        const dstIndex = pos.slice(0, n);
        const fedVals = Int32Array.from({ length: 512 }, (_, i) => 1_000_000 + i);
        const feed =
          feedOn === 'device'
            ? await gpu.upload('i32', [512], fedVals)
            : pinned(512, (i) => fedVals[i]).t;
        const srcIndex = Array.from({ length: n }, () => Math.floor(rand() * 512));
        copyWithIndexCopy(gpu.stream, dst, stage.t, { dst: win, dstIndex, src: feed, srcIndex });
        const got = await gpu.read(big);
        const want = new Int32Array(words + 64).fill(-1);
        want.set(stage.v);
        dstIndex.forEach((d, k) => {
          want[lo + d] = fedVals[srcIndex[k]];
        });
        assert.deepEqual(got, want);
        await checkKernelErrors(gpu.stream);
      });
    }
  }

  it('device memory to pinned host memory, no index copy', async () => {
    const vals = Int32Array.from({ length: 4099 }, (_, i) => (i * 2654435761) | 0);
    const src = await gpu.upload('i32', [4099], vals);
    const out = pinned(4100, () => -1);
    copyWithIndexCopy(gpu.stream, out.t.slice(0, 0, 4099), src);
    await gpu.stream.synchronize();
    assert.deepEqual(out.v.subarray(0, 4099), vals);
    assert.equal(out.v[4099], -1);
  });
});
