// `x serve` on a CUDA GPU, end to end over HTTP (Node alone, on the GPU machine, with the CLI
// bundled by packages/engine/test/gpu/bundle.mjs):
//   source .device/activate.sh && node packages/server/test/gpu/serve.gpu.mjs
// Starts `x serve --device auto` on a fixture model (auto must pick cuda:0 on a GPU host), and
// checks with plain fetch: greedy completions equal `x generate --device cuda` on the same prompt
// (itself checked against transformers by generate.gpu.sh), the SSE stream (usage chunk, [DONE],
// the same text as non-streaming), 8 concurrent requests answer like one, sleep level 1 → 503 → wake → same text,
// sleep level 2 → reload_weights → same text, /metrics, and SIGTERM exits 0.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

const CLI = 'packages/engine/dist-gpu/cli.mjs';
const MODEL = 'packages/engine/fixtures/llama-v4';
const expected = JSON.parse(readFileSync(`${MODEL}/expected.json`, 'utf8'));
const promptIds = expected.prompt_ids;
// X_SERVE_DEVICE=cpu runs the same checks on the CPU (f32), e.g. to try the script without a GPU.
const onCpu = process.env.X_SERVE_DEVICE === 'cpu';
const genArgs = onCpu
  ? ['--device', 'cpu', '--dtype', 'f32']
  : ['--device', 'cuda', '--dtype', 'f16'];
const serveArgs = onCpu
  ? ['--device', 'cpu', '--dtype', 'float32']
  : ['--device', 'auto', '--dtype', 'float16'];

let server;
let base;
let log = '';

async function post(path, body) {
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: () => JSON.parse(text) };
}

const greedy = { model: 'm', prompt: promptIds, max_tokens: 16, temperature: 0, ignore_eos: true };
const completionText = async () => {
  const r = await post('/v1/completions', greedy);
  assert.equal(r.status, 200, r.text);
  return r.json().choices[0].text;
};
// The server's text keeps the first token's leading space (decoded after the prompt, as vLLM's
// detokenizer does); `x generate --json` decodes the output ids alone. The ids are what must agree.
const sameText = (a, b) => assert.equal(a.trimStart(), b.trimStart());

describe('x serve on CUDA', () => {
  let reference;
  before(async () => {
    const gen = execFileSync(
      'node',
      [
        CLI,
        'generate',
        '--model',
        MODEL,
        ...genArgs,
        '--prompt-ids',
        promptIds.join(','),
        '--max-tokens',
        '16',
        '--temperature',
        '0',
        '--ignore-eos',
        '--json',
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    reference = JSON.parse(gen);
    server = spawn(
      'node',
      [
        CLI,
        'serve',
        '--model',
        MODEL,
        '--served-model-name',
        'm',
        ...serveArgs,
        '--port',
        '0',
        '--enable-sleep-mode',
        '--max-model-len',
        '512',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    base = await new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`x serve did not start in 120 s:\n${log}`)),
        120_000,
      );
      // The startup log goes to stderr; either stream may carry the address line.
      const onData = (d) => {
        log += d;
        const m = /listening on (http:\/\/[^ ]+)/.exec(log);
        if (m) {
          clearTimeout(t);
          resolve(m[1]);
        }
      };
      server.stdout.on('data', onData);
      server.stderr.on('data', onData);
      server.on('exit', (code, sig) => {
        clearTimeout(t);
        reject(new Error(`x serve exited (${code ?? sig}) before listening:\n${log}`));
      });
    });
    console.log(log.trim());
  });
  after(() => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  });

  it(onCpu ? 'serves on the CPU' : '--device auto serves on cuda:0', () => {
    assert.match(log, onCpu ? / on cpu\b/ : / on cuda:0\b/);
  });

  it('greedy completion equals x generate --device cuda on the same prompt', async () => {
    sameText(await completionText(), reference.text);
  });

  it('streams with a usage chunk and [DONE], the same text as non-streaming', async () => {
    const r = await post('/v1/completions', {
      ...greedy,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(r.status, 200);
    const events = r.text
      .split('\n\n')
      .filter((e) => e.startsWith('data: '))
      .map((e) => e.slice(6));
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 12);
    const streamed = chunks
      .slice(0, -1)
      .map((c) => c.choices[0]?.text ?? '')
      .join('');
    const whole = await post('/v1/completions', { ...greedy, max_tokens: 12 });
    assert.equal(streamed, whole.json().choices[0].text);
  });

  it('8 concurrent requests each answer like one alone', async () => {
    const texts = await Promise.all(Array.from({ length: 8 }, () => completionText()));
    for (const t of texts) sameText(t, reference.text);
  });

  it('sleep level 1: 503 while asleep, the same text after wake', async () => {
    assert.equal((await post('/sleep?level=1')).status, 200);
    const asleep = await fetch(`${base}/is_sleeping`).then((r) => r.json());
    assert.equal(asleep.is_sleeping, true);
    const refused = await post('/v1/completions', greedy);
    assert.equal(refused.status, 503);
    assert.ok(refused.headers.get('retry-after'));
    assert.equal((await post('/wake_up')).status, 200);
    sameText(await completionText(), reference.text);
  });

  it('sleep level 2 + reload_weights: the same text', async () => {
    assert.equal((await post('/sleep?level=2')).status, 200);
    assert.equal((await post('/wake_up')).status, 200);
    assert.equal((await post('/v1/completions', greedy)).status, 503);
    const reload = await post('/reload_weights');
    assert.equal(reload.status, 200, reload.text);
    sameText(await completionText(), reference.text);
  });

  it('/metrics reports requests and KV usage', async () => {
    const m = await fetch(`${base}/metrics`).then((r) => r.text());
    assert.match(m, /x:request_success_total/);
    assert.match(m, /x:kv_cache_usage_perc/);
  });

  it('SIGTERM exits 0', async () => {
    const code = await new Promise((resolve) => {
      server.on('exit', (c, s) => resolve(c ?? s));
      server.kill('SIGTERM');
    });
    assert.equal(code, 0, log);
  });
});
