// GPU checks of fusedLinear (the small-batch decode linear with its neighbours fused in) against
// the separate ops it replaces — rmsNorm, matmul (cuBLASLt), rotaryEmbedding with the KV write,
// siluAndMul, the residual add — on random inputs, 1..4 rows, bf16 and f16, odd output counts, bias,
// f32 logits; the CPU matmul as a second reference; outputs poisoned first so unwritten elements
// fail. Then a decode layer of fused ops (programmatic dependent launch between them on sm_90)
// captured in a CUDA graph replays to exactly its eager bits, and decode attention launched right
// behind the qkv projection sees the key that projection wrote. Last, the row tests again in child
// processes, once for every split of a unit's k range over warps (X_GEMV_SPLIT).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CudaGraph } from '../../../core/dist/index.js';
import {
  checkKernelErrors,
  FUSED_LINEAR_MAX_ROWS,
  fusedLinear,
  MATMUL_WORKSPACE_BYTES,
  matmul,
  pagedAttention,
  pagedAttentionWorkspaceBytes,
  rmsNorm,
  ropeCosSinCache,
  rotaryEmbedding,
  siluAndMul,
} from '../../dist/index.js';
import {
  assertClose,
  CpuArena,
  DEV,
  decode,
  encode,
  GpuArena,
  randomF32,
  rng,
  roundTo,
  SMALL,
} from './util.mjs';

// The rotaryKvCache epilogue of a q|k|v projection: nq query and nk KV heads of size hd.
const ropeKv = (
  { nq, nk, hd, neox = true },
  positions,
  cosSinCache,
  slotMapping,
  kCache,
  vCache,
) => ({
  kind: 'rotaryKvCache',
  positions,
  cosSinCache,
  headDim: hd,
  numHeads: nq,
  numKvHeads: nk,
  neox,
  kCache,
  vCache,
  slotMapping,
});

let gpu;
let cpu;
let ws;
before(async () => {
  gpu = await GpuArena.create();
  cpu = new CpuArena();
  ws = gpu.tensor('u8', [MATMUL_WORKSPACE_BYTES], { tag: 'meta' });
});
after(async () => {
  await gpu.dispose();
  cpu.dispose();
});

const up = (dtype, shape, rand, lo = -1, hi = 1, opts) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = roundTo(dtype, randomF32(n, rand, lo, hi));
  return gpu.upload(dtype, shape, encode(dtype, v), opts).then((t) => ({ t, v }));
};
const eps = 1e-5;

describe('fusedLinear on CUDA', () => {
  for (const dtype of ['bf16', 'f16']) {
    const [K, N] = SMALL ? [64, 37] : [4096, 1027];
    for (let m = 1; m <= FUSED_LINEAR_MAX_ROWS; m++) {
      it(`${dtype}, ${m} row(s): store (+bias) = matmul on the GPU and on the CPU; f32 out`, async () => {
        const rand = rng(100 + m);
        const x = await up(dtype, [m, K], rand);
        const w = await up(dtype, [N, K], rand, -0.1, 0.1, { tag: 'weights' });
        const b = await up(dtype, [N], rand);
        const out = gpu.tensor(dtype, [m, N]);
        const ref = gpu.tensor(dtype, [m, N]);
        fusedLinear(gpu.stream, out, x.t, w.t, { bias: b.t });
        matmul(gpu.stream, ref, x.t, w.t, { bias: b.t, workspace: ws });
        const outF32 = gpu.tensor('f32', [m, N]);
        fusedLinear(gpu.stream, outF32, x.t, w.t);
        await checkKernelErrors(gpu.stream);
        const got = await gpu.readF32(out);
        assertClose('store vs matmul', got, await gpu.readF32(ref), dtype);
        const co = cpu.tensor('f32', [m, N]);
        matmul(cpu.stream, co, cpu.tensor('f32', [m, K], x.v), cpu.tensor('f32', [N, K], w.v), {
          bias: cpu.tensor('f32', [N], b.v),
        });
        await cpu.stream.synchronize();
        const cref = cpu.read(co);
        assertClose('store vs CPU matmul', got, cref, dtype);
        const noBias = cref.map((v, i) => v - b.v[i % N]);
        assertClose('f32 out vs CPU matmul', await gpu.readF32(outF32), noBias, 'f16');
      });

      it(`${dtype}, ${m} row(s): norm + addToResidual = rmsNorm, matmul, residual add`, async () => {
        const rand = rng(200 + m);
        const x = await up(dtype, [m, K], rand, -2, 2);
        const nw = await up(dtype, [K], rand, 0.5, 1.5, { tag: 'weights' });
        const w = await up(dtype, [N, K], rand, -0.1, 0.1, { tag: 'weights' });
        const r0 = roundTo(dtype, randomF32(m * N, rand));
        const res = await gpu.upload(dtype, [m, N], encode(dtype, r0));
        const resRef = await gpu.upload(dtype, [m, N], encode(dtype, r0));
        fusedLinear(gpu.stream, res, x.t, w.t, {
          norm: { weight: nw.t, eps },
          epilogue: { kind: 'addToResidual' },
        });
        const normed = gpu.tensor(dtype, [m, K]);
        const y = gpu.tensor(dtype, [m, N]);
        const scratch = gpu.tensor(dtype, [m, N]);
        rmsNorm(gpu.stream, normed, x.t, nw.t, { eps });
        matmul(gpu.stream, y, normed, w.t, { workspace: ws });
        // The unfused residual add lives in rmsNorm's residual option: residual <- y + residual.
        rmsNorm(
          gpu.stream,
          scratch,
          y,
          await gpu.upload(dtype, [N], encode(dtype, new Float32Array(N).fill(1))),
          {
            eps,
            residual: resRef,
          },
        );
        await checkKernelErrors(gpu.stream);
        assertClose('residual', await gpu.readF32(res), await gpu.readF32(resRef), dtype);
      });

      it(`${dtype}, ${m} row(s): norm + siluAndMul = rmsNorm, matmul, siluAndMul`, async () => {
        const rand = rng(300 + m);
        const I = SMALL ? 40 : 1536;
        const x = await up(dtype, [m, K], rand, -2, 2);
        const nw = await up(dtype, [K], rand, 0.5, 1.5, { tag: 'weights' });
        const w = await up(dtype, [2 * I, K], rand, -0.1, 0.1, { tag: 'weights' });
        const out = gpu.tensor(dtype, [m, I]);
        fusedLinear(gpu.stream, out, x.t, w.t, {
          norm: { weight: nw.t, eps },
          epilogue: { kind: 'siluAndMul' },
        });
        const normed = gpu.tensor(dtype, [m, K]);
        const gu = gpu.tensor(dtype, [m, 2 * I]);
        const ref = gpu.tensor(dtype, [m, I]);
        rmsNorm(gpu.stream, normed, x.t, nw.t, { eps });
        matmul(gpu.stream, gu, normed, w.t, { workspace: ws });
        siluAndMul(gpu.stream, ref, gu);
        await checkKernelErrors(gpu.stream);
        assertClose('silu', await gpu.readF32(out), await gpu.readF32(ref), dtype);
      });

      for (const neox of [true, false]) {
        it(`${dtype}, ${m} row(s): norm + bias + rotaryKvCache (${neox ? 'neox' : 'interleaved'}) = rmsNorm, matmul, rotary with the KV write`, async () => {
          const rand = rng(400 + m + (neox ? 0 : 50));
          const [nq, nk, hd, blocks, bs, maxPos] = SMALL
            ? [2, 1, 16, 4, 4, 64]
            : [8, 2, 128, 16, 16, 4096];
          const R = (nq + 2 * nk) * hd;
          const x = await up(dtype, [m, K], rand, -2, 2);
          const nw = await up(dtype, [K], rand, 0.5, 1.5, { tag: 'weights' });
          const w = await up(dtype, [R, K], rand, -0.1, 0.1, { tag: 'weights' });
          const b = await up(dtype, [R], rand, -0.5, 0.5, { tag: 'weights' });
          const cs = await gpu.upload(
            'f32',
            [maxPos, hd],
            ropeCosSinCache({ rotaryDim: hd, theta: 500000, maxPositions: maxPos }),
          );
          const posData = Int32Array.from({ length: m }, (_, i) => (i * 977 + 5) % maxPos);
          const pos = await gpu.upload('i32', [m], posData);
          // Token 1 (when there is one) is padding: slot -1, nothing cached.
          const slotData = BigInt64Array.from({ length: m }, (_, i) =>
            i === 1 ? -1n : BigInt((i * 13 + 3) % (blocks * bs)),
          );
          const slots = await gpu.upload('i64', [m], slotData);
          const cacheShape = [blocks, bs, nk, hd];
          const caches = [0, 1, 2, 3].map(() => gpu.tensor(dtype, cacheShape, { tag: 'kv_cache' }));
          const out = gpu.tensor(dtype, [m, R]);
          fusedLinear(gpu.stream, out, x.t, w.t, {
            bias: b.t,
            norm: { weight: nw.t, eps },
            epilogue: ropeKv({ nq, nk, hd, neox }, pos, cs, slots, caches[0], caches[1]),
          });
          const normed = gpu.tensor(dtype, [m, K]);
          const ref = gpu.tensor(dtype, [m, R]);
          rmsNorm(gpu.stream, normed, x.t, nw.t, { eps });
          matmul(gpu.stream, ref, normed, w.t, { bias: b.t, workspace: ws });
          const q = ref.slice(1, 0, nq * hd);
          const k = ref.slice(1, nq * hd, (nq + nk) * hd);
          const v = ref.slice(1, (nq + nk) * hd, R);
          rotaryEmbedding(gpu.stream, pos, q, k, cs, {
            headDim: hd,
            rotaryDim: hd,
            neox,
            cache: { v, kCache: caches[2], vCache: caches[3], slotMapping: slots },
          });
          await checkKernelErrors(gpu.stream);
          assertClose('q|k|v out', await gpu.readF32(out), await gpu.readF32(ref), dtype);
          const width = nk * hd;
          const [kc, vc, kr, vr] = await Promise.all(caches.map((c) => gpu.readF32(c)));
          for (let t = 0; t < m; t++) {
            const slot = Number(slotData[t]);
            if (slot < 0) continue;
            const row = (a) => a.subarray(slot * width, (slot + 1) * width);
            assertClose(`k cache, token ${t}`, row(kc), row(kr), dtype);
            assertClose(`v cache, token ${t}`, row(vc), row(vr), dtype);
          }
          // Nothing else was written: every other slot is still the poison (NaN).
          const written = new Set(Array.from(slotData, Number).filter((s) => s >= 0));
          for (let s = 0; s < blocks * bs; s++) {
            if (written.has(s)) continue;
            assert.ok(
              Number.isNaN(kc[s * width]) && Number.isNaN(vc[s * width + width - 1]),
              `slot ${s} written`,
            );
          }
        });
      }
    }

    // One row at shapes the decoder does not use: k = 8 (a single 16-byte chunk) … 14344 (k ranges
    // of split warps that end mid-iteration), n = 1 … 50001 (fewer units than warps, odd counts,
    // many rounds of the persistent grid); every epilogue but rotary (covered above).
    const shapes = SMALL
      ? [
          [8, 3],
          [2056, 17],
        ]
      : [
          [8, 1],
          [1000, 37],
          [4112, 263],
          [14344, 4099],
          [4096, 50001],
        ];
    for (const [k, n] of shapes) {
      it(`${dtype}, 1 row, k ${k}, n ${n}: store, f32 out, residual, silu = the separate ops`, async () => {
        const rand = rng(500 + k + n);
        const x = await up(dtype, [1, k], rand, -2, 2);
        const nw = await up(dtype, [k], rand, 0.5, 1.5, { tag: 'weights' });
        const w = await up(dtype, [n, k], rand, -0.1, 0.1, { tag: 'weights' });
        const b = await up(dtype, [n], rand);
        const normed = gpu.tensor(dtype, [1, k]);
        rmsNorm(gpu.stream, normed, x.t, nw.t, { eps });
        const ref = gpu.tensor(dtype, [1, n]);
        matmul(gpu.stream, ref, x.t, w.t, { bias: b.t, workspace: ws });
        const refNormed = gpu.tensor('f32', [1, n]);
        matmul(gpu.stream, refNormed, normed, w.t, { workspace: ws });
        const out = gpu.tensor(dtype, [1, n]);
        fusedLinear(gpu.stream, out, x.t, w.t, { bias: b.t });
        const outF32 = gpu.tensor('f32', [1, n]);
        fusedLinear(gpu.stream, outF32, x.t, w.t, { norm: { weight: nw.t, eps } });
        const r0 = encode(dtype, roundTo(dtype, randomF32(n, rand)));
        const res = await gpu.upload(dtype, [1, n], r0);
        fusedLinear(gpu.stream, res, x.t, w.t, { epilogue: { kind: 'addToResidual' } });
        const y = gpu.tensor(dtype, [1, n]);
        matmul(gpu.stream, y, x.t, w.t, { workspace: ws });
        await checkKernelErrors(gpu.stream);
        assertClose('store vs matmul', await gpu.readF32(out), await gpu.readF32(ref), dtype);
        assertClose(
          'norm, f32 out vs rmsNorm, matmul',
          await gpu.readF32(outF32),
          await gpu.readF32(refNormed),
          dtype,
        );
        const yv = await gpu.readF32(y);
        const rv = decode(dtype, r0);
        assertClose(
          'residual',
          await gpu.readF32(res),
          roundTo(
            dtype,
            yv.map((v, i) => v + rv[i]),
          ),
          dtype,
        );
        // siluAndMul: w as [gate; up] of (n - 1) / 2 rows each (odd n from 3 to 4099).
        if (n % 2 === 0 || n < 3 || n > 4099) return;
        const half = (n - 1) / 2;
        const wg = w.t.slice(0, 0, 2 * half);
        const act = gpu.tensor(dtype, [1, half]);
        fusedLinear(gpu.stream, act, x.t, wg, { epilogue: { kind: 'siluAndMul' } });
        const gu = gpu.tensor(dtype, [1, 2 * half]);
        const actRef = gpu.tensor(dtype, [1, half]);
        matmul(gpu.stream, gu, x.t, wg, { workspace: ws });
        siluAndMul(gpu.stream, actRef, gu);
        await checkKernelErrors(gpu.stream);
        assertClose('silu', await gpu.readF32(act), await gpu.readF32(actRef), dtype);
      });
    }

    it(`${dtype}: refuses 5 rows, a K that is not a multiple of 8, and an overlapping out`, async () => {
      const w = gpu.tensor(dtype, [16, 64], { tag: 'weights' });
      assert.throws(
        () => fusedLinear(gpu.stream, gpu.tensor(dtype, [5, 16]), gpu.tensor(dtype, [5, 64]), w),
        /x\.shape/,
      );
      assert.throws(
        () =>
          fusedLinear(
            gpu.stream,
            gpu.tensor(dtype, [1, 16]),
            gpu.tensor(dtype, [1, 60]),
            gpu.tensor(dtype, [16, 60]),
          ),
        /multiple of 8/,
      );
      const buf = gpu.tensor(dtype, [1, 80]);
      assert.throws(
        () => fusedLinear(gpu.stream, buf.slice(1, 48, 64), buf.slice(1, 0, 64), w),
        /does not overlap/,
      );
    });
  }

  it('decode attention right behind the qkv projection sees the key that projection wrote', async () => {
    // Decode attention launches behind the projection (programmatic dependent launch) and may
    // start before it ends; this step's key comes from that projection. The slots of this and
    // later steps hold NaN until the projection writes them, so a key read before the wait shows
    // as NaN or as a difference from the same attention run again once everything has finished.
    const dtype = 'bf16';
    const rand = rng(11);
    const [H, nq, nk, hd, bs, blocks, ctx0] = SMALL
      ? [256, 4, 2, 64, 16, 8, 40]
      : [4096, 32, 8, 128, 16, 64, 299];
    const R = (nq + 2 * nk) * hd;
    const norm = (await up(dtype, [H], rand, 0.5, 1.5, { tag: 'weights' })).t;
    const wqkv = (await up(dtype, [R, H], rand, -0.05, 0.05, { tag: 'weights' })).t;
    const maxPos = blocks * bs;
    const cs = await gpu.upload(
      'f32',
      [maxPos, hd],
      ropeCosSinCache({ rotaryDim: hd, theta: 10000, maxPositions: maxPos }),
      { tag: 'weights' },
    );
    const slotsPer = nk * hd;
    const cacheBits = () => {
      const bits = encode(dtype, randomF32(blocks * bs * slotsPer, rand));
      bits.fill(0x7fc0, ctx0 * slotsPer); // NaN from this step's slot on
      return bits;
    };
    const kc = await gpu.upload(dtype, [blocks, bs, nk, hd], cacheBits(), { tag: 'kv_cache' });
    const vc = await gpu.upload(dtype, [blocks, bs, nk, hd], cacheBits(), { tag: 'kv_cache' });
    const x = await gpu.upload(dtype, [1, H], encode(dtype, randomF32(H, rand)));
    const qkv = gpu.tensor(dtype, [1, R]);
    const out = gpu.tensor(dtype, [1, nq * hd]);
    const pos = gpu.tensor('i32', [1], { tag: 'meta' });
    const slot = gpu.tensor('i64', [1], { tag: 'meta' });
    const seqLens = gpu.tensor('i32', [1], { tag: 'meta' });
    const meta = {
      blockTables: await gpu.upload(
        'i32',
        [1, blocks],
        Int32Array.from({ length: blocks }, (_, j) => j),
        {
          tag: 'meta',
        },
      ),
      seqLens,
      queryStartLoc: await gpu.upload('i32', [2], Int32Array.from([0, 1]), { tag: 'meta' }),
      scale: 1 / Math.sqrt(hd),
      maxSeqLen: maxPos,
      decode: true,
    };
    const wsBytes = pagedAttentionWorkspaceBytes(DEV, {
      numHeads: nq,
      numKvHeads: nk,
      headDim: hd,
      blockSize: bs,
      maxBlocks: blocks,
      maxTokens: 1,
    });
    const attnWs = gpu.tensor('u8', [Math.max(256, wsBytes)]);
    // hostMetadata: the decode kernel reads the (host-written) metadata before its wait, and with
    // earlierKeysReady (the lean kernel this batch of one runs) the earlier steps' keys too.
    const attend = (hostMetadata) =>
      pagedAttention(gpu.stream, out, qkv.slice(1, 0, nq * hd), kc, vc, {
        ...meta,
        workspace: attnWs,
        hostMetadata,
        earlierKeysReady: hostMetadata,
      });
    for (let step = 0; step < 16; step++) {
      const hostMetadata = step % 2 === 1;
      const p = ctx0 + step;
      await gpu.write(pos, Int32Array.from([p]));
      await gpu.write(slot, BigInt64Array.from([BigInt(p)]));
      await gpu.write(seqLens, Int32Array.from([p + 1]));
      gpu.poison(out);
      fusedLinear(gpu.stream, qkv, x, wqkv, {
        norm: { weight: norm, eps },
        epilogue: ropeKv({ nq, nk, hd }, pos, cs, slot, kc, vc),
      });
      attend(hostMetadata);
      const behind = await gpu.read(out);
      await checkKernelErrors(gpu.stream);
      gpu.poison(out);
      attend(false);
      const settled = await gpu.read(out);
      assert.ok(
        decode(dtype, behind).every(Number.isFinite),
        `step ${step} (hostMetadata ${hostMetadata}): attention output finite`,
      );
      assert.deepEqual(
        behind,
        settled,
        `step ${step} (hostMetadata ${hostMetadata}): attention behind the projection = attention after it`,
      );
    }
  });

  for (const m of SMALL ? [2] : [1, 3])
    it(`a decode layer of fused ops for ${m} row(s) in a CUDA graph replays to its eager bits (PDL edges captured)`, async () => {
      const dtype = 'bf16';
      const rand = rng(7);
      const [H, I, nq, nk, hd, bs, blocks, maxPos] = SMALL
        ? [64, 96, 2, 1, 32, 4, 8, 64]
        : [1024, 2816, 8, 2, 128, 16, 64, 4096];
      const R = (nq + 2 * nk) * hd;
      const W = { tag: 'weights' };
      const inNorm = (await up(dtype, [H], rand, 0.5, 1.5, W)).t;
      const postNorm = (await up(dtype, [H], rand, 0.5, 1.5, W)).t;
      const wqkv = (await up(dtype, [R, H], rand, -0.05, 0.05, W)).t;
      const wo = (await up(dtype, [H, nq * hd], rand, -0.05, 0.05, W)).t;
      const wgu = (await up(dtype, [2 * I, H], rand, -0.05, 0.05, W)).t;
      const wd = (await up(dtype, [H, I], rand, -0.05, 0.05, W)).t;
      const wl = (await up(dtype, [H, H], rand, -0.05, 0.05, W)).t;
      const cs = await gpu.upload(
        'f32',
        [maxPos, hd],
        ropeCosSinCache({ rotaryDim: hd, theta: 10000, maxPositions: maxPos }),
        W,
      );
      const pos = await gpu.upload(
        'i32',
        [m],
        Int32Array.from({ length: m }, (_, i) => (17 + i * 100) % maxPos),
        { tag: 'meta' },
      );
      const slots = await gpu.upload(
        'i64',
        [m],
        BigInt64Array.from({ length: m }, (_, i) => BigInt(3 + i * 9)),
        { tag: 'meta' },
      );
      const kc = gpu.tensor(dtype, [blocks, bs, nk, hd], { tag: 'kv_cache' });
      const vc = gpu.tensor(dtype, [blocks, bs, nk, hd], { tag: 'kv_cache' });
      const x0 = encode(dtype, randomF32(m * H, rand));
      const residual = await gpu.upload(dtype, [m, H], x0);
      const qkv = gpu.tensor(dtype, [m, R]);
      const act = gpu.tensor(dtype, [m, I]);
      const logits = gpu.tensor('f32', [m, H]);
      const layer = () => {
        fusedLinear(gpu.stream, qkv, residual, wqkv, {
          norm: { weight: inNorm, eps },
          epilogue: ropeKv({ nq, nk, hd }, pos, cs, slots, kc, vc),
        });
        // o_proj reads the q heads as if they were attention's output (what matters is the chain).
        fusedLinear(gpu.stream, residual, qkv.slice(1, 0, nq * hd), wo, {
          epilogue: { kind: 'addToResidual' },
        });
        fusedLinear(gpu.stream, act, residual, wgu, {
          norm: { weight: postNorm, eps },
          epilogue: { kind: 'siluAndMul' },
        });
        fusedLinear(gpu.stream, residual, act, wd, { epilogue: { kind: 'addToResidual' } });
        fusedLinear(gpu.stream, logits, residual, wl, {
          norm: { weight: postNorm, eps },
        });
      };
      const run = async (fn) => {
        await gpu.write(residual, x0);
        gpu.poison(kc);
        gpu.poison(qkv);
        gpu.poison(act);
        gpu.poison(logits);
        for (let i = 0; i < 3; i++) fn();
        await checkKernelErrors(gpu.stream);
        return Promise.all([residual, kc, act, logits].map((t) => gpu.read(t)));
      };
      const eager = await run(layer);
      await gpu.stream.synchronize();
      const g = CudaGraph.capture(gpu.stream, layer);
      try {
        const replayed = await run(() => g.launch(gpu.stream));
        for (let i = 0; i < eager.length; i++) {
          assert.deepEqual(replayed[i], eager[i], `tensor ${i} differs between replay and eager`);
        }
        assert.ok(decode('bf16', eager[0]).every(Number.isFinite), 'residual finite');
        assert.ok(eager[3].every(Number.isFinite), 'logits finite');
      } finally {
        g.dispose();
      }
    });
});

// The launcher picks each layer's split (1, 2, 4 or 8 warps of a block sharing a unit's k range)
// from its size; X_GEMV_SPLIT forces one (read once per process). Every split runs the row tests
// above for 1 and 3 rows (every epilogue, bf16 and f16) in a process of its own, forced even where
// the launcher would not pick it (a split of 8 on the short k of the SMALL sizes leaves warps with
// no chunk; on k = 4096 every warp has less than a whole iteration).
if (process.env.X_GEMV_SPLIT === undefined) {
  describe('fusedLinear splits', () => {
    for (const split of [1, 2, 4, 8]) {
      it(`${split} warp(s) per unit: the row tests pass`, async () => {
        const env = { ...process.env, X_GEMV_SPLIT: String(split) };
        delete env.NODE_TEST_CONTEXT; // set by a parent node --test: the child would report to it, not in TAP
        const args = [
          '--test',
          '--test-reporter=tap',
          '--test-name-pattern=, [13] row\\(s\\)',
          fileURLToPath(import.meta.url),
        ];
        const { stdout } = await new Promise((resolve, reject) => {
          execFile(
            process.execPath,
            args,
            { env, timeout: 300_000, maxBuffer: 1 << 24 },
            (err, out, errOut) =>
              err
                ? reject(new Error(`split ${split}: ${err.message}\n${out}\n${errOut}`))
                : resolve({ stdout: out }),
          );
        });
        const pass = Number(/# pass (\d+)/.exec(stdout)?.[1] ?? 0);
        const fail = Number(/# fail (\d+)/.exec(stdout)?.[1] ?? -1);
        assert.equal(fail, 0, stdout);
        assert.ok(pass >= 2 * 5 * 2, `${pass} row tests passed:\n${stdout}`);
      });
    }
  });
}
