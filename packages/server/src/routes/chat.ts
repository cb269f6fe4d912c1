import { type ChatMessage, ChatTemplate } from '@x/engine';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerContext } from '../context.js';
import { badField, HttpError } from '../errors.js';
import { Fields } from '../fields.js';
import { abortError, Generation } from '../generation.js';
import { type ChatLogprobEntry, chatLogprobs } from '../logprobs.js';
import { type ParsedSampling, parseSampling, resolveMaxTokens } from '../sampling.js';
import { SseWriter } from '../sse.js';
import { usage } from './usage.js';

/** `messages`: roles and text content (text parts are joined with newlines, as vLLM does). */
export function parseMessages(f: Fields): ChatMessage[] {
  const list = f.raw('messages');
  if (!Array.isArray(list) || list.length === 0) {
    throw badField('messages', 'a non-empty array of messages', list);
  }
  return list.map((raw, i) => {
    const m = new Fields(raw, `messages[${i}]`);
    const role = m.string('role');
    if (role === undefined || role.length === 0) {
      throw badField(`messages[${i}].role`, 'a non-empty string', m.raw('role'));
    }
    const content = m.raw('content');
    let text: string | null = null;
    if (typeof content === 'string') {
      text = content;
    } else if (Array.isArray(content)) {
      text = content
        .map((part, j) => {
          const p = new Fields(part, `messages[${i}].content[${j}]`);
          const type = p.string('type');
          if (type !== 'text') {
            throw badField(
              `messages[${i}].content[${j}].type`,
              '"text" (only text is supported)',
              type,
            );
          }
          const t = p.string('text');
          if (t === undefined) throw badField(`messages[${i}].content[${j}].text`, 'a string', t);
          return t;
        })
        .join('\n');
    } else if (content !== undefined) {
      throw badField(`messages[${i}].content`, 'a string or an array of text parts', content);
    }
    return { ...(raw as Record<string, unknown>), role, content: text } as ChatMessage;
  });
}

/** The prompt text of a chat request, rendered with the request's or the server's template. */
function renderPrompt(ctx: ServerContext, f: Fields, messages: ChatMessage[]): string {
  const source = f.string('chat_template');
  const special: Record<string, string> = {};
  if (ctx.tokenizer.bosToken !== null) special.bos_token = ctx.tokenizer.bosToken;
  if (ctx.tokenizer.eosToken !== null) special.eos_token = ctx.tokenizer.eosToken;
  let template = ctx.chatTemplate;
  if (source !== undefined) {
    try {
      template = new ChatTemplate(source, special);
    } catch (err) {
      throw new HttpError(400, `chat_template does not parse: ${(err as Error).message}`, {
        param: 'chat_template',
      });
    }
  }
  if (template === null) {
    throw new HttpError(
      400,
      'The model has no chat template: start the server with --chat-template, or use /v1/completions',
      { param: 'messages' },
    );
  }
  const continueFinal = f.bool('continue_final_message') ?? false;
  const addGenerationPrompt = f.bool('add_generation_prompt') ?? !continueFinal;
  if (continueFinal && addGenerationPrompt) {
    throw new HttpError(
      400,
      'continue_final_message and add_generation_prompt cannot both be true',
      {
        param: 'continue_final_message',
      },
    );
  }
  const kwargs = f.object('chat_template_kwargs');
  const extra: Record<string, unknown> = {};
  for (const k of kwargs?.keys() ?? []) extra[k] = kwargs!.raw(k);
  const tools = f.raw('tools');
  const rendered = template.render(messages, {
    addGenerationPrompt,
    ...(Array.isArray(tools) && tools.length > 0 ? { tools } : {}),
    extra,
  });
  if (!continueFinal) return rendered;
  const last = messages.at(-1)?.content;
  if (typeof last !== 'string' || last.length === 0) return rendered;
  const at = rendered.lastIndexOf(last);
  return at < 0 ? rendered : rendered.slice(0, at + last.length);
}

/** Tools and structured outputs x does not implement are refused, naming the field. */
function checkUnsupported(f: Fields): void {
  const tools = f.raw('tools');
  const choice =
    f.raw('tool_choice') ?? (Array.isArray(tools) && tools.length > 0 ? 'auto' : 'none');
  if (choice !== 'none') {
    throw new HttpError(400, 'tool calling is not supported (tool_choice must be "none")', {
      param: 'tool_choice',
    });
  }
  if (f.has('functions') || f.has('function_call')) {
    throw new HttpError(400, 'function calling is not supported', { param: 'functions' });
  }
  const format = f.object('response_format');
  if (format !== undefined && format.string('type') !== 'text') {
    throw new HttpError(
      400,
      'structured outputs are not supported (response_format must be "text")',
      {
        param: 'response_format',
      },
    );
  }
}

interface ChatChoice {
  content: string;
  tokens: number;
  logprobs: ChatLogprobEntry[] | null;
  finishReason: string | null;
  stopReason: number | string | null;
}

/** POST /v1/chat/completions (streaming or not). */
export function registerChat(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/chat/completions', async (req: FastifyRequest, reply: FastifyReply) => {
    const arrival = Date.now();
    ctx.checkAccepting();
    const f = new Fields(req.body);
    ctx.checkModel(f);
    const messages = parseMessages(f);
    checkUnsupported(f);
    const parsed = parseSampling(f, 'chat', ctx.defaults, ctx.vocabSize);
    const echo = f.bool('echo') ?? false;
    const prompt = renderPrompt(ctx, f, messages);
    const tokenIds = await ctx.tokenizer.encode(prompt, {
      addSpecialTokens: f.bool('add_special_tokens') ?? false,
    });
    const maxTokens = resolveMaxTokens(
      parsed.maxTokens,
      tokenIds.length,
      ctx.maxModelLen,
      ctx.defaults,
      'messages',
    );
    const addGenerationPrompt =
      f.bool('add_generation_prompt') ?? !(f.bool('continue_final_message') ?? false);
    const role = addGenerationPrompt ? 'assistant' : messages.at(-1)!.role;
    const last = messages.at(-1)!;
    const echoed =
      echo && last.role === role && typeof last.content === 'string' ? last.content : '';
    const id = ctx.newId('chatcmpl');
    const head = {
      id,
      object: 'chat.completion.chunk',
      created: Math.floor(arrival / 1000),
      model: ctx.modelName,
    };
    ctx.active++;
    try {
      const gen = await Generation.start({
        engine: ctx.engine,
        metrics: ctx.metrics,
        id,
        prompts: [{ tokenIds, text: prompt }],
        sampling: [{ ...parsed.sampling, maxTokens }],
        priority: parsed.priority,
        cacheSalt: parsed.cacheSalt,
        arrivalTime: arrival,
      });
      if (parsed.stream) {
        await stream(ctx, reply, gen, head, parsed, role, echoed, tokenIds.length);
        return reply;
      }
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) gen.abort();
      });
      const choices: ChatChoice[] = [];
      for await (const { output: o } of gen.events()) {
        const err = abortError(o, ctx.retryAfterSeconds);
        if (err) throw err;
        let c = choices[o.index];
        if (c === undefined) {
          c = {
            content: echoed,
            tokens: 0,
            logprobs: parsed.logprobs === null ? null : [],
            finishReason: null,
            stopReason: null,
          };
          choices[o.index] = c;
        }
        c.content += o.text;
        c.tokens += o.tokenIds.length;
        if (c.logprobs !== null && o.logprobs !== null) {
          c.logprobs.push(...chatLogprobs(o.logprobs, parsed.logprobs!));
        }
        c.finishReason = o.finishReason;
        c.stopReason = o.stopReason;
      }
      return {
        ...head,
        object: 'chat.completion',
        choices: choices.map((c, index) => ({
          index,
          message: { role, reasoning_content: null, content: c.content, tool_calls: [] },
          logprobs: c.logprobs === null ? null : { content: c.logprobs },
          finish_reason: c.finishReason,
          stop_reason: c.stopReason,
        })),
        usage: {
          ...usage(
            tokenIds.length,
            choices.reduce((a, c) => a + c.tokens, 0),
          ),
          prompt_tokens_details: null,
        },
        prompt_logprobs: null,
        kv_transfer_params: null,
      };
    } finally {
      ctx.active--;
    }
  });
}

/** vLLM's chat SSE: a role chunk per choice at the first output, deltas, usage, [DONE]. */
async function stream(
  ctx: ServerContext,
  reply: FastifyReply,
  gen: Generation,
  head: { id: string; object: string; created: number; model: string },
  parsed: ParsedSampling,
  role: string,
  echoed: string,
  promptTokens: number,
): Promise<void> {
  const sse = new SseWriter(reply);
  sse.onDisconnect(() => gen.abort());
  const tokens: number[] = Array.from({ length: parsed.n }, () => 0);
  const continuous = parsed.includeUsage && parsed.continuousUsage;
  const chunkUsage = (completion: number) =>
    continuous ? { usage: usage(promptTokens, completion) } : {};
  let first = true;
  try {
    for await (const { output: o } of gen.events()) {
      if (sse.closed) break;
      const err = abortError(o, ctx.retryAfterSeconds);
      if (err) {
        await sse.send(err.body());
        break;
      }
      if (o.finishReason === 'abort') break;
      if (first) {
        first = false;
        for (let i = 0; i < parsed.n; i++) {
          await sse.send({
            ...head,
            choices: [
              { index: i, delta: { role, content: '' }, logprobs: null, finish_reason: null },
            ],
            ...chunkUsage(0),
          });
        }
        if (echoed.length > 0) {
          for (let i = 0; i < parsed.n; i++) {
            await sse.send({
              ...head,
              choices: [
                { index: i, delta: { content: echoed }, logprobs: null, finish_reason: null },
              ],
              ...chunkUsage(0),
            });
          }
        }
      }
      tokens[o.index]! += o.tokenIds.length;
      const logprobs =
        parsed.logprobs === null || o.logprobs === null
          ? null
          : { content: chatLogprobs(o.logprobs, parsed.logprobs) };
      const choice =
        o.finishReason === null
          ? { index: o.index, delta: { content: o.text }, logprobs, finish_reason: null }
          : {
              index: o.index,
              delta: { content: o.text },
              logprobs,
              finish_reason: o.finishReason,
              stop_reason: o.stopReason,
            };
      await sse.send({ ...head, choices: [choice], ...chunkUsage(tokens[o.index]!) });
    }
    if (parsed.includeUsage && !sse.closed) {
      const completionTokens = tokens.reduce((a, t) => a + t, 0);
      await sse.send({ ...head, choices: [], usage: usage(promptTokens, completionTokens) });
    }
  } catch (err) {
    await sse.send(new HttpError(503, (err as Error).message).body());
  }
  await sse.done();
}
