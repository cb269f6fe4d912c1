import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/**
 * A server-sent-events response in vLLM's framing: `data: <json>\n\n` per chunk and a final
 * `data: [DONE]\n\n`, no event names or ids. Writes wait for the socket to drain, so a slow
 * client only slows its own request.
 */
export class SseWriter {
  readonly #res: ServerResponse;
  #closed = false;

  constructor(reply: FastifyReply) {
    reply.hijack();
    this.#res = reply.raw;
    this.#res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.#res.flushHeaders();
    this.#res.on('close', () => {
      this.#closed = true;
    });
  }

  /** The client went away (or the stream ended). */
  get closed(): boolean {
    return this.#closed || this.#res.destroyed;
  }

  /** Calls `fn` once if the client disconnects before the stream ends. */
  onDisconnect(fn: () => void): void {
    this.#res.on('close', () => {
      if (!this.#res.writableFinished) fn();
    });
  }

  async send(data: unknown): Promise<void> {
    await this.#write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Sends `data: [DONE]` and ends the response. */
  async done(): Promise<void> {
    if (this.closed) return;
    await this.#write('data: [DONE]\n\n');
    this.#res.end();
  }

  async #write(chunk: string): Promise<void> {
    if (this.closed) return;
    if (!this.#res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#res.off('drain', done);
          this.#res.off('close', done);
          resolve();
        };
        this.#res.on('drain', done);
        this.#res.on('close', done);
      });
    }
  }
}
