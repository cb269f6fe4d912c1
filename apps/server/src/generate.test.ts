// `x generate` run as a subprocess of the built CLI over the transformers fixtures of @x/engine
// (packages/engine/fixtures/*: tiny random checkpoints and the greedy continuation transformers
// computed for them, recorded by packages/engine/scripts/make_fixtures.py).
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const engine = fileURLToPath(new URL('../../../packages/engine/', import.meta.url));
const fixtures = join(engine, 'fixtures');
const MODELS = [
  'llama-v4',
  'llama-v5',
  'mistral-v4',
  'mistral-v5',
  'qwen2-v4',
  'qwen2-v5',
  'qwen3-v4',
  'qwen3-v5',
];
/** The prompt make_fixtures.py encoded into prompt_ids. */
const PROMPT = 'The quick brown fox jumps over the lazy dog. Once upon a time, in a small village,';

interface Expected {
  prompt_ids: number[];
  greedy_ids: number[];
}

function expected(name: string): Expected {
  return JSON.parse(readFileSync(join(fixtures, name, 'expected.json'), 'utf8'));
}

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, 'generate', ...args], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runJson(args: string[]) {
  const r = run([...args, '--json']);
  expect(r.status, r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!);
}

describe('x generate: greedy equals transformers', () => {
  it.each(MODELS)('%s: --prompt-ids, 32 greedy tokens', (name) => {
    const e = expected(name);
    const out = runJson([
      '--model',
      join(fixtures, name),
      '--prompt-ids',
      e.prompt_ids.join(','),
      '--max-tokens',
      String(e.greedy_ids.length),
      '--temperature',
      '0',
      '--ignore-eos',
    ]);
    expect(out.token_ids).toEqual(e.greedy_ids);
    expect(out.prompt_token_ids).toEqual(e.prompt_ids);
    expect(out.finish_reason).toBe('length');
    expect(typeof out.text).toBe('string');
  });

  it('--prompt encodes with the tokenizer (BOS added) and gives the same continuation', () => {
    const e = expected('qwen3-v5');
    const out = runJson([
      '--model',
      join(fixtures, 'qwen3-v5'),
      '--prompt',
      PROMPT,
      '--max-tokens',
      '32',
      '--temperature',
      '0',
      '--ignore-eos',
    ]);
    expect(out.prompt_token_ids).toEqual(e.prompt_ids);
    expect(out.token_ids).toEqual(e.greedy_ids);
    expect(out.text.length).toBeGreaterThan(0);
  });
});

describe('x generate: sampling, stopping and text', () => {
  const model = join(fixtures, 'llama-v5');
  const base = ['--model', model, '--prompt', 'Once upon a time', '--max-tokens', '24'];

  it('is reproducible for a seed and differs across seeds', () => {
    const a = runJson([...base, '--seed', '7', '--temperature', '1', '--top-p', '0.95']);
    const b = runJson([...base, '--seed', '7', '--temperature', '1', '--top-p', '0.95']);
    const c = runJson([...base, '--seed', '8', '--temperature', '1', '--top-p', '0.95']);
    expect(a.token_ids).toHaveLength(24);
    expect(b.token_ids).toEqual(a.token_ids);
    expect(c.token_ids).not.toEqual(a.token_ids);
    expect(a.seed).toBe(7);
    // Sampling is not greedy: at temperature 1 over a random model the draws differ from argmax.
    const greedy = runJson([...base, '--temperature', '0']);
    expect(a.token_ids).not.toEqual(greedy.token_ids);
  });

  it('--top-k 1 is greedy whatever the temperature', () => {
    const greedy = runJson([...base, '--temperature', '0']);
    const k1 = runJson([...base, '--temperature', '1.5', '--top-k', '1', '--seed', '1']);
    expect(k1.token_ids).toEqual(greedy.token_ids);
  });

  it('stops at an EOS id of generation_config.json (kept in token_ids), unless --ignore-eos', () => {
    const e = expected('llama-v5');
    const dir = join(mkdtempSync(join(tmpdir(), 'x-generate-')), 'model');
    cpSync(join(fixtures, 'llama-v5'), dir, { recursive: true, dereference: true });
    // Make the 5th greedy token an end-of-sequence id of this copy.
    const eos = e.greedy_ids[4]!;
    const gen = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8'));
    writeFileSync(
      join(dir, 'generation_config.json'),
      JSON.stringify({ ...gen, eos_token_id: [2, eos] }),
    );
    const args = ['--model', dir, '--prompt-ids', e.prompt_ids.join(','), '--max-tokens', '32'];
    const stopped = runJson([...args, '--temperature', '0']);
    expect(stopped.finish_reason).toBe('stop');
    expect(stopped.token_ids).toEqual(e.greedy_ids.slice(0, e.greedy_ids.indexOf(eos) + 1));
    const ignored = runJson([...args, '--temperature', '0', '--ignore-eos']);
    expect(ignored.token_ids).toEqual(e.greedy_ids);
  });

  it('draws a progress bar while loading weights on a terminal, and none otherwise', () => {
    const args = ['--model', model, '--prompt-ids', '1,2', '--max-tokens', '1'];
    // util-linux `script` runs the CLI on a pseudo-terminal (stderr is a TTY there).
    const cmd = [process.execPath, cli, 'generate', ...args].map((a) => `'${a}'`).join(' ');
    const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(tty.status, tty.stdout).toBe(0);
    expect(tty.stdout).toMatch(/\rLoading weights \[#+\] 100% [\d.]+ KB\/[\d.]+ KB 20\/20 tensors/);
    const piped = run(args);
    expect(piped.status, piped.stderr).toBe(0);
    expect(piped.stderr).not.toContain('Loading weights');
  });

  it('gives the streamed text in --json: a continuation keeps its leading space', () => {
    // Qwen2's byte-level BPE: this continuation starts with " Dog"; decoding the output ids alone
    // (without the prompt) would drop the space that x serve and the stream keep.
    const args = ['--model', join(fixtures, 'qwen2-v5'), '--prompt', 'Once upon a time'];
    const opts = [...args, '--max-tokens', '6', '--temperature', '0'];
    const json = runJson(opts);
    const streamed = run(opts);
    expect(streamed.status, streamed.stderr).toBe(0);
    expect(json.text.startsWith(' ')).toBe(true);
    expect(streamed.stdout).toBe(`${json.text}\n`);
  });

  it('streams the text to stdout without --json', () => {
    const json = runJson([...base, '--temperature', '0']);
    const r = run([...base, '--temperature', '0']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${json.text}\n`);
    expect(r.stderr).toMatch(/\[24 tokens, length; prefill [\d.]+ ms, decode [\d.]+ tok\/s\]/);
  });
});

describe('x generate: errors a user can act on', () => {
  const model = join(fixtures, 'llama-v5');

  it.each([
    [['--prompt', 'a', '--prompt-ids', '1'], /exactly one of --prompt TEXT and --prompt-ids.*both/],
    [[], /exactly one of --prompt TEXT and --prompt-ids.*neither/],
    [
      ['--prompt-ids', '1,x'],
      /Expected a token id in \[0, 32000\) for --prompt-ids\[1\] but received "x"/,
    ],
    [['--prompt-ids', '1,32000'], /for --prompt-ids\[1\]/],
    [['--prompt', 'a', '--temperature', '-1'], /Expected a number >= 0 for --temperature/],
    [['--prompt', 'a', '--top-p', '0'], /Expected a number in \(0, 1\] for --top-p/],
    [['--prompt', 'a', '--device', 'tpu'], /Expected "cpu" or "cuda:N" for --device/],
    [
      ['--prompt', 'a', '--max-tokens', '5000'],
      /Expected at most 2046 \(max_position_embeddings 2048 minus 2 prompt tokens\) for --max-tokens/,
    ],
  ])('%j', (args, message) => {
    const withMax = args.includes('--max-tokens') ? args : [...args, '--max-tokens', '4'];
    const r = run(['--model', model, ...withMax]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
  });

  it('needs --max-tokens', () => {
    const r = run(['--model', model, '--prompt', 'a']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("required option '--max-tokens <n>' not specified");
  });

  it('refuses a dtype the device cannot compute in, naming the choices', () => {
    const r = run(['--model', model, '--prompt', 'a', '--max-tokens', '1', '--dtype', 'f16']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--dtype');
    expect(r.stderr).toContain('"f32" or "bf16" on the CPU');
  });

  it('names a missing model directory', () => {
    const r = run(['--model', '/nonexistent/model', '--prompt', 'a', '--max-tokens', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('/nonexistent/model/config.json: file not found');
  });

  it('without --model uses the built-in model, or says it is missing and how to build it', () => {
    const dir = join(engine, 'models', 'default');
    const r = run(['--prompt', 'And God said', '--max-tokens', '16', '--seed', '1', '--json']);
    if (existsSync(join(dir, 'model.safetensors'))) {
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.model).toBe(dir);
      expect(out.token_ids.length).toBeGreaterThan(0);
      // The demo model writes English words (KJV vocabulary), not byte soup.
      expect(out.text).toMatch(/[a-z]+ [a-z]+/i);
      // train.py recorded transformers' fp32 greedy continuation of its check prompt.
      const { reference } = JSON.parse(readFileSync(join(dir, 'training.json'), 'utf8'));
      const greedy = runJson([
        '--prompt',
        reference.prompt,
        '--max-tokens',
        String(reference.greedy_ids.length),
        '--temperature',
        '0',
        '--ignore-eos',
      ]);
      expect(greedy.prompt_token_ids).toEqual(reference.prompt_ids);
      expect(greedy.token_ids).toEqual(reference.greedy_ids);
    } else {
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('the built-in default model is not present');
      expect(r.stderr).toContain('Pass --model DIR');
      expect(r.stderr).toContain('docs/default-model.md');
    }
  });
});
