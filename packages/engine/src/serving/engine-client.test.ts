import { afterEach, describe, expect, it } from 'vitest';
import { EngineClient } from './engine-client.js';
import { EngineDeadError, EngineUnavailableError } from './errors.js';
import { LLAMA, promptIds } from './testing.js';
import type { CompletionOutput } from './types.js';

// The thread entry is the built file (pnpm build runs before the tests).
const threadUrl = new URL('../../dist/engine-core-thread.js', import.meta.url);
const crashUrl = new URL('./fixtures/crash-thread.mjs', import.meta.url);
const config = { model: LLAMA, maxModelLen: 256, numGpuBlocksOverride: 128 };

let client: EngineClient | undefined;
afterEach(async () => {
  await client?.shutdown();
  client = undefined;
});

describe('EngineClient (engine core in a worker thread)', () => {
  it('serves requests from the thread and follows its state', async () => {
    client = await EngineClient.start({ config, threadUrl });
    expect(client.info).toMatchObject({ device: 'cpu', numKvBlocks: 128, maxModelLen: 256 });
    const stream = await client.generate({
      requestId: 'a',
      promptTokenIds: promptIds(20, 1),
      sampling: { temperature: 0, maxTokens: 8, ignoreEos: true, n: 2 },
    });
    const outs: CompletionOutput[] = [];
    for await (const o of stream) outs.push(o);
    const byIndex = [0, 1].map((i) => outs.filter((o) => o.index === i).flatMap((o) => o.tokenIds));
    expect(byIndex[0]).toHaveLength(8);
    expect(byIndex[1]).toEqual(byIndex[0]); // greedy: both completions agree
    await client.sleep({ level: 1 });
    expect(client.status).toMatchObject({ state: 'sleeping', sleepLevel: 1 });
    await expect(
      client.generate({ requestId: 'b', promptTokenIds: [5, 6], sampling: {} }),
    ).rejects.toThrow(EngineUnavailableError);
    await client.wake();
    expect(client.status.state).toBe('running');
    expect((await client.stats()).numFreeBlocks).toBe(128);
  });

  it('aborts through an AbortSignal and frees the blocks', async () => {
    client = await EngineClient.start({ config, threadUrl });
    const ac = new AbortController();
    const stream = await client.generate(
      {
        requestId: 'x',
        promptTokenIds: promptIds(20, 2),
        sampling: { maxTokens: 200, ignoreEos: true },
      },
      ac.signal,
    );
    let n = 0;
    let last: CompletionOutput | undefined;
    for await (const o of stream) {
      if (++n === 3) ac.abort();
      last = o;
    }
    expect(last?.finishReason).toBe('abort');
    expect(last?.abortReason).toBe('client');
    const stats = await client.stats();
    expect(stats.numFreeBlocks).toBe(128);
    expect(stats.numRunning).toBe(0);
  });

  it('fails streams and calls with EngineDeadError when the thread dies', async () => {
    client = await EngineClient.start({ config, threadUrl: crashUrl });
    let death: Error | undefined;
    client.onDeath((e) => {
      death = e;
    });
    const running = await client.generate({
      requestId: 'long',
      promptTokenIds: promptIds(20, 3),
      sampling: { maxTokens: 220, ignoreEos: true },
    });
    await client
      .generate({ requestId: 'crash', promptTokenIds: [5], sampling: { maxTokens: 1 } })
      .catch(() => undefined);
    await expect(
      (async () => {
        for await (const _ of running) {
          // drain until the thread dies
        }
      })(),
    ).rejects.toThrow(EngineDeadError);
    expect(death).toBeInstanceOf(EngineDeadError);
    expect(client.status.dead).toBe(true);
    await expect(client.stats()).rejects.toThrow(EngineDeadError);
    await expect(
      client.generate({ requestId: 'y', promptTokenIds: [5], sampling: {} }),
    ).rejects.toThrow(EngineDeadError);
  });

  it('reports a model that cannot load as the typed error, without leaving a thread', async () => {
    await expect(
      EngineClient.start({ config: { model: '/nonexistent/model' }, threadUrl }),
    ).rejects.toThrow(/config\.json/);
  });
});
