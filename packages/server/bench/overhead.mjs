// Server overhead: the same workload run against the engine alone (EngineClient: the engine core
// in its worker thread, requests as token ids) and through HTTP (`x serve` in its own process,
// streaming /v1/completions with token-id prompts, SSE parsed by this client). Reports requests/s,
// output tokens/s, TTFT, inter-token latency and end-to-end latency, and the difference.
//   node packages/server/bench/overhead.mjs [--model DIR] [--prompt 64] [--output 64]
//     [--requests 64] [--concurrency 1,8,32]
// Needs a build (pnpm --filter @x/engine --filter @x/cli run build). Default model: the built-in.
import { spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EngineClient, resolveModelDir } from '@x/engine';

const here = dirname(fileURLToPath(import.meta.url));
const cli = resolve(here, '../../../apps/server/dist/cli.js');
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    prompt: { type: 'string', default: '64' },
    output: { type: 'string', default: '64' },
    requests: { type: 'string', default: '64' },
    concurrency: { type: 'string', default: '1,8,32' },
  },
});
const model = resolveModelDir(values.model);
const PROMPT = Number(values.prompt);
const OUTPUT = Number(values.output);
const REQUESTS = Number(values.requests);
const LEVELS = values.concurrency.split(',').map(Number);
const engineArgs = { maxModelLen: 512, numGpuBlocksOverride: 4096, seed: 0 };

const prompts = Array.from({ length: REQUESTS }, (_, i) =>
  Array.from({ length: PROMPT }, (_, k) => 3 + ((i * 7919 + k * 104729) % 8000)),
);
const mean = (v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);

/** Runs `one(i)` for every prompt with at most `conc` in flight; returns per-request timings. */
async function drive(conc, one) {
  const results = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < REQUESTS) {
        const i = next++;
        results.push(await one(i));
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const tokens = results.reduce((a, r) => a + r.tokens, 0);
  return {
    reqPerS: REQUESTS / seconds,
    tokPerS: tokens / seconds,
    ttftMs: mean(results.map((r) => r.ttft)),
    itlMs: mean(results.flatMap((r) => r.itl)),
    e2eMs: mean(results.map((r) => r.e2e)),
  };
}

async function engineAlone(conc) {
  const client = await EngineClient.start({ config: { model, ...engineArgs } });
  try {
    let id = 0;
    return await drive(conc, async (i) => {
      const st = performance.now();
      const s = await client.generate({
        requestId: `b${id++}`,
        promptTokenIds: prompts[i],
        sampling: { temperature: 0, maxTokens: OUTPUT, ignoreEos: true },
      });
      let ttft = 0;
      let last = st;
      const itl = [];
      let tokens = 0;
      for await (const o of s) {
        const t = performance.now();
        if (o.tokenIds.length === 0) continue;
        if (tokens === 0) ttft = t - st;
        else itl.push(t - last);
        last = t;
        tokens += o.tokenIds.length;
      }
      return { ttft, itl, e2e: last - st, tokens };
    });
  } finally {
    await client.shutdown();
  }
}

async function startServer() {
  const args = [cli, 'serve', '--model', model, '--port', '0', '--max-model-len', '512'];
  args.push('--num-gpu-blocks-override', '4096', '--seed', '0', '--served-model-name', 'bench');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`x serve did not start:\n${log}`)), 60_000);
    proc.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    proc.once('exit', (c) => fail(new Error(`x serve exited ${c}:\n${log}`)));
  });
  const stop = () =>
    new Promise((r) => {
      proc.once('exit', r);
      proc.kill('SIGTERM');
    });
  return { url, stop };
}

async function overHttp(conc) {
  const server = await startServer();
  try {
    return await drive(conc, async (i) => {
      const st = performance.now();
      const res = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'bench',
          prompt: prompts[i],
          max_tokens: OUTPUT,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      const decoder = new TextDecoder();
      let buf = '';
      let ttft = 0;
      let last = st;
      const itl = [];
      let chunks = 0;
      let tokens = 0;
      for await (const part of res.body) {
        buf += decoder.decode(part, { stream: true });
        let at = buf.indexOf('\n\n');
        while (at >= 0) {
          const msg = buf.slice(6, at);
          buf = buf.slice(at + 2);
          at = buf.indexOf('\n\n');
          if (msg === '[DONE]') continue;
          const data = JSON.parse(msg);
          const t = performance.now();
          if (data.choices.length > 0) {
            if (chunks++ === 0) ttft = t - st;
            else itl.push(t - last);
            last = t;
          } else if (data.usage) tokens = data.usage.completion_tokens;
        }
      }
      return { ttft, itl, e2e: last - st, tokens };
    });
  } finally {
    await server.stop();
  }
}

const f = (x) => x.toFixed(2);
console.log(
  `model ${model}; prompt ${PROMPT} tokens, output ${OUTPUT} tokens (greedy), ${REQUESTS} requests`,
);
console.log('| concurrency | path | req/s | output tok/s | TTFT ms | ITL ms | E2E ms |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const conc of LEVELS) {
  const e = await engineAlone(conc);
  const h = await overHttp(conc);
  console.log(
    `| ${conc} | engine alone | ${f(e.reqPerS)} | ${f(e.tokPerS)} | ${f(e.ttftMs)} | ${f(e.itlMs)} | ${f(e.e2eMs)} |`,
  );
  console.log(
    `| ${conc} | HTTP (x serve) | ${f(h.reqPerS)} | ${f(h.tokPerS)} | ${f(h.ttftMs)} | ${f(h.itlMs)} | ${f(h.e2eMs)} |`,
  );
  const pct = (a, b) => `${(((b - a) / a) * 100).toFixed(1)}%`;
  console.log(
    `| ${conc} | overhead | ${pct(e.reqPerS, h.reqPerS)} | ${pct(e.tokPerS, h.tokPerS)} | +${f(h.ttftMs - e.ttftMs)} | +${f(h.itlMs - e.itlMs)} | +${f(h.e2eMs - e.e2eMs)} |`,
  );
}
