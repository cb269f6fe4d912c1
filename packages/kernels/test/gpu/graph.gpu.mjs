// CUDA graphs over the kernels: a decode step of one attention layer (fused residual RMSNorm, qkv
// GEMM, rotary with the KV write, split-KV decode attention, o GEMM, SiLU-and-mul) captured once and
// replayed equals eager execution bit for bit; it refuses to launch while a tag it uses sleeps, and
// after a cumem sleep(level 1)/wake cycle the same graph still gives the same bits.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CudaGraph, HostBuffer, Tensor } from '../../../core/dist/index.js';
import { deviceAllocForTesting, deviceFreeForTesting } from '../../../core/dist/testing.js';
import {
  checkKernelErrors,
  MATMUL_WORKSPACE_BYTES,
  matmul,
  pagedAttention,
  pagedAttentionWorkspaceBytes,
  rmsNorm,
  ropeCosSinCache,
  rotaryEmbedding,
  sample,
  sampleWorkspaceBytes,
  siluAndMul,
} from '../../dist/index.js';
import { DEV, encode, GpuArena, randomF32, rng } from './util.mjs';

let gpu;
before(async () => {
  gpu = await GpuArena.create();
});
after(async () => {
  await gpu.dispose();
});

const [B, H, NQ, NK, HD, BS, MAXB, I] = [8, 512, 4, 2, 128, 16, 20, 1024];

async function buildLayer() {
  const rand = rng(21);
  const w = { tag: 'weights' };
  const up = (dtype, shape, lo = -0.05, hi = 0.05, opts = w) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return gpu.upload(dtype, shape, encode(dtype, randomF32(n, rand, lo, hi)), opts);
  };
  const L = {
    norm: await up('bf16', [H], 0.5, 1.5),
    wqkv: await up('bf16', [(NQ + 2 * NK) * HD, H]),
    wo: await up('bf16', [H, NQ * HD]),
    wgu: await up('bf16', [2 * I, H]),
    wl: await up('bf16', [I, I]),
    cos: await gpu.upload(
      'f32',
      [4096, HD],
      ropeCosSinCache({ rotaryDim: HD, theta: 10000, maxPositions: 4096 }),
      w,
    ),
  };
  const a = { tag: 'activations' };
  L.x = gpu.tensor('bf16', [B, H], a);
  L.residual = gpu.tensor('bf16', [B, H], a);
  L.normed = gpu.tensor('bf16', [B, H], a);
  L.qkv = gpu.tensor('bf16', [B, (NQ + 2 * NK) * HD], a);
  L.attn = gpu.tensor('bf16', [B, NQ * HD], a);
  L.o = gpu.tensor('bf16', [B, H], a);
  L.gu = gpu.tensor('bf16', [B, 2 * I], a);
  L.act = gpu.tensor('bf16', [B, I], a);
  L.logits = gpu.tensor('f32', [B, I], a);
  L.gemmWs = gpu.tensor('u8', [MATMUL_WORKSPACE_BYTES], { tag: 'meta' });
  const attnBytes = pagedAttentionWorkspaceBytes(DEV, {
    numHeads: NQ,
    numKvHeads: NK,
    headDim: HD,
    blockSize: BS,
    maxBlocks: MAXB,
    maxTokens: B,
  });
  L.attnWs = gpu.tensor('u8', [Math.max(256, attnBytes)], { tag: 'meta' });
  const kv = { tag: 'kv_cache' };
  L.kc = gpu.tensor('bf16', [B * MAXB, BS, NK, HD], kv);
  L.vc = gpu.tensor('bf16', [B * MAXB, BS, NK, HD], kv);
  // Step metadata: sequence b owns blocks [b·MAXB, (b+1)·MAXB); lengths vary.
  const lens = Int32Array.from({ length: B }, (_, b) => 1 + ((b * 37) % (MAXB * BS - 1)));
  const table = Int32Array.from({ length: B * MAXB }, (_, i) => i);
  const m = { tag: 'meta' };
  L.positions = await gpu.upload(
    'i32',
    [B],
    Int32Array.from(lens, (l) => l - 1),
    m,
  );
  L.slots = await gpu.upload(
    'i64',
    [B],
    BigInt64Array.from(lens, (l, b) => BigInt(b * MAXB * BS + l - 1)),
    m,
  );
  L.meta = {
    blockTables: await gpu.upload('i32', [B, MAXB], table, m),
    seqLens: await gpu.upload('i32', [B], lens, m),
    queryStartLoc: await gpu.upload(
      'i32',
      [B + 1],
      Int32Array.from({ length: B + 1 }, (_, i) => i),
      m,
    ),
    scale: 1 / Math.sqrt(HD),
    workspace: L.attnWs,
  };
  // Per-step inputs kept on the host: re-uploaded before each run (eager or replay).
  L.inputs = {
    x: encode('bf16', randomF32(B * H, rand)),
    residual: encode('bf16', randomF32(B * H, rand)),
    kc: encode('bf16', randomF32(L.kc.numel, rand)),
    vc: encode('bf16', randomF32(L.vc.numel, rand)),
  };
  return L;
}

async function resetInputs(L) {
  await gpu.write(L.x, L.inputs.x);
  await gpu.write(L.residual, L.inputs.residual);
  await gpu.write(L.kc, L.inputs.kc);
  await gpu.write(L.vc, L.inputs.vc);
  for (const t of [L.normed, L.qkv, L.attn, L.o, L.gu, L.act, L.logits]) gpu.poison(t);
}

function step(L, s) {
  const ws = { workspace: L.gemmWs };
  rmsNorm(s, L.normed, L.x, L.norm, { eps: 1e-5, residual: L.residual });
  matmul(s, L.qkv, L.normed, L.wqkv, ws);
  const q = L.qkv.slice(1, 0, NQ * HD);
  const k = L.qkv.slice(1, NQ * HD, (NQ + NK) * HD);
  const v = L.qkv.slice(1, (NQ + NK) * HD, (NQ + 2 * NK) * HD);
  rotaryEmbedding(s, L.positions, q, k, L.cos, {
    headDim: HD,
    rotaryDim: HD,
    neox: true,
    cache: { v, kCache: L.kc, vCache: L.vc, slotMapping: L.slots },
  });
  pagedAttention(s, L.attn, q, L.kc, L.vc, L.meta);
  matmul(s, L.o, L.attn, L.wo, ws);
  matmul(s, L.gu, L.o, L.wgu, ws);
  siluAndMul(s, L.act, L.gu);
  matmul(s, L.logits, L.act, L.wl, ws);
}

async function outputs(L) {
  return Promise.all([
    gpu.read(L.residual),
    gpu.read(L.attn),
    gpu.read(L.act),
    gpu.read(L.logits),
    gpu.read(L.kc),
  ]);
}

function assertSame(label, a, b) {
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Buffer.from(a[i].buffer).equals(Buffer.from(b[i].buffer)),
      `${label}: output ${i} differs`,
    );
    if (a[i] instanceof Float32Array)
      assert.ok(a[i].every(Number.isFinite), `${label}: output ${i} not finite`);
  }
}

describe('CUDA graphs over the kernels', () => {
  it('capture + replay equals eager, and stays valid across sleep(level 1)/wake', async () => {
    const L = await buildLayer();
    const s = gpu.stream;
    await resetInputs(L);
    step(L, s);
    await checkKernelErrors(s);
    const eager = await outputs(L);

    await resetInputs(L);
    const graph = CudaGraph.capture(s, () => step(L, s));
    assert.ok(graph.nodeCount >= 9, `nodeCount ${graph.nodeCount}`);
    assert.ok(graph.bufferCount >= 10, `bufferCount ${graph.bufferCount}`);
    console.log(`# graph: ${graph.nodeCount} nodes over ${graph.bufferCount} allocations`);
    await resetInputs(L);
    graph.launch(s);
    assertSame('replay', await outputs(L), eager);
    await resetInputs(L);
    graph.launch(s);
    assertSame('second replay', await outputs(L), eager);

    await gpu.allocator.sleep({ level: 1 });
    assert.throws(() => graph.launch(s), { code: 'X_ASLEEP' });
    await gpu.allocator.wake();
    await resetInputs(L); // activations and the KV cache were discarded; weights were restored
    graph.launch(s);
    await checkKernelErrors(s);
    assertSame('replay after sleep/wake', await outputs(L), eager);
    graph.dispose();
  });

  it('with arrival counters: one node fewer (no combine kernel), replays = eager, counters left zero', async () => {
    // Sequence 7 has 260 keys: two splits, merged by the one that finishes last.
    const L = await buildLayer();
    const s = gpu.stream;
    await resetInputs(L);
    step(L, s);
    const twoKernels = await outputs(L);
    const before = CudaGraph.capture(s, () => step(L, s));
    L.meta.counters = await gpu.upload('i32', [B * NQ], new Int32Array(B * NQ), { tag: 'meta' });
    await resetInputs(L);
    step(L, s);
    await checkKernelErrors(s);
    const eager = await outputs(L);
    const graph = CudaGraph.capture(s, () => step(L, s));
    assert.equal(graph.nodeCount, before.nodeCount - 1, 'the combine kernel is gone');
    before.dispose();
    for (const label of ['replay', 'second replay']) {
      await resetInputs(L);
      graph.launch(s);
      assertSame(label, await outputs(L), eager);
      assert.ok(
        (await gpu.read(L.meta.counters)).every((c) => c === 0),
        `${label}: counters`,
      );
    }
    // The same attention as merging in a second kernel, up to the order of the merge's sums.
    const [a, b] = [twoKernels[1], eager[1]];
    let worst = 0;
    const f = (bits) => new Float32Array(Uint32Array.from(bits, (x) => x << 16).buffer);
    const [fa, fb] = [f(a), f(b)];
    for (let i = 0; i < fa.length; i++) worst = Math.max(worst, Math.abs(fa[i] - fb[i]));
    assert.ok(worst < 2e-2, `merged in the last split vs in a combine kernel: max |Δ| ${worst}`);
    graph.dispose();
  });

  it('capture refuses memory that is not persistent, and sampling', async () => {
    const raw = deviceAllocForTesting(DEV, 1 << 20);
    try {
      const x = new Tensor({ ptr: raw, dtype: 'bf16', shape: [4, 64], device: DEV });
      const w = await gpu.upload('bf16', [64], encode('bf16', new Float32Array(64).fill(1)));
      assert.throws(
        () => CudaGraph.capture(gpu.stream, () => rmsNorm(gpu.stream, x, x, w, { eps: 1e-5 })),
        /not memory x manages.*rule 3/,
      );
      const lg = await gpu.upload('f32', [1, 16], new Float32Array(16).fill(0.5));
      const ws = gpu.tensor('u8', [sampleWorkspaceBytes(1, 16)]);
      const sampled = gpu.tensor('i32', [1]);
      assert.throws(
        () =>
          CudaGraph.capture(gpu.stream, () =>
            sample(gpu.stream, lg, [{ temperature: 0 }], { sampled }, { workspace: ws }),
          ),
        /not capturable/,
      );
      assert.equal(gpu.stream.capturing, false);
      await gpu.stream.synchronize();
    } finally {
      deviceFreeForTesting(DEV, raw);
    }
    // A pinned host buffer is persistent too (registered): fine to capture.
    const h = HostBuffer.alloc(4096, { device: DEV });
    CudaGraph.capture(gpu.stream, () => gpu.stream.fill(h.ptr, 4096, 3n, 8)).dispose();
    h.dispose();
  });
});
