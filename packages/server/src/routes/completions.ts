import type { CompletionOutput, OutputLogprob } from '@x/engine';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.js';
import { badField, HttpError } from '../errors.js';
import { Fields } from '../fields.js';
import { abortError, Generation, type PromptInput } from '../generation.js';
import { completionLogprobs, type MissingLogprob } from '../logprobs.js';
import { type ParsedSampling, parseSampling, resolveMaxTokens } from '../sampling.js';
import { SseWriter } from '../sse.js';
import { type Usage, usage } from './usage.js';

/** `prompt`: a string, strings, token ids, or lists of token ids (OpenAI's four forms). */
function parsePrompts(f: Fields, vocabSize: number): Array<string | number[]> {
  const p = f.raw('prompt');
  const expected = 'a string, an array of strings, an array of token ids, or an array of those';
  if (typeof p === 'string') return [p];
  if (!Array.isArray(p) || p.length === 0) throw badField('prompt', expected, p);
  const ids = (a: unknown[], where: string) => {
    if (a.length === 0) throw badField(where, 'a non-empty array of token ids', a);
    a.forEach((t, i) => {
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocabSize) {
        throw badField(`${where}[${i}]`, `a token id in [0, ${vocabSize})`, t);
      }
    });
    return a as number[];
  };
  if (p.every((x) => typeof x === 'number')) return [ids(p, 'prompt')];
  if (p.every((x) => typeof x === 'string')) return p as string[];
  if (p.every((x) => Array.isArray(x))) return p.map((x, i) => ids(x as unknown[], `prompt[${i}]`));
  throw badField('prompt', expected, p);
}

type Entry = OutputLogprob | MissingLogprob;

/**
 * echo + logprobs: the prompt's log-probabilities, per prompt. Completion 0 reports them in its
 * first output (it computes the prompt); the other completions of that prompt reuse them.
 */
class PromptEntries {
  readonly #byPrompt = new Map<number, Entry[]>();
  constructor(readonly firstTokens: readonly string[]) {}

  take(prompt: number, o: CompletionOutput): Entry[] {
    if (o.promptLogprobs !== undefined) {
      const first = this.firstTokens[prompt] ?? '';
      this.#byPrompt.set(
        prompt,
        o.promptLogprobs.map((e) => e ?? { token: first, missing: true }),
      );
    }
    return this.#byPrompt.get(prompt) ?? [];
  }
}

interface Choice {
  text: string;
  tokens: number;
  logprobs: Entry[] | null;
  finishReason: string | null;
  stopReason: number | string | null;
}

/** POST /v1/completions (text completion, streaming or not). */
export function registerCompletions(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/completions', async (req: FastifyRequest, reply: FastifyReply) => {
    const arrival = Date.now();
    ctx.checkAccepting();
    const f = new Fields(req.body);
    ctx.checkModel(f);
    if (f.has('suffix')) throw new HttpError(400, 'suffix is not supported', { param: 'suffix' });
    const raw = parsePrompts(f, ctx.vocabSize);
    const echo = f.bool('echo') ?? false;
    const parsed = parseSampling(f, 'completion', ctx.defaults, ctx.vocabSize);
    // echo with logprobs also returns the prompt's log-probabilities (vLLM: prompt_logprobs).
    if (echo && parsed.logprobs !== null) parsed.sampling.promptLogprobs = parsed.logprobs;
    const prompts: PromptInput[] = [];
    for (const [i, p] of raw.entries()) {
      const tokenIds = typeof p === 'string' ? await ctx.tokenizer.encode(p) : p;
      if (tokenIds.length === 0) {
        throw badField(raw.length === 1 ? 'prompt' : `prompt[${i}]`, 'a non-empty prompt', p);
      }
      const text = typeof p === 'string' ? p : await ctx.tokenizer.decode(p);
      prompts.push({ tokenIds, text });
    }
    const maxTokens = prompts.map((p) =>
      resolveMaxTokens(
        parsed.maxTokens,
        p.tokenIds.length,
        ctx.maxModelLen,
        ctx.defaults,
        'prompt',
      ),
    );
    const id = ctx.newId('cmpl');
    const created = Math.floor(arrival / 1000);
    if (maxTokens.some((m) => m === 0)) {
      if (!echo) throw badField('max_tokens', 'an integer >= 1 (0 only with echo)', 0);
      const body = echoOnly(ctx, id, created, prompts, parsed);
      if (!parsed.stream) return body;
      const sse = new SseWriter(reply);
      const { choices, usage: total, kv_transfer_params: _kv, ...head } = body;
      for (const c of choices) {
        const { prompt_logprobs: _, ...choice } = c;
        await sse.send({ ...head, choices: [choice], usage: null });
      }
      if (parsed.includeUsage) {
        const { prompt_tokens_details: _, ...u } = total;
        await sse.send({ ...head, choices: [], usage: u });
      }
      await sse.done();
      return reply;
    }
    ctx.active++;
    try {
      const gen = await Generation.start({
        engine: ctx.engine,
        metrics: ctx.metrics,
        id,
        prompts,
        sampling: maxTokens.map((m) => ({ ...parsed.sampling, maxTokens: m })),
        priority: parsed.priority,
        cacheSalt: parsed.cacheSalt,
        arrivalTime: arrival,
      });
      const head = { id, object: 'text_completion', created, model: ctx.modelName };
      const promptTokens = prompts.reduce((a, p) => a + p.tokenIds.length, 0);
      const entries = new PromptEntries(
        await Promise.all(
          prompts.map((p) => ctx.tokenizer.decode([p.tokenIds[0]!], { skipSpecialTokens: false })),
        ),
      );
      const withPrompt = parsed.sampling.promptLogprobs !== undefined;
      if (parsed.stream) {
        await stream(
          ctx,
          reply,
          gen,
          head,
          prompts,
          parsed,
          echo,
          promptTokens,
          withPrompt ? entries : null,
        );
        return reply;
      }
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) gen.abort();
      });
      const choices: Choice[] = [];
      for await (const { prompt, output: o } of gen.events()) {
        const err = abortError(o, ctx.retryAfterSeconds);
        if (err) throw err;
        const i = prompt * parsed.n + o.index;
        let c = choices[i];
        if (c === undefined) {
          c = {
            text: echo ? prompts[prompt]!.text : '',
            tokens: 0,
            logprobs:
              parsed.logprobs === null ? null : withPrompt ? [...entries.take(prompt, o)] : [],
            finishReason: null,
            stopReason: null,
          };
          choices[i] = c;
        }
        if (c.logprobs !== null && o.logprobs !== null) c.logprobs.push(...o.logprobs);
        c.text += o.text;
        c.tokens += o.tokenIds.length;
        c.finishReason = o.finishReason;
        c.stopReason = o.stopReason;
      }
      const completionTokens = choices.reduce((a, c) => a + c.tokens, 0);
      return {
        ...head,
        choices: choices.map((c, index) => ({
          index,
          text: c.text,
          logprobs:
            c.logprobs === null ? null : completionLogprobs(c.logprobs, parsed.logprobs!, 0),
          finish_reason: c.finishReason,
          stop_reason: c.stopReason,
          prompt_logprobs: null,
        })),
        usage: { ...usage(promptTokens, completionTokens), prompt_tokens_details: null },
        kv_transfer_params: null,
      };
    } finally {
      ctx.active--;
    }
  });
}

async function stream(
  ctx: ServerContext,
  reply: FastifyReply,
  gen: Generation,
  head: { id: string; object: string; created: number; model: string },
  prompts: PromptInput[],
  parsed: ParsedSampling,
  echo: boolean,
  promptTokens: number,
  entries: PromptEntries | null,
): Promise<void> {
  const sse = new SseWriter(reply);
  sse.onDisconnect(() => gen.abort());
  const textLen: number[] = [];
  const tokens: number[] = [];
  try {
    for await (const { prompt, output: o } of gen.events()) {
      if (sse.closed) break;
      const err = abortError(o, ctx.retryAfterSeconds);
      if (err) {
        await sse.send(err.body());
        break;
      }
      if (o.finishReason === 'abort') break;
      const i = prompt * parsed.n + o.index;
      const first = tokens[i] === undefined;
      tokens[i] = (tokens[i] ?? 0) + o.tokenIds.length;
      const text = first && echo ? prompts[prompt]!.text + o.text : o.text;
      const lps: Entry[] = first && entries !== null ? [...entries.take(prompt, o)] : [];
      if (o.logprobs !== null) lps.push(...o.logprobs);
      const logprobs =
        parsed.logprobs === null ? null : completionLogprobs(lps, parsed.logprobs, textLen[i] ?? 0);
      textLen[i] = (textLen[i] ?? 0) + o.text.length;
      let chunkUsage: (Usage & { prompt_tokens_details: null }) | null = null;
      if (parsed.includeUsage && parsed.continuousUsage) {
        const p = prompts[prompt]!.tokenIds.length;
        chunkUsage = { ...usage(p, tokens[i]!), prompt_tokens_details: null };
      }
      await sse.send({
        ...head,
        choices: [
          { index: i, text, logprobs, finish_reason: o.finishReason, stop_reason: o.stopReason },
        ],
        usage: chunkUsage,
      });
    }
    if (parsed.includeUsage && !sse.closed) {
      const completionTokens = tokens.reduce((a, t) => a + (t ?? 0), 0);
      await sse.send({ ...head, choices: [], usage: usage(promptTokens, completionTokens) });
    }
  } catch (err) {
    await sse.send(new HttpError(503, (err as Error).message).body());
  }
  await sse.done();
}

/** max_tokens 0 with echo: the prompt is the whole answer (no generation). */
function echoOnly(
  ctx: ServerContext,
  id: string,
  created: number,
  prompts: PromptInput[],
  parsed: ParsedSampling,
) {
  const promptTokens = prompts.reduce((a, p) => a + p.tokenIds.length, 0);
  return {
    id,
    object: 'text_completion',
    created,
    model: ctx.modelName,
    choices: prompts.flatMap((p, pi) =>
      Array.from({ length: parsed.n }, (_, k) => ({
        index: pi * parsed.n + k,
        text: p.text,
        logprobs: null,
        finish_reason: 'length',
        stop_reason: null,
        prompt_logprobs: null,
      })),
    ),
    usage: { ...usage(promptTokens, 0), prompt_tokens_details: null },
    kv_transfer_params: null,
  };
}
