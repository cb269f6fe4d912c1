// Test helpers: a real server (engine core in its worker thread, fixture model) listening on a
// free port. Not exported from the package.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTemplate, EngineClient, type EngineConfig, Tokenizer } from '@x/engine';
import type { FastifyInstance } from 'fastify';
import type { ServerOptions } from './context.js';
import { createServer } from './server.js';

const here = dirname(fileURLToPath(import.meta.url));
export const LLAMA = resolve(here, '../../engine/fixtures/llama-v4');
/** The engine's fault-injection thread: crashes when a request with id "crash" arrives. */
export const CRASH_THREAD = new URL(
  `file://${resolve(here, '../../engine/src/serving/fixtures/crash-thread.mjs')}`,
);

export interface TestServer {
  app: FastifyInstance;
  engine: EngineClient;
  url: string;
  close(): Promise<void>;
}

export async function startTestServer(
  o: { engine?: EngineConfig; server?: Partial<ServerOptions>; threadUrl?: URL } = {},
): Promise<TestServer> {
  const engine = await EngineClient.start({
    config: { model: LLAMA, maxModelLen: 256, numGpuBlocksOverride: 256, ...o.engine },
    ...(o.threadUrl === undefined ? {} : { threadUrl: o.threadUrl }),
  });
  try {
    const tokenizer = await Tokenizer.load(LLAMA);
    const source = readFileSync(join(here, 'fixtures/chat-template.jinja'), 'utf8');
    const app = createServer({
      engine,
      tokenizer,
      servedModelName: 'tiny',
      chatTemplate: new ChatTemplate(source, { bos_token: '<s>', eos_token: '</s>' }),
      ...o.server,
    });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    return {
      app,
      engine,
      url,
      async close() {
        await engine.shutdown();
        await app.close();
      },
    };
  } catch (err) {
    await engine.shutdown();
    throw err;
  }
}

export interface PostResult {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read deep into response JSON
  json: Record<string, any>;
}

/** POST JSON; returns status, headers and the parsed (or raw) body. */
export async function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<PostResult> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // SSE or empty
  }
  return { status: res.status, headers: res.headers, text, json: json as PostResult['json'] };
}
