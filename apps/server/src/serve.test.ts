// End to end: the real `openai` npm client against a started `x serve` process (fixture model).
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metric, metrics, type Served, startServe, until } from './serve-test-util.js';

let server: Served;
let client: OpenAI;
beforeAll(async () => {
  server = await startServe();
  client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: 'unused',
    maxRetries: 0,
    timeout: 60_000,
  });
});
afterAll(async () => {
  expect(await server?.stop()).toBe(0); // a clean SIGTERM shutdown
});

const chat = (content: string) => [{ role: 'user' as const, content }];

describe('x serve with the openai client', () => {
  it('answers chat and completions, streaming with usage equal to non-streaming', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);

    const done = await client.chat.completions.create({
      model: 'tiny',
      messages: chat('Tell me a story'),
      max_tokens: 12,
      temperature: 0,
    });
    expect(done.object).toBe('chat.completion');
    expect(done.choices[0]!.message.role).toBe('assistant');
    expect(done.choices[0]!.finish_reason).toBe('length');
    expect(done.usage!.completion_tokens).toBe(12);
    expect(done.usage!.total_tokens).toBe(done.usage!.prompt_tokens + 12);

    const stream = await client.chat.completions.create({
      model: 'tiny',
      messages: chat('Tell me a story'),
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    for (const c of chunks) text += c.choices[0]?.delta.content ?? '';
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(
      done.usage && {
        prompt_tokens: done.usage.prompt_tokens,
        total_tokens: done.usage.total_tokens,
        completion_tokens: 12,
      },
    );
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('length');
    expect(text).toBe(done.choices[0]!.message.content);

    const cmpl = await client.completions.create({
      model: 'tiny',
      prompt: 'Once upon',
      max_tokens: 8,
      temperature: 0,
    });
    const cstream = await client.completions.create({
      model: 'tiny',
      prompt: 'Once upon',
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let ctext = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of cstream) {
      ctext += c.choices[0]?.text ?? '';
      if (c.usage) usage = c.usage;
    }
    expect(ctext).toBe(cmpl.choices[0]!.text);
    expect(usage).toMatchObject({ completion_tokens: 8, prompt_tokens: cmpl.usage!.prompt_tokens });
    // Prompt forms: token ids, and a list of prompts (one choice each).
    const ids = await client.completions.create({
      model: 'tiny',
      prompt: [1, 9038, 2501],
      max_tokens: 2,
      temperature: 0,
    });
    expect(ids.usage!.prompt_tokens).toBe(3);
    const many = await client.completions.create({
      model: 'tiny',
      prompt: ['a', 'b', 'c'],
      max_tokens: 2,
    });
    expect(many.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const echo = await client.completions.create({
      model: 'tiny',
      prompt: 'Echo me',
      max_tokens: 2,
      echo: true,
    });
    expect(echo.choices[0]!.text.startsWith('Echo me')).toBe(true);
    const scored = await client.completions.create({
      model: 'tiny',
      prompt: 'Echo me',
      max_tokens: 2,
      echo: true,
      logprobs: 1,
    });
    const slp = scored.choices[0]!.logprobs!;
    expect(slp.token_logprobs![0]).toBeNull(); // the first prompt token has no log-probability
    expect(slp.token_logprobs!.slice(1).every((x) => x! < 0)).toBe(true);
    expect(slp.tokens).toHaveLength(scored.usage!.prompt_tokens + 2);
  });

  it('cuts stop strings, honours n=2, and reproduces seeded sampling', async () => {
    const free = await client.completions.create({
      model: 'tiny',
      prompt: 'Stop test',
      max_tokens: 24,
      temperature: 0,
    });
    const text = free.choices[0]!.text;
    const stop = text.slice(8, 11);
    const stopped = await client.completions.create({
      model: 'tiny',
      prompt: 'Stop test',
      max_tokens: 24,
      temperature: 0,
      stop: [stop],
    });
    expect(stopped.choices[0]!.finish_reason).toBe('stop');
    expect((stopped.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe(stop);
    expect(stopped.choices[0]!.text).toBe(text.slice(0, text.indexOf(stop)));

    const sampled = {
      model: 'tiny',
      messages: chat('Roll the dice'),
      max_tokens: 16,
      temperature: 1,
      seed: 42,
    };
    const a = await client.chat.completions.create(sampled);
    const b = await client.chat.completions.create(sampled);
    const c = await client.chat.completions.create({ ...sampled, seed: 43 });
    expect(b.choices[0]!.message.content).toBe(a.choices[0]!.message.content);
    expect(c.choices[0]!.message.content).not.toBe(a.choices[0]!.message.content);
    const two = await client.chat.completions.create({ ...sampled, n: 2 });
    expect(two.choices.map((x) => x.index)).toEqual([0, 1]);
    expect(two.choices[0]!.message.content).toBe(a.choices[0]!.message.content); // completion 0 uses seed + 0
    expect(two.choices[1]!.message.content).not.toBe(two.choices[0]!.message.content);
    expect(two.usage!.completion_tokens).toBe(32);
    // n=2 streaming: chunks of both indices, one role chunk each.
    const s2 = await client.chat.completions.create({ ...sampled, n: 2, stream: true });
    const roles = new Map<number, number>();
    const texts = ['', ''];
    for await (const ch of s2) {
      const ci = ch.choices[0]!;
      if (ci.delta.role) roles.set(ci.index, (roles.get(ci.index) ?? 0) + 1);
      texts[ci.index] += ci.delta.content ?? '';
    }
    expect([...roles.entries()].sort()).toEqual([
      [0, 1],
      [1, 1],
    ]);
    expect(texts).toEqual(two.choices.map((x) => x.message.content));
  });

  it('returns log-probabilities in both APIs', async () => {
    const r = await client.chat.completions.create({
      model: 'tiny',
      messages: chat('logprobs'),
      max_tokens: 5,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = r.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(5);
    for (const e of content) {
      expect(e.logprob).toBeLessThan(0);
      expect(e.bytes).toEqual([...Buffer.from(e.token, 'utf8')]);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.top_logprobs[0]!.token).toBe(e.token); // greedy: the chosen token is the top one
      expect(e.top_logprobs[1]!.logprob).toBeLessThanOrEqual(e.top_logprobs[0]!.logprob);
    }
    const c = await client.completions.create({
      model: 'tiny',
      prompt: 'logprobs',
      max_tokens: 4,
      temperature: 0,
      logprobs: 2,
    });
    const lp = c.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(4);
    expect(lp.token_logprobs!.every((x) => x! < 0)).toBe(true);
    expect(
      lp.top_logprobs!.every((t) => Object.keys(t).length >= 1 && Object.keys(t).length <= 3),
    ).toBe(true);
    expect(lp.text_offset![0]).toBe(0);
    // Token texts are decode([id]) as in vLLM v1 (SentencePiece drops a piece's leading space).
    expect(lp.tokens!.join('').replaceAll(' ', '')).toBe(c.choices[0]!.text.replaceAll(' ', ''));
  });

  it('serves 32 concurrent streams, each with the tokens it gets alone', async () => {
    const prompts = ['alpha', 'beta', 'gamma', 'delta'];
    const alone = await Promise.all(
      prompts.map(
        async (p) =>
          (
            await client.completions.create({
              model: 'tiny',
              prompt: p,
              max_tokens: 16,
              temperature: 0,
            })
          ).choices[0]!.text,
      ),
    );
    const results = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const s = await client.completions.create({
          model: 'tiny',
          prompt: prompts[i % 4]!,
          max_tokens: 16,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = '';
        let tokens = 0;
        for await (const c of s) {
          text += c.choices[0]?.text ?? '';
          if (c.usage) tokens = c.usage.completion_tokens;
        }
        return { i, text, tokens };
      }),
    );
    for (const r of results) {
      expect(r.tokens).toBe(16);
      expect(r.text).toBe(alone[r.i % 4]);
    }
  });

  it('aborts a request whose client disconnects and frees its blocks', async () => {
    const before =
      metric(await metrics(server.url), 'x:request_success_total', 'finished_reason="abort"') || 0;
    const s = await client.completions.create({
      model: 'tiny',
      prompt: 'long',
      max_tokens: 400,
      ignore_eos: true,
      stream: true,
    } as OpenAI.CompletionCreateParamsStreaming);
    let n = 0;
    for await (const _ of s) {
      if (++n === 3) break; // leaving the loop aborts the HTTP request
    }
    await until('the aborted request to leave the engine', async () => {
      const m = await metrics(server.url);
      return (
        metric(m, 'x:num_requests_running') === 0 &&
        metric(m, 'x:kv_cache_usage_perc') === 0 &&
        metric(m, 'x:request_success_total', 'finished_reason="abort"') === before + 1
      );
    });
  });

  it('answers malformed requests with OpenAI errors naming the field', async () => {
    const bad = async (p: Promise<unknown>) =>
      p.then(
        () => {
          throw new Error('expected an error');
        },
        (e) => e as InstanceType<typeof OpenAI.APIError>,
      );
    const e1 = await bad(
      client.chat.completions.create({ model: 'tiny', messages: chat('x'), temperature: -1 }),
    );
    expect(e1).toBeInstanceOf(OpenAI.BadRequestError);
    expect(e1.status).toBe(400);
    expect(e1.param).toBe('temperature');
    const e2 = await bad(
      client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 100_000 }),
    );
    expect(e2.param).toBe('max_tokens');
    expect(e2.message).toMatch(/maximum context length is 512/);
    const e3 = await bad(client.chat.completions.create({ model: 'other', messages: chat('x') }));
    expect(e3).toBeInstanceOf(OpenAI.NotFoundError);
    const e4 = await bad(client.chat.completions.create({ model: 'tiny', messages: [] }));
    expect(e4.param).toBe('messages');
    const e5 = await bad(client.completions.create({ model: 'tiny', prompt: 'x', n: 0 }));
    expect(e5.param).toBe('n');
    const raw = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"messages": [',
    });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as { error: { code: number } }).error.code).toBe(400);
    // The server still serves after all that.
    const ok = await client.completions.create({ model: 'tiny', prompt: 'fine', max_tokens: 1 });
    expect(ok.choices).toHaveLength(1);
  });

  it('logs the device, memory budget, KV blocks and address at startup', () => {
    const log = server.log();
    expect(log).toMatch(/on cpu/);
    expect(log).toMatch(/memory budget \S+/);
    expect(log).toMatch(/KV cache 512 blocks × 16 tokens/);
    expect(log).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/);
  });
});

describe('x serve without --model', () => {
  it('serves the built-in model, chat template included', async () => {
    const builtIn = await startServe(['--num-gpu-blocks-override', '256'], {}, true);
    try {
      const c = new OpenAI({ baseURL: `${builtIn.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const models = await c.models.list();
      expect(models.data[0]!.id).toBe('default');
      const r = await c.chat.completions.create({
        model: 'default',
        messages: chat('In the beginning'),
        max_tokens: 8,
        temperature: 0,
      });
      expect(r.usage!.completion_tokens).toBeGreaterThan(0);
      expect(typeof r.choices[0]!.message.content).toBe('string');
    } finally {
      expect(await builtIn.stop()).toBe(0);
    }
  });
});
