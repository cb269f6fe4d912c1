import { afterEach, describe, expect, it } from 'vitest';
import { CRASH_THREAD, post, startTestServer, type TestServer } from './test-util.js';

let s: TestServer | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

/** Starts a streaming completion and resolves once its first chunk arrived. */
async function openStream(
  url: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ stream: true, ...body }),
    signal: ac.signal,
  });
  const reader = res.body!.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  const rest = (async () => {
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return text;
      text += new TextDecoder().decode(value);
    }
  })();
  return { res, first, rest, abort: () => ac.abort() };
}

describe('limits, auth and admin', () => {
  it('--api-key guards /v1 and the admin endpoints, not /health or /metrics', async () => {
    s = await startTestServer({ server: { apiKey: 'sesame', enableSleepMode: true } });
    const no = await post(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
    expect(no.status).toBe(401);
    expect(no.json.error).toMatchObject({ type: 'AuthenticationError', code: 401 });
    const wrong = await post(
      `${s.url}/v1/completions`,
      { prompt: 'x', max_tokens: 1 },
      { authorization: 'Bearer nope' },
    );
    expect(wrong.status).toBe(401);
    const ok = await post(
      `${s.url}/v1/completions`,
      { prompt: 'x', max_tokens: 1 },
      { authorization: 'Bearer sesame' },
    );
    expect(ok.status).toBe(200);
    expect((await post(`${s.url}/sleep`, '')).status).toBe(401);
    expect((await fetch(`${s.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
    expect((await fetch(`${s.url}/metrics`)).status).toBe(200);
  });

  it('a non-streaming client that disconnects aborts its request and frees its blocks', async () => {
    s = await startTestServer();
    const ac = new AbortController();
    const pending = fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x', max_tokens: 220, ignore_eos: true }),
      signal: ac.signal,
    }).catch((e: Error) => e);
    const engine = s.engine;
    const deadline = Date.now() + 10_000;
    while ((await engine.stats()).numRunning === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    ac.abort();
    expect(await pending).toBeInstanceOf(Error);
    let stats = await engine.stats();
    while ((stats.numRunning > 0 || stats.numFreeBlocks < 256) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      stats = await engine.stats();
    }
    expect(stats).toMatchObject({ numRunning: 0, numWaiting: 0, numFreeBlocks: 256 });
    // It ended as an abort, not by running to max_tokens.
    const m = await (await fetch(`${s.url}/metrics`)).text();
    expect(m).toMatch(/^x:request_success_total\{model_name="tiny",finished_reason="abort"\} 1$/m);
    expect(m).not.toMatch(/finished_reason="length"/);
  });

  it('refuses past the queue limit with 503 and Retry-After', async () => {
    s = await startTestServer({ server: { maxQueueLen: 1 } });
    const busy = await openStream(s.url, { prompt: 'x', max_tokens: 200, ignore_eos: true });
    const r = await post(`${s.url}/v1/completions`, { prompt: 'y', max_tokens: 1 });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('1');
    expect(r.json.error.message).toMatch(/queue limit/);
    busy.abort();
    await busy.rest.catch(() => undefined);
  });

  it('admin endpoints exist only with sleep mode; state conflicts are 409', async () => {
    s = await startTestServer();
    expect((await post(`${s.url}/sleep?level=1`, '')).status).toBe(404);
    await s.close();
    s = await startTestServer({ server: { enableSleepMode: true } });
    expect((await post(`${s.url}/sleep?level=3`, '')).json.error.param).toBe('level');
    expect((await post(`${s.url}/pause?mode=later`, '')).json.error.param).toBe('mode');
    expect((await post(`${s.url}/sleep?tags=nonsense`, '')).status).toBe(400);
    expect((await post(`${s.url}/sleep?level=1`, '')).status).toBe(200);
    expect(await (await fetch(`${s.url}/is_sleeping`)).json()).toEqual({ is_sleeping: true });
    const resume = await post(`${s.url}/resume`, '');
    expect(resume.status).toBe(409);
    expect(resume.json.error.type).toBe('ConflictError');
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(503);
    expect(health.headers.get('retry-after')).toBe('5');
    expect((await post(`${s.url}/wake_up`, '')).status).toBe(200);
    expect(await (await fetch(`${s.url}/is_sleeping`)).json()).toEqual({ is_sleeping: false });
    expect((await post(`${s.url}/pause?mode=keep`, '')).status).toBe(200);
    expect(await (await fetch(`${s.url}/is_paused`)).json()).toEqual({ is_paused: true });
    const paused = await post(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
    expect(paused.status).toBe(503);
    expect(paused.headers.get('retry-after')).toBe('5');
    expect((await post(`${s.url}/resume`, '')).status).toBe(200);
    expect((await post(`${s.url}/reset_prefix_cache`, '')).status).toBe(200);
    expect((await post(`${s.url}/reload_weights`, { path: '/no/such/model' })).status).toBe(400);
    expect((await post(`${s.url}/reload_weights`, '')).status).toBe(200);
    expect((await post(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 })).status).toBe(
      200,
    );
  });

  it('a request in flight when the engine sleeps ends with an error event, then [DONE]', async () => {
    s = await startTestServer({ server: { enableSleepMode: true } });
    const stream = await openStream(s.url, { prompt: 'x', max_tokens: 200, ignore_eos: true });
    const nonStream = post(`${s.url}/v1/completions`, {
      prompt: 'y',
      max_tokens: 200,
      ignore_eos: true,
    });
    await new Promise((r) => setTimeout(r, 20));
    expect((await post(`${s.url}/sleep?level=1&mode=abort`, '')).status).toBe(200);
    const rest = await stream.rest;
    expect(rest).toMatch(
      /data: \{"error":\{"message":"The request was aborted because the engine was put to sleep\.","type":"ServiceUnavailableError","param":null,"code":503\}\}\n\ndata: \[DONE\]\n\n$/,
    );
    const r = await nonStream;
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('5');
  });

  it('/health tells the truth when the engine thread dies', async () => {
    s = await startTestServer({ threadUrl: CRASH_THREAD });
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
    const stream = await openStream(s.url, { prompt: 'x', max_tokens: 220, ignore_eos: true });
    // The crash trigger is the engine request id: send one with that id through the engine.
    await s.engine
      .generate({ requestId: 'crash', promptTokenIds: [5], sampling: { maxTokens: 1 } })
      .catch(() => undefined);
    const rest = await stream.rest;
    expect(rest).toMatch(/"code":503\}\}\n\ndata: \[DONE\]\n\n$/);
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { error: { message: string } }).error.message).toMatch(/dead/);
    const r = await post(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
    expect(r.status).toBe(503);
  });
});
