import { InvalidArgumentError, parseDevice, Stream } from '@x/core';
import { Allocator } from '@x/cumem';
import {
  IncrementalDetokenizer,
  loadModel,
  type Model,
  ModelRunner,
  resolveModelDir,
} from '@x/engine';
import type { SamplingRow } from '@x/kernels';
import type { Command } from 'commander';

/** The flags of `x generate` as commander hands them over (strings until parsed). */
interface GenerateFlags {
  model?: string;
  device: string;
  dtype?: string;
  prompt?: string;
  promptIds?: string;
  chat?: boolean;
  maxTokens: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  minP?: string;
  seed?: string;
  ignoreEos?: boolean;
  json?: boolean;
}

/** What one run produced (the --json line). */
export interface GenerateResult {
  token_ids: number[];
  text: string;
  prompt_token_ids: number[];
  finish_reason: 'stop' | 'length';
  model: string;
  seed: number;
  prefill_ms: number;
  decode_ms: number;
  decode_tokens_per_s: number;
}

/** Prompt tokens run per prefill step (bounds the activations one step plans). */
const PREFILL_CHUNK = 512;
const BLOCK_SIZE = 16;

function number(flag: string, v: string | undefined, ok: (x: number) => boolean, want: string) {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || !ok(n)) {
    throw new InvalidArgumentError(`--${flag}`, want, v);
  }
  return n;
}

/** Token ids of the prompt: --prompt-ids as given, or --prompt encoded (chat template with --chat). */
async function promptIds(flags: GenerateFlags, model: Model): Promise<number[]> {
  if ((flags.prompt === undefined) === (flags.promptIds === undefined)) {
    throw new InvalidArgumentError(
      '--prompt / --prompt-ids',
      'exactly one of --prompt TEXT and --prompt-ids 1,2,3',
      flags.prompt === undefined ? 'neither' : 'both',
    );
  }
  const vocab = model.config.vocabSize;
  if (flags.promptIds !== undefined) {
    const parts = flags.promptIds.split(',').map((s) => s.trim());
    return parts.map((s, i) => {
      const id = Number(s);
      if (s === '' || !Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new InvalidArgumentError(`--prompt-ids[${i}]`, `a token id in [0, ${vocab})`, s);
      }
      return id;
    });
  }
  const text = flags.prompt!;
  const ids = flags.chat
    ? await model.tokenizer.encodeChat([{ role: 'user', content: text }])
    : await model.tokenizer.encode(text);
  if (ids.length === 0) {
    throw new InvalidArgumentError('--prompt', 'text that encodes to at least one token', text);
  }
  return ids;
}

/**
 * Generates up to --max-tokens tokens for one prompt: prefill in chunks, then one decode step per
 * token, each sampled on the runner's device and stream with @x/kernels' sample (seeded per
 * request: the same --seed gives the same tokens); on CUDA decode steps replay a CUDA graph. Stops at an EOS id unless --ignore-eos; like vLLM the EOS id is
 * kept in token_ids and special tokens are left out of the text.
 */
async function generate(
  flags: GenerateFlags,
  onText: (delta: string) => void,
): Promise<GenerateResult> {
  const maxTokens = number(
    'max-tokens',
    flags.maxTokens,
    (x) => Number.isInteger(x) && x >= 1,
    'an integer >= 1',
  )!;
  const device = parseDevice(flags.device, '--device');
  const dtypes = device.kind === 'cuda' ? ['bf16', 'f16'] : ['f32', 'bf16'];
  if (flags.dtype !== undefined && !dtypes.includes(flags.dtype)) {
    throw new InvalidArgumentError(
      '--dtype',
      `${dtypes.map((d) => `"${d}"`).join(' or ')} on ${device.kind === 'cuda' ? 'CUDA' : 'the CPU'}`,
      flags.dtype,
    );
  }
  const seedFlag = number('seed', flags.seed, Number.isSafeInteger, 'an integer');
  const dir = resolveModelDir(flags.model);
  const allocator = await Allocator.create({ device });
  let model: Model | undefined;
  let runner: ModelRunner | undefined;
  const stream = Stream.create(device);
  try {
    model = await loadModel(dir, {
      allocator,
      ...(flags.dtype === undefined ? {} : { dtype: flags.dtype as 'f32' | 'bf16' | 'f16' }),
    });
    const { config, tokenizer, generationDefaults: g } = model;
    // Command-line flags win over generation_config.json, whose values win over vLLM's defaults.
    const row: SamplingRow = {
      temperature:
        number('temperature', flags.temperature, (x) => x >= 0, 'a number >= 0') ??
        g.temperature ??
        1,
      topP:
        number('top-p', flags.topP, (x) => x > 0 && x <= 1, 'a number in (0, 1]') ?? g.topP ?? 1,
      topK:
        number('top-k', flags.topK, (x) => Number.isInteger(x) && x >= -1, 'an integer >= -1') ??
        g.topK ??
        0,
      minP:
        number('min-p', flags.minP, (x) => x >= 0 && x <= 1, 'a number in [0, 1]') ?? g.minP ?? 0,
      seed: seedFlag ?? Math.floor(Math.random() * 2 ** 32),
    };
    const prompt = await promptIds(flags, model);
    const total = prompt.length + maxTokens;
    if (total > config.maxPositionEmbeddings) {
      throw new InvalidArgumentError(
        '--max-tokens',
        `at most ${config.maxPositionEmbeddings - prompt.length} (max_position_embeddings ${config.maxPositionEmbeddings} minus ${prompt.length} prompt tokens)`,
        maxTokens,
      );
    }
    const numKvBlocks = Math.ceil(total / BLOCK_SIZE);
    runner = await ModelRunner.create({
      config,
      weights: model.weights,
      allocator,
      stream,
      numKvBlocks,
      blockSize: BLOCK_SIZE,
      maxModelLen: total,
      maxNumSeqs: 1,
    });
    const blockTable = Array.from({ length: numKvBlocks }, (_, i) => i);
    const stop = new Set(flags.ignoreEos ? [] : config.eosTokenIds);
    if (!flags.ignoreEos && tokenizer.eosTokenId !== null) stop.add(tokenizer.eosTokenId);
    const detok = new IncrementalDetokenizer(tokenizer, prompt);

    // Each step samples on the runner's device and stream: only the sampled id comes back.
    const out: number[] = [];
    // The text is what the detokenizer streamed: relative to the prompt, so a continuation keeps
    // its leading space (decoding the output ids alone would drop it), as `x serve` returns it.
    let text = '';
    const emit = (delta: string) => {
      text += delta;
      onText(delta);
    };
    const step = async (tokens: number[], contextLength: number, last: boolean) => {
      const r = await runner!.execute([{ tokens, blockTable, contextLength }], {
        sample: { rows: [last ? { ...row, step: out.length } : null] },
      });
      return r.sampled!.tokenIds[0]!;
    };
    const t0 = performance.now();
    let id = -1;
    for (let at = 0; at < prompt.length; at += PREFILL_CHUNK) {
      const end = Math.min(prompt.length, at + PREFILL_CHUNK);
      id = await step(prompt.slice(at, end), end, end === prompt.length);
    }
    const t1 = performance.now();
    let finish: GenerateResult['finish_reason'] = 'length';
    for (;;) {
      out.push(id);
      const delta = await detok.push([id]);
      if (delta) emit(delta);
      if (stop.has(id)) {
        finish = 'stop';
        break;
      }
      if (out.length === maxTokens) break;
      id = await step([id], prompt.length + out.length, true);
    }
    const tail = await detok.flush();
    if (tail) emit(tail);
    const t2 = performance.now();
    return {
      token_ids: out,
      text,
      prompt_token_ids: prompt,
      finish_reason: finish,
      model: dir,
      seed: Number(row.seed),
      prefill_ms: round(t1 - t0),
      decode_ms: round(t2 - t1),
      decode_tokens_per_s: round((out.length / (t2 - t1)) * 1e3),
    };
  } finally {
    await runner?.dispose();
    // A failed stream already failed the run above; its error is the one to report.
    await stream.synchronize().catch(() => undefined);
    model?.dispose();
    stream.dispose();
    await allocator.dispose();
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

/** Registers `x generate`: one prompt through the model on this machine, text or one JSON line. */
export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate text for one prompt (no --model: the built-in demo model)')
    .option('--model <dir>', 'Hugging Face model directory (default: the built-in model)')
    .option('--device <device>', 'device to run on: cpu or cuda[:N] (cpu)', 'cpu')
    .option(
      '--dtype <dtype>',
      'weights (and on CUDA activations): f32 or bf16 on the CPU, bf16 or f16 on CUDA (default: the checkpoint’s)',
    )
    .option('--prompt <text>', 'prompt text (encoded with the model’s tokenizer)')
    .option('--prompt-ids <ids>', 'prompt token ids, comma-separated')
    .option('--chat', 'wrap --prompt as a user message in the model’s chat template')
    .requiredOption('--max-tokens <n>', 'most tokens to generate')
    .option('--temperature <t>', '0 is greedy (default: generation_config.json, else 1)')
    .option('--top-p <p>', 'nucleus sampling mass in (0, 1]')
    .option('--top-k <k>', 'keep the k most likely tokens (0 or -1: off)')
    .option('--min-p <p>', 'drop tokens below p × the most likely one')
    .option('--seed <s>', 'seed of this request (same seed, same tokens)')
    .option('--ignore-eos', 'keep generating past end-of-sequence tokens')
    .option('--json', 'print one JSON line {"token_ids", "text", ...}')
    .action(async (flags: GenerateFlags) => {
      const stream = !flags.json;
      const result = await generate(flags, (delta) => {
        if (stream) process.stdout.write(delta);
      });
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
      } else {
        process.stdout.write('\n');
        process.stderr.write(
          `[${result.token_ids.length} tokens, ${result.finish_reason}; prefill ${result.prefill_ms} ms, ` +
            `decode ${result.decode_tokens_per_s} tok/s]\n`,
        );
      }
    });
}
