// The client side of `x bench serve`: vLLM's random dataset and its streaming request functions
// (vllm/benchmarks/lib/endpoint_request_func.py), so the numbers mean what vLLM's mean.
import type { Tokenizer } from '@x/engine';

/** One prompt of the random dataset. */
export interface SampleRequest {
  prompt: string;
  promptLen: number;
  expectedOutputLen: number;
}

/** What one request measured (seconds, perf-clock based). */
export interface RequestOutput {
  success: boolean;
  error: string;
  generatedText: string;
  outputTokens: number;
  promptLen: number;
  ttft: number;
  itl: number[];
  latency: number;
  startTime: number;
  clientQueueTime: number;
}

/** A seeded generator (mulberry32): the same --seed gives the same dataset. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const intIn = (rand: () => number, lo: number, hi: number) =>
  lo + Math.floor(rand() * (hi - lo + 1));

/**
 * vLLM's RandomDataset: input and output lengths uniform in len × [1 − ratio, 1 + ratio], a shared
 * random prefix, then a run of consecutive token ids from a random offset; decoded to text and
 * re-encoded until the prompt has the target length (special tokens excluded).
 */
export async function randomDataset(
  tokenizer: Tokenizer,
  o: {
    numPrompts: number;
    inputLen: number;
    outputLen: number;
    rangeRatio: number;
    prefixLen: number;
    seed: number;
  },
): Promise<SampleRequest[]> {
  const rand = rng(o.seed);
  const vocab = tokenizer.size;
  const special = tokenizer.specialTokenIds;
  const pick = (id: number) => {
    let t = id % vocab;
    while (special.has(t)) t = (t + 1) % vocab;
    return t;
  };
  const prefix = Array.from({ length: o.prefixLen }, () => pick(Math.floor(rand() * vocab)));
  const out: SampleRequest[] = [];
  for (let i = 0; i < o.numPrompts; i++) {
    const inLen = intIn(
      rand,
      Math.floor(o.inputLen * (1 - o.rangeRatio)),
      Math.floor(o.inputLen * (1 + o.rangeRatio)),
    );
    const outLen = Math.max(
      1,
      intIn(
        rand,
        Math.floor(o.outputLen * (1 - o.rangeRatio)),
        Math.floor(o.outputLen * (1 + o.rangeRatio)),
      ),
    );
    const offset = Math.floor(rand() * vocab);
    const target = o.prefixLen + inLen;
    let ids = [...prefix, ...Array.from({ length: inLen }, (_, k) => pick(offset + i + k))];
    let prompt = await tokenizer.decode(ids);
    // Decoding and re-encoding changes the count; adjust like vLLM's gen_prompt_decode_to_target_len.
    for (let tries = 0; tries < 10; tries++) {
      const enc = await tokenizer.encode(prompt, { addSpecialTokens: false });
      if (enc.length === target) break;
      ids =
        enc.length > target
          ? enc.slice(0, target)
          : [
              ...enc,
              ...Array.from({ length: target - enc.length }, () =>
                pick(Math.floor(rand() * vocab)),
              ),
            ];
      prompt = await tokenizer.decode(ids);
    }
    const promptLen = (await tokenizer.encode(prompt, { addSpecialTokens: false })).length;
    out.push({ prompt, promptLen, expectedOutputLen: outLen });
  }
  return out;
}

/** Splits an SSE byte stream into `data:` payloads (vLLM's StreamedResponseHandler). */
async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let at = buffer.indexOf('\n\n');
    while (at >= 0) {
      const message = buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 2);
      if (message.length > 0 && !message.startsWith(':')) yield message.replace(/^data: /, '');
      at = buffer.indexOf('\n\n');
    }
  }
  const rest = buffer.trim();
  if (rest.length > 0) yield rest.replace(/^data: /, '');
}

/** Options shared by every request of a run. */
export interface RequestConfig {
  apiUrl: string;
  model: string;
  backend: 'openai' | 'vllm' | 'openai-chat';
  ignoreEos: boolean;
  logprobs: number | undefined;
  apiKey: string | undefined;
  timeoutMs: number;
}

/** One streaming request, timed as vLLM times it: TTFT at the first chunk with choices. */
export async function sendRequest(c: RequestConfig, r: SampleRequest): Promise<RequestOutput> {
  const chat = c.backend === 'openai-chat';
  const payload: Record<string, unknown> = chat
    ? {
        model: c.model,
        messages: [{ role: 'user', content: [{ type: 'text', text: r.prompt }] }],
        max_completion_tokens: r.expectedOutputLen,
        stream: true,
        stream_options: { include_usage: true },
      }
    : {
        model: c.model,
        prompt: r.prompt,
        repetition_penalty: 1.0,
        max_tokens: r.expectedOutputLen,
        logprobs: c.logprobs ?? null,
        stream: true,
        stream_options: { include_usage: true },
      };
  if (c.ignoreEos) payload.ignore_eos = true;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (c.apiKey) headers.authorization = `Bearer ${c.apiKey}`;
  const out: RequestOutput = {
    success: false,
    error: '',
    generatedText: '',
    outputTokens: 0,
    promptLen: r.promptLen,
    ttft: 0,
    itl: [],
    latency: 0,
    startTime: 0,
    clientQueueTime: 0,
  };
  const st = performance.now() / 1000;
  out.startTime = st;
  let last = st;
  let first = false;
  try {
    const res = await fetch(c.apiUrl, {
      method: 'POST',
      headers,
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(c.timeoutMs),
    });
    if (res.status !== 200 || res.body === null) {
      out.error = `${res.status} ${res.statusText}: ${await res.text()}`;
      return out;
    }
    for await (const message of sseMessages(res.body)) {
      if (message === '[DONE]') continue;
      const data = JSON.parse(message) as {
        choices?: Array<{ text?: string; delta?: { content?: string } }>;
        usage?: { completion_tokens?: number; prompt_tokens?: number };
        error?: { message?: string };
      };
      if (data.error) throw new Error(data.error.message ?? 'error event');
      const t = performance.now() / 1000;
      if (data.choices && data.choices.length > 0) {
        if (!first) {
          first = true;
          out.ttft = t - st;
        } else {
          out.itl.push(t - last);
        }
        last = t;
        const c0 = data.choices[0]!;
        out.generatedText += (chat ? c0.delta?.content : c0.text) ?? '';
      } else if (data.usage) {
        out.outputTokens = data.usage.completion_tokens ?? 0;
        if (data.usage.prompt_tokens !== undefined) out.promptLen = data.usage.prompt_tokens;
      }
    }
    out.success = first;
    if (!first) out.error = 'Never received a valid chunk to calculate TTFT.';
    out.latency = last - st;
  } catch (err) {
    out.success = false;
    out.error = (err as Error).message;
  }
  return out;
}
