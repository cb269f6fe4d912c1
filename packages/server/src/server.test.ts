import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { post, startTestServer, type TestServer } from './test-util.js';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer({ server: { enableSleepMode: true } });
});
afterAll(async () => {
  await s?.close();
});

/** The `data:` payloads of an SSE body, checking vLLM's framing on the way. */
function events(text: string): string[] {
  expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
  const parts = text.split('\n\n');
  expect(parts.pop()).toBe('');
  for (const p of parts) expect(p.startsWith('data: ')).toBe(true);
  return parts.map((p) => p.slice(6));
}

describe('SSE (byte-compatible with vLLM)', () => {
  it('chat: role chunk first, then deltas, a finish with stop_reason, usage with choices [], [DONE]', async () => {
    const r = await post(`${s.url}/v1/chat/completions`, {
      model: 'tiny',
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 5,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const ev = events(r.text);
    expect(ev.at(-1)).toBe('[DONE]');
    const head = String.raw`\{"id":"chatcmpl-[0-9a-f]{32}","object":"chat\.completion\.chunk","created":\d+,"model":"tiny",`;
    expect(ev[0]).toMatch(
      new RegExp(
        `^${head}"choices":\\[\\{"index":0,"delta":\\{"role":"assistant","content":""\\},"logprobs":null,"finish_reason":null\\}\\]\\}$`,
      ),
    );
    for (const e of ev.slice(1, -3)) {
      expect(e).toMatch(
        new RegExp(
          `^${head}"choices":\\[\\{"index":0,"delta":\\{"content":".*"\\},"logprobs":null,"finish_reason":null\\}\\]\\}$`,
        ),
      );
    }
    expect(ev.at(-3)).toMatch(/"finish_reason":"length","stop_reason":null\}\]\}$/);
    expect(ev.at(-2)).toMatch(
      new RegExp(
        `^${head}"choices":\\[\\],"usage":\\{"prompt_tokens":\\d+,"total_tokens":\\d+,"completion_tokens":5\\}\\}$`,
      ),
    );
    const ids = new Set(ev.slice(0, -1).map((e) => JSON.parse(e).id));
    expect(ids.size).toBe(1);
  });

  it('completions: every chunk carries finish_reason/stop_reason and usage null; usage last', async () => {
    const r = await post(`${s.url}/v1/completions`, {
      prompt: 'Once upon a time',
      max_tokens: 4,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    const ev = events(r.text);
    const head = String.raw`\{"id":"cmpl-[0-9a-f]{32}","object":"text_completion","created":\d+,"model":"tiny",`;
    for (const [i, e] of ev.slice(0, -2).entries()) {
      expect(e).toMatch(
        new RegExp(
          `^${head}"choices":\\[\\{"index":0,"text":".*","logprobs":null,"finish_reason":(null|"length"),"stop_reason":null\\}\\],"usage":\\{"prompt_tokens":\\d+,"total_tokens":\\d+,"completion_tokens":${i + 1},"prompt_tokens_details":null\\}\\}$`,
        ),
      );
    }
    expect(ev.at(-2)).toMatch(
      /"choices":\[\],"usage":\{"prompt_tokens":\d+,"total_tokens":\d+,"completion_tokens":4\}\}$/,
    );
    const plain = await post(`${s.url}/v1/completions`, {
      prompt: 'Once upon a time',
      max_tokens: 4,
      temperature: 0,
      stream: true,
    });
    const pe = events(plain.text);
    expect(pe).toHaveLength(5); // four tokens and [DONE]: no usage without include_usage
    expect(pe[0]).toMatch(/"usage":null\}$/);
  });
});

describe('validation: 400 in OpenAI error JSON naming the field', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['/v1/completions', { max_tokens: 3 }, 'prompt'],
    ['/v1/completions', { prompt: 'x', temperature: 'hot' }, 'temperature'],
    ['/v1/completions', { prompt: 'x', top_p: 0 }, 'top_p'],
    ['/v1/completions', { prompt: 'x', top_k: -2 }, 'top_k'],
    ['/v1/completions', { prompt: 'x', n: 0 }, 'n'],
    ['/v1/completions', { prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    ['/v1/completions', { prompt: 'x', max_tokens: 10_000 }, 'max_tokens'],
    ['/v1/completions', { prompt: 'x', logprobs: 21 }, 'logprobs'],
    ['/v1/completions', { prompt: 'x', stop: [''] }, 'stop[0]'],
    ['/v1/completions', { prompt: 'x', stop_token_ids: [1, 99_999] }, 'stop_token_ids[1]'],
    ['/v1/completions', { prompt: 'x', logit_bias: { 5: 101 } }, 'logit_bias.5'],
    ['/v1/completions', { prompt: 'x', presence_penalty: 3 }, 'presence_penalty'],
    ['/v1/completions', { prompt: 'x', min_tokens: 20, max_tokens: 5 }, 'min_tokens'],
    ['/v1/completions', { prompt: [1, 2, 99_999] }, 'prompt[2]'],
    ['/v1/completions', { prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    ['/v1/completions', { prompt: 'x', suffix: 'y' }, 'suffix'],
    ['/v1/completions', { prompt: 'x', seed: 1.5 }, 'seed'],
    ['/v1/chat/completions', { messages: [] }, 'messages'],
    ['/v1/chat/completions', { messages: [{ content: 'hi' }] }, 'messages[0].role'],
    [
      '/v1/chat/completions',
      { messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
      'messages[0].content[0].type',
    ],
    [
      '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 },
      'top_logprobs',
    ],
    [
      '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] },
      'tool_choice',
    ],
    [
      '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } },
      'response_format',
    ],
  ];
  it.each(cases)('%s %j → param %s', async (path, body, param) => {
    const r = await post(`${s.url}${path}`, body);
    expect(r.status, r.text).toBe(400);
    expect(r.json.error).toMatchObject({ type: 'BadRequestError', param, code: 400 });
    expect(typeof r.json.error.message).toBe('string');
  });

  it('answers bad JSON, unknown models, unknown routes and oversized bodies in the same shape', async () => {
    const bad = await post(`${s.url}/v1/completions`, '{"prompt": ');
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe(400);
    const model = await post(`${s.url}/v1/completions`, { model: 'gpt-9', prompt: 'x' });
    expect(model.status).toBe(404);
    expect(model.json.error).toMatchObject({ type: 'NotFoundError', param: 'model' });
    const route = await fetch(`${s.url}/v1/nope`);
    expect(route.status).toBe(404);
    expect(((await route.json()) as { error: { code: number } }).error.code).toBe(404);
    const big = await post(`${s.url}/v1/completions`, { prompt: 'x'.repeat(17 * 1024 * 1024) });
    expect(big.status).toBe(413);
    expect(big.json.error.code).toBe(413);
  });
});

describe('echo with logprobs', () => {
  it('returns the prompt tokens with their log-probabilities (the first has none), then the output', async () => {
    const body = {
      prompt: 'Hello world again',
      max_tokens: 3,
      temperature: 0,
      echo: true,
      logprobs: 2,
    };
    const r = await post(`${s.url}/v1/completions`, body);
    expect(r.status, r.text).toBe(200);
    const c = r.json.choices[0];
    expect(c.text.startsWith('Hello world again')).toBe(true);
    const lp = c.logprobs;
    // <s> Hello world again → 4 prompt tokens, then 3 output tokens.
    expect(lp.tokens).toHaveLength(7);
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    for (const x of lp.token_logprobs.slice(1)) expect(x).toBeLessThan(0);
    for (const t of lp.top_logprobs.slice(1))
      expect(Object.keys(t).length).toBeGreaterThanOrEqual(1);
    expect(lp.text_offset[0]).toBe(0);
    // Streaming: the first chunk carries the prompt's entries too.
    const sr = await post(`${s.url}/v1/completions`, { ...body, stream: true });
    const chunks = sr.text
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)));
    const streamed = chunks.flatMap((ch) => ch.choices[0].logprobs.token_logprobs);
    expect(streamed).toEqual(lp.token_logprobs);
  });
});

describe('info endpoints', () => {
  it('serves /v1/models, /version, /tokenize, /detokenize, /health', async () => {
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as {
      data: Array<Record<string, unknown>>;
    };
    expect(models.data[0]).toMatchObject({
      id: 'tiny',
      object: 'model',
      owned_by: 'x',
      max_model_len: 256,
    });
    const v = (await (await fetch(`${s.url}/version`)).json()) as { version: string };
    expect(v.version).toMatch(/^\d+\.\d+\.\d+/);
    const t = await post(`${s.url}/tokenize`, { prompt: 'Hello world' });
    expect(t.json).toMatchObject({ count: 3, max_model_len: 256, tokens: [1, 22557, 1526] });
    const d = await post(`${s.url}/detokenize`, { tokens: [22557, 1526] });
    expect(d.json).toEqual({ prompt: 'Hello world' });
    const chat = await post(`${s.url}/tokenize`, { messages: [{ role: 'user', content: 'Hi' }] });
    expect(chat.json.count).toBeGreaterThan(3);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
  });
});

describe('metrics', () => {
  it('exposes vLLM-style names under x: with real values', async () => {
    await post(`${s.url}/v1/completions`, {
      prompt: 'Count',
      max_tokens: 6,
      temperature: 0,
      stream: true,
    });
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const value = (name: string) => {
      const m = text.match(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm'));
      return m ? Number(m[2]) : Number.NaN;
    };
    expect(value('x:time_to_first_token_seconds_count')).toBeGreaterThan(0);
    expect(value('x:inter_token_latency_seconds_count')).toBeGreaterThan(0);
    expect(value('x:e2e_request_latency_seconds_count')).toBeGreaterThan(0);
    expect(value('x:request_queue_time_seconds_count')).toBeGreaterThan(0);
    expect(value('x:generation_tokens_total')).toBeGreaterThanOrEqual(6);
    expect(value('x:prompt_tokens_total')).toBeGreaterThan(0);
    expect(value('x:prefix_cache_queries_total')).toBeGreaterThan(0);
    for (const n of [
      'x:num_requests_running',
      'x:num_requests_waiting',
      'x:kv_cache_usage_perc',
      'x:num_preemptions_total',
      'x:prefix_cache_hits_total',
    ]) {
      expect(Number.isNaN(value(n)), n).toBe(false);
    }
    expect(text).toMatch(/^x:engine_sleep_state\{model_name="tiny",sleep_state="awake"\} 1$/m);
    expect(text).toMatch(
      /^x:request_success_total\{model_name="tiny",finished_reason="length"\} \d+$/m,
    );
  });
});
