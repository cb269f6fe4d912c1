// GPU checks of paged attention against the CPU kernel: prefill (tensor-core flash kernel), decode
// (split-KV over the context, with and without a workspace; partials merged by a combine kernel or,
// with arrival counters, by the last split, which leaves the counters zero), the generic kernel for other head
// sizes, GQA/MQA ratios, block sizes, ragged batches, contexts to 32k, and bad metadata. Slots of
// the cache that no sequence owns hold NaN, so a kernel reading past a sequence fails the check.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  checkKernelErrors,
  pagedAttention,
  pagedAttentionWorkspaceBytes,
} from '../../dist/index.js';
import { assertClose, CpuArena, DEV, decode, encode, GpuArena, rng, SMALL } from './util.mjs';

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

/**
 * One batch: seqs [{ ctx, qlen }] (ctx includes this step's qlen tokens). Returns GPU and CPU outputs.
 */
async function runCase({
  dtype = 'bf16',
  seqs,
  nq,
  nk,
  hd,
  bs,
  workspace = true,
  decode: dec,
  seed = 1,
  maxSeqLen,
  counters = false,
  maxBlocks: minMaxBlocks = 0,
  hostMetadata,
  earlierKeysReady,
}) {
  const rand = rng(seed);
  const need = seqs.map((s) => Math.ceil(s.ctx / bs));
  const maxBlocks = Math.max(Math.max(...need) + 1, minMaxBlocks);
  const numBlocks = need.reduce((a, b) => a + b, 0) + 3;
  // Blocks handed out in a shuffled order, as a block pool would.
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  const table = new Int32Array(seqs.length * maxBlocks);
  let next = 0;
  const slotRow = nk * hd;
  const kBits = new Uint16Array(numBlocks * bs * slotRow).fill(0xffff);
  const vBits = new Uint16Array(numBlocks * bs * slotRow).fill(0xffff);
  seqs.forEach((s, b) => {
    for (let i = 0; i < need[b]; i++) table[b * maxBlocks + i] = ids[next++];
    for (let i = need[b]; i < maxBlocks; i++) table[b * maxBlocks + i] = ids[numBlocks - 1]; // never read
    for (let p = 0; p < s.ctx; p++) {
      const slot = table[b * maxBlocks + Math.floor(p / bs)] * bs + (p % bs);
      const vals = new Float32Array(2 * slotRow);
      for (let i = 0; i < vals.length; i++) vals[i] = rand() * 2 - 1 || 1e-3;
      kBits.set(encode(dtype, vals.subarray(0, slotRow)), slot * slotRow);
      vBits.set(encode(dtype, vals.subarray(slotRow)), slot * slotRow);
    }
  });
  const tokens = seqs.reduce((a, s) => a + s.qlen, 0);
  const qsl = Int32Array.from([0, ...seqs.map((s) => s.qlen)]);
  for (let i = 1; i < qsl.length; i++) qsl[i] += qsl[i - 1];
  const seqLens = Int32Array.from(seqs.map((s) => s.ctx));
  const qVals = new Float32Array(tokens * nq * hd);
  for (let i = 0; i < qVals.length; i++) qVals[i] = rand() * 2 - 1 || 1e-3;
  const qBits = encode(dtype, qVals);
  const cacheShape = [numBlocks, bs, nk, hd];
  const scale = 1 / Math.sqrt(hd);

  const out = gpu.tensor(dtype, [tokens, nq * hd]);
  const meta = {
    blockTables: await gpu.upload('i32', [seqs.length, maxBlocks], table),
    seqLens: await gpu.upload('i32', [seqs.length], seqLens),
    queryStartLoc: await gpu.upload('i32', [seqs.length + 1], qsl),
    scale,
  };
  let ws;
  if (workspace) {
    const bytes = pagedAttentionWorkspaceBytes(DEV, {
      numHeads: nq,
      numKvHeads: nk,
      headDim: hd,
      blockSize: bs,
      maxBlocks,
      maxTokens: tokens,
    });
    if (bytes > 0) ws = gpu.tensor('u8', [bytes]);
  }
  let cnt;
  if (counters) cnt = await gpu.upload('i32', [tokens * nq], new Int32Array(tokens * nq));
  pagedAttention(
    gpu.stream,
    out,
    await gpu.upload(dtype, [tokens, nq * hd], qBits),
    await gpu.upload(dtype, cacheShape, kBits),
    await gpu.upload(dtype, cacheShape, vBits),
    {
      ...meta,
      ...(ws ? { workspace: ws } : {}),
      ...(cnt ? { counters: cnt } : {}),
      ...(dec === undefined ? {} : { decode: dec }),
      ...(maxSeqLen ? { maxSeqLen } : {}),
      ...(hostMetadata === undefined ? {} : { hostMetadata }),
      ...(earlierKeysReady === undefined ? {} : { earlierKeysReady }),
    },
  );
  const got = await gpu.readF32(out);
  if (cnt) {
    const left = await gpu.read(cnt);
    assert.ok(
      left.every((c) => c === 0),
      'every arrival counter is back at zero after the call',
    );
  }

  const co = cpu.tensor('f32', [tokens, nq * hd]);
  pagedAttention(
    cpu.stream,
    co,
    cpu.tensor('f32', [tokens, nq * hd], decode(dtype, qBits)),
    cpu.tensor('f32', cacheShape, decode(dtype, kBits)),
    cpu.tensor('f32', cacheShape, decode(dtype, vBits)),
    {
      blockTables: cpu.tensor('i32', [seqs.length, maxBlocks], table),
      seqLens: cpu.tensor('i32', [seqs.length], seqLens),
      queryStartLoc: cpu.tensor('i32', [seqs.length + 1], qsl),
      scale,
    },
  );
  await cpu.stream.synchronize();
  return { got, want: cpu.read(co) };
}

const big = (n, small) => (SMALL ? small : n);

for (const dtype of ['bf16', 'f16']) {
  describe(`pagedAttention ${dtype}`, () => {
    it('prefill: ragged batch with chunked prefill, GQA 4, hd 128, block 16 (both kernels)', async () => {
      const seqs = [
        { ctx: big(300, 70), qlen: big(300, 70) },
        { ctx: 64, qlen: 64 },
        { ctx: big(1000, 130), qlen: big(257, 65) },
        { ctx: 17, qlen: 1 },
      ];
      for (const dec of [undefined, true]) {
        const { got, want } = await runCase({
          dtype,
          seqs,
          nq: 32,
          nk: 8,
          hd: 128,
          bs: 16,
          decode: dec,
        });
        assertClose(`prefill decode=${dec}`, got, want, dtype);
      }
      await checkKernelErrors(gpu.stream);
    });

    it('prefill: hd 64, no GQA, block 32; MQA', async () => {
      const seqs = [
        { ctx: big(200, 40), qlen: big(200, 40) },
        { ctx: big(129, 33), qlen: 5 },
        { ctx: 3, qlen: 3 },
      ];
      let r = await runCase({ dtype, seqs, nq: 4, nk: 4, hd: 64, bs: 32, seed: 2 });
      assertClose('prefill hd64', r.got, r.want, dtype);
      r = await runCase({ dtype, seqs, nq: 8, nk: 1, hd: 128, bs: 16, seed: 3 });
      assertClose('prefill MQA', r.got, r.want, dtype);
    });

    it('decode: 16 sequences to 4k context, split over the context and not', async () => {
      const rand = rng(4);
      const seqs = Array.from({ length: 16 }, () => ({
        ctx: 1 + Math.floor(rand() * big(4096, 300)),
        qlen: 1,
      }));
      for (const [workspace, counters, hostMetadata] of [
        [true, false, false],
        [false, false, false],
        [true, true, false],
        [true, false, true],
        [true, true, true],
      ]) {
        const { got, want } = await runCase({
          dtype,
          seqs,
          nq: 32,
          nk: 8,
          hd: 128,
          bs: 16,
          workspace,
          counters,
          hostMetadata,
          seed: 5,
        });
        assertClose(
          `decode workspace=${workspace} counters=${counters} hostMetadata=${hostMetadata}`,
          got,
          want,
          dtype,
        );
      }
    });

    it('decode merged by the last split: a batch of 1 planned for 4k, contexts around each split boundary', async () => {
      // One sequence planned for 4096 keys (16 splits): each context divides into its own number
      // of splits (one pass up to 256 keys), so every boundary case of the division runs.
      const ctxs = SMALL ? [1, 256, 257, 700] : [1, 64, 255, 256, 257, 511, 513, 1000, 2049, 4096];
      for (const counters of [true, false]) {
        for (const ctx of ctxs) {
          const { got, want } = await runCase({
            dtype,
            seqs: [{ ctx, qlen: 1 }],
            nq: 32,
            nk: 8,
            hd: 128,
            bs: 16,
            counters,
            maxBlocks: 4096 / 16,
            decode: true,
            seed: 40 + ctx,
          });
          assertClose(`decode 1 x ${ctx} counters=${counters}`, got, want, dtype);
        }
      }
      // Several query tokens of one sequence split differently (each attends to its own prefix),
      // GQA 16 (one head chunk) and hd 64.
      const r = await runCase({
        dtype,
        seqs: [
          { ctx: big(3000, 600), qlen: 5 },
          { ctx: 200, qlen: 1 },
        ],
        nq: 16,
        nk: 1,
        hd: 64,
        bs: 16,
        counters: true,
        decode: true,
        seed: 41,
      });
      assertClose('decode 5 query tokens, merged by the last split', r.got, r.want, dtype);
    });

    it('lean decode (one query token, one key tile per split): GQA 1 to 32, hd 64 and 128, tile boundaries, earlier keys read early', async () => {
      // Planned for 4096 keys, one token splits down to 64-key tiles: the lean kernel
      // (X_ATTN_LEAN=0 runs the same cases on the 4-warp kernel, below). Groups above 8 query
      // heads take several blocks per KV head.
      const ctxs = SMALL ? [1, 64, 65, 300] : [1, 63, 64, 65, 300, 1088, 4096];
      const shapes = [
        [32, 8, 128],
        [32, 4, 64],
        [8, 8, 128],
        [32, 2, 64],
        [32, 1, 128],
      ];
      for (const [nq, nk, hd] of shapes) {
        for (const ctx of ctxs) {
          for (const [hostMetadata, earlierKeysReady] of [
            [false, false],
            [true, true],
          ]) {
            const { got, want } = await runCase({
              dtype,
              seqs: [{ ctx, qlen: 1 }],
              nq,
              nk,
              hd,
              bs: 16,
              maxBlocks: 4096 / 16,
              decode: true,
              hostMetadata,
              earlierKeysReady,
              seed: 60 + ctx + nk,
            });
            assertClose(
              `lean ${nq}/${nk} hd ${hd} ctx ${ctx} early=${earlierKeysReady}`,
              got,
              want,
              dtype,
            );
          }
        }
      }
      // Block size 8 and a block table wider than one tile's columns, GQA 8.
      const r = await runCase({
        dtype,
        seqs: [{ ctx: big(700, 200), qlen: 1 }],
        nq: 16,
        nk: 2,
        hd: 128,
        bs: 8,
        maxBlocks: 2048 / 8,
        decode: true,
        hostMetadata: true,
        earlierKeysReady: true,
        seed: 61,
      });
      assertClose('lean block size 8', r.got, r.want, dtype);
      await checkKernelErrors(gpu.stream);
    });

    it('decode: contexts to 32k, several query tokens per sequence, MQA with 2 head chunks', async () => {
      let r = await runCase({
        dtype,
        seqs: [
          { ctx: big(32768, 600), qlen: 1 },
          { ctx: big(20000, 301), qlen: 1 },
        ],
        nq: 32,
        nk: 4,
        hd: 128,
        bs: 16,
        seed: 6,
      });
      assertClose('decode 32k', r.got, r.want, dtype);
      r = await runCase({
        dtype,
        seqs: [
          { ctx: big(32768, 600), qlen: 1 },
          { ctx: big(20000, 301), qlen: 1 },
        ],
        nq: 32,
        nk: 4,
        hd: 128,
        bs: 16,
        counters: true,
        seed: 6,
      });
      assertClose('decode 32k merged by the last split', r.got, r.want, dtype);
      r = await runCase({
        dtype,
        seqs: [{ ctx: big(32768, 500), qlen: 4 }],
        nq: 16,
        nk: 8,
        hd: 64,
        bs: 16,
        decode: true,
        seed: 7,
      });
      assertClose('decode 4 tokens at 32k', r.got, r.want, dtype);
      r = await runCase({
        dtype,
        seqs: [
          { ctx: 900, qlen: 1 },
          { ctx: 33, qlen: 1 },
          { ctx: 1, qlen: 1 },
        ],
        nq: 32,
        nk: 1,
        hd: 128,
        bs: 8,
        seed: 8,
      });
      assertClose('decode MQA 32 heads', r.got, r.want, dtype);
      r = await runCase({
        dtype,
        seqs: [
          { ctx: 900, qlen: 1 },
          { ctx: 33, qlen: 1 },
          { ctx: 1, qlen: 1 },
        ],
        nq: 32,
        nk: 1,
        hd: 128,
        bs: 8,
        counters: true,
        seed: 8,
      });
      assertClose(
        'decode MQA 32 heads (2 head chunks) merged by the last split',
        r.got,
        r.want,
        dtype,
      );
    });

    it('generic kernel: head sizes 4, 16, 80 and 256 (prefill and decode)', async () => {
      for (const [hd, nq, nk] of [
        [4, 2, 1],
        [16, 4, 2],
        [80, 4, 4],
        [256, 4, 2],
      ]) {
        const seqs = [
          { ctx: big(150, 40), qlen: big(150, 40) },
          { ctx: 77, qlen: 1 },
        ];
        const { got, want } = await runCase({ dtype, seqs, nq, nk, hd, bs: 16, seed: 9 + hd });
        assertClose(`generic hd ${hd}`, got, want, dtype);
      }
    });
  });
}

describe('pagedAttention bad metadata on the GPU', () => {
  it('a sequence longer than its block table or maxSeqLen gives NaN rows and a reported error', async () => {
    const bs = 16;
    const q = gpu.tensor('bf16', [2, 64]);
    const cache = await gpu.upload(
      'bf16',
      [4, bs, 1, 64],
      encode('bf16', new Float32Array(4 * bs * 64).fill(0.5)),
    );
    await gpu.write(q, encode('bf16', new Float32Array(128).fill(0.25)));
    for (const [dec, seqLen, hostMetadata] of [
      [true, 33, false],
      [true, 33, true],
      [false, 33, false],
    ]) {
      const out = gpu.tensor('bf16', [2, 64]);
      pagedAttention(gpu.stream, out, q, cache, cache, {
        blockTables: await gpu.upload('i32', [2, 2], Int32Array.from([0, 1, 2, 3])),
        seqLens: await gpu.upload('i32', [2], Int32Array.from([1, seqLen])),
        queryStartLoc: await gpu.upload('i32', [3], Int32Array.from([0, 1, 2])),
        scale: 0.125,
        decode: dec,
        hostMetadata,
      });
      await assert.rejects(
        checkKernelErrors(gpu.stream),
        /seqLens\[1\] = 33 must be in \[query length 1, 32\]/,
      );
      const bits = await gpu.read(out);
      assert.ok(
        bits.subarray(64).every((b) => b === 0xffff),
        `decode=${dec} hostMetadata=${hostMetadata}: the bad sequence's row is not NaN`,
      );
      assert.ok(
        Number.isFinite(decode('bf16', bits.subarray(0, 64))[0]),
        'the good sequence was not computed',
      );
    }
    {
      // Split-KV planned (a 20-block table: 2 splits), merged by the last split: the bad row is NaN
      // and the counters stay zero (its splits never count themselves).
      const table = Int32Array.from({ length: 40 }, (_, i) => i % 4);
      const ws = gpu.tensor('u8', [
        pagedAttentionWorkspaceBytes(DEV, {
          numHeads: 1,
          numKvHeads: 1,
          headDim: 64,
          blockSize: bs,
          maxBlocks: 20,
          maxTokens: 2,
        }),
      ]);
      const counters = await gpu.upload('i32', [2], new Int32Array(2));
      const out = gpu.tensor('bf16', [2, 64]);
      pagedAttention(gpu.stream, out, q, cache, cache, {
        blockTables: await gpu.upload('i32', [2, 20], table),
        seqLens: await gpu.upload('i32', [2], Int32Array.from([40, 321])),
        queryStartLoc: await gpu.upload('i32', [3], Int32Array.from([0, 1, 2])),
        scale: 0.125,
        decode: true,
        workspace: ws,
        counters,
      });
      await assert.rejects(
        checkKernelErrors(gpu.stream),
        /seqLens\[1\] = 321 must be in \[query length 1, 320\]/,
      );
      const bits = await gpu.read(out);
      assert.ok(
        bits.subarray(64).every((b) => b === 0xffff),
        'merged split: the bad row is not NaN',
      );
      assert.ok(Number.isFinite(decode('bf16', bits.subarray(0, 64))[0]), 'the good row');
      assert.deepEqual([...(await gpu.read(counters))], [0, 0]);
      // The same without counters: 64-key splits merged by the combine kernel, for two tokens
      // (the 4-warp kernel) and for the bad one alone (the lean kernel), whose combine reads no
      // partial of it.
      for (const [tokens, hostMetadata] of [
        [2, false],
        [1, false],
        [1, true],
      ]) {
        const lens = tokens === 2 ? [40, 321] : [321];
        const merged = gpu.tensor('bf16', [tokens, 64]);
        pagedAttention(gpu.stream, merged, q.slice(0, 0, tokens), cache, cache, {
          blockTables: await gpu.upload('i32', [tokens, 20], table.subarray(0, tokens * 20)),
          seqLens: await gpu.upload('i32', [tokens], Int32Array.from(lens)),
          queryStartLoc: await gpu.upload(
            'i32',
            [tokens + 1],
            Int32Array.from({ length: tokens + 1 }, (_, i) => i),
          ),
          scale: 0.125,
          decode: true,
          workspace: ws,
          hostMetadata,
          earlierKeysReady: hostMetadata,
        });
        await assert.rejects(
          checkKernelErrors(gpu.stream),
          new RegExp(`seqLens\\[${tokens - 1}\\] = 321 must be in \\[query length 1, 320\\]`),
        );
        const mergedBits = await gpu.read(merged);
        assert.ok(
          decode('bf16', mergedBits.subarray((tokens - 1) * 64)).every(Number.isNaN),
          `combined splits (${tokens} tokens, hostMetadata ${hostMetadata}): the bad row is not NaN`,
        );
        if (tokens === 2) {
          assert.ok(Number.isFinite(decode('bf16', mergedBits.subarray(0, 64))[0]), 'the good row');
        }
      }
      // A bad block id inside a split's tile (one token: the lean kernel) is reported.
      const badTable = Int32Array.from(table.subarray(0, 20));
      badTable[2] = 7;
      pagedAttention(gpu.stream, gpu.tensor('bf16', [1, 64]), q.slice(0, 0, 1), cache, cache, {
        blockTables: await gpu.upload('i32', [1, 20], badTable),
        seqLens: await gpu.upload('i32', [1], Int32Array.from([40])),
        queryStartLoc: await gpu.upload('i32', [2], Int32Array.from([0, 1])),
        scale: 0.125,
        decode: true,
        workspace: ws,
        hostMetadata: true,
        earlierKeysReady: true,
      });
      await assert.rejects(
        checkKernelErrors(gpu.stream),
        /blockTables\[0\]\[2\] = 7 is outside \[0, 4\)/,
      );
    }
    const out = gpu.tensor('bf16', [1, 64]);
    pagedAttention(gpu.stream, out, q.slice(0, 0, 1), cache, cache, {
      blockTables: await gpu.upload('i32', [1, 2], Int32Array.from([0, 9])),
      seqLens: await gpu.upload('i32', [1], Int32Array.from([20])),
      queryStartLoc: await gpu.upload('i32', [2], Int32Array.from([0, 1])),
      scale: 0.125,
    });
    await assert.rejects(
      checkKernelErrors(gpu.stream),
      /blockTables\[0\]\[1\] = 9 is outside \[0, 4\)/,
    );
  });
});

// Small decode batches run the lean kernel by default; X_ATTN_LEAN=0 (read once per process) keeps
// the 4-warp kernel. The decode tests again in a process of its own with it, so both kernels
// are checked at the shapes the lean one takes.
if (process.env.X_ATTN_LEAN === undefined) {
  describe('pagedAttention without the lean kernel', () => {
    it('X_ATTN_LEAN=0: the decode tests pass on the 4-warp kernel', async () => {
      const env = { ...process.env, X_ATTN_LEAN: '0' };
      delete env.NODE_TEST_CONTEXT; // set by a parent node --test: the child would report to it, not in TAP
      const args = [
        '--test',
        '--test-reporter=tap',
        '--test-name-pattern=decode|gives NaN rows',
        fileURLToPath(import.meta.url),
      ];
      const { stdout } = await new Promise((resolve, reject) => {
        execFile(
          process.execPath,
          args,
          { env, timeout: 400_000, maxBuffer: 1 << 24 },
          (err, out, errOut) =>
            err
              ? reject(new Error(`X_ATTN_LEAN=0: ${err.message}\n${out}\n${errOut}`))
              : resolve({ stdout: out }),
        );
      });
      const pass = Number(/# pass (\d+)/.exec(stdout)?.[1] ?? 0);
      const fail = Number(/# fail (\d+)/.exec(stdout)?.[1] ?? -1);
      assert.equal(fail, 0, stdout);
      assert.ok(pass >= 11, `${pass} decode tests passed:\n${stdout}`);
    });
  });
}
