import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { badField, HttpError } from '../errors.js';
import { Fields } from '../fields.js';
import { parseMessages } from './chat.js';

/** /v1/models, /version, /health, /metrics, /tokenize, /detokenize. */
export function registerInfo(app: FastifyInstance, ctx: ServerContext, version: string): void {
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [
      {
        id: ctx.modelName,
        object: 'model',
        created: ctx.created,
        owned_by: 'x',
        root: ctx.engine.info.modelDir,
        parent: null,
        max_model_len: ctx.maxModelLen,
      },
    ],
  }));

  app.get('/version', async () => ({ version }));

  // The true state: 200 only while the engine serves; 503 while asleep, paused, without valid
  // weights, or after the engine died (vLLM issue 45519: /health said 200 over a dead engine).
  app.get('/health', async (_req, reply) => {
    const s = ctx.engine.status;
    if (s.dead) throw new HttpError(503, `The engine is dead: ${s.error ?? 'unknown error'}`);
    if (s.state !== 'running' || !s.weightsValid) {
      const what =
        s.state === 'sleeping' ? 'asleep' : !s.weightsValid ? 'waiting for weights' : s.state;
      throw new HttpError(503, `The engine is ${what}.`, {
        retryAfterSeconds: ctx.retryAfterSeconds,
      });
    }
    return reply.code(200).send();
  });

  app.get('/metrics', async (_req, reply) => {
    const text = await ctx.metrics.render();
    return reply.type(ctx.metrics.registry.contentType).send(text);
  });

  app.post('/tokenize', async (req) => {
    const f = new Fields(req.body);
    ctx.checkModel(f);
    let ids: number[];
    if (f.has('messages')) {
      const messages = parseMessages(f);
      const template = ctx.chatTemplate;
      if (template === null) {
        throw new HttpError(400, 'The model has no chat template', { param: 'messages' });
      }
      const text = template.render(messages, {
        addGenerationPrompt: f.bool('add_generation_prompt') ?? true,
      });
      ids = await ctx.tokenizer.encode(text, {
        addSpecialTokens: f.bool('add_special_tokens') ?? false,
      });
    } else {
      const prompt = f.string('prompt');
      if (prompt === undefined) throw badField('prompt', 'a string (or messages)', f.raw('prompt'));
      ids = await ctx.tokenizer.encode(prompt, {
        addSpecialTokens: f.bool('add_special_tokens') ?? true,
      });
    }
    const strs = f.bool('return_token_strs') ?? false;
    return {
      count: ids.length,
      max_model_len: ctx.maxModelLen,
      tokens: ids,
      token_strs: strs ? ids.map((id) => ctx.tokenizer.idToToken(id) ?? '') : null,
    };
  });

  app.post('/detokenize', async (req) => {
    const f = new Fields(req.body);
    ctx.checkModel(f);
    const tokens = f.intArray('tokens', 0, ctx.vocabSize - 1);
    if (tokens === undefined) throw badField('tokens', 'an array of token ids', f.raw('tokens'));
    return { prompt: await ctx.tokenizer.decode(tokens) };
  });
}
