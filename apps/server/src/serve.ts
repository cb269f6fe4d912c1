import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { devices, InvalidArgumentError } from '@x/core';
import {
  ChatTemplate,
  EngineClient,
  type EngineConfig,
  formatBytes,
  loadGenerationDefaults,
  resolveModelDir,
  Tokenizer,
} from '@x/engine';
import { createServer } from '@x/server';
import type { Command } from 'commander';

/** `x serve` flags as commander hands them over (vLLM's names, strings until parsed). */
interface ServeFlags {
  model?: string;
  host: string;
  port: string;
  device: string;
  dtype: string;
  maxModelLen?: string;
  maxNumSeqs?: string;
  maxNumBatchedTokens?: string;
  blockSize: string;
  gpuMemoryUtilization: string;
  numGpuBlocksOverride?: string;
  enablePrefixCaching: boolean;
  enableSleepMode?: boolean;
  apiKey?: string;
  servedModelName?: string;
  seed?: string;
  chatTemplate?: string;
  schedulingPolicy: string;
  maxQueueLen: string;
}

function int(flag: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) {
    throw new InvalidArgumentError(`--${flag}`, `an integer >= ${min}`, v);
  }
  return n;
}

/** --device auto: the first CUDA GPU when there is one (as vLLM does), else the CPU. */
function autoDevice(): string {
  return devices().some((d) => d.kind === 'cuda') ? 'cuda:0' : 'cpu';
}

function dtypeOf(v: string): EngineConfig['dtype'] {
  const map: Record<string, EngineConfig['dtype']> = {
    auto: 'auto',
    float32: 'f32',
    float: 'f32',
    f32: 'f32',
    bfloat16: 'bf16',
    bf16: 'bf16',
    float16: 'f16',
    half: 'f16',
    f16: 'f16',
  };
  const d = map[v];
  if (d === undefined) {
    throw new InvalidArgumentError(
      '--dtype',
      'auto, float32, bfloat16 or float16 (vLLM names; bf16/f16/f32 too)',
      v,
    );
  }
  return d;
}

/** Engine arguments from the flags. */
export function engineConfig(flags: ServeFlags): EngineConfig {
  const util = Number(flags.gpuMemoryUtilization);
  if (!(util > 0 && util <= 1)) {
    throw new InvalidArgumentError(
      '--gpu-memory-utilization',
      'a number in (0, 1]',
      flags.gpuMemoryUtilization,
    );
  }
  const policy = flags.schedulingPolicy;
  if (policy !== 'fcfs' && policy !== 'priority') {
    throw new InvalidArgumentError('--scheduling-policy', 'fcfs or priority', policy);
  }
  const opt = <K extends keyof EngineConfig>(k: K, v: EngineConfig[K] | undefined) =>
    v === undefined ? {} : { [k]: v };
  return {
    ...opt('model', flags.model),
    device: flags.device === 'auto' ? autoDevice() : flags.device,
    dtype: dtypeOf(flags.dtype),
    ...opt('maxModelLen', int('max-model-len', flags.maxModelLen, 1)),
    ...opt('maxNumSeqs', int('max-num-seqs', flags.maxNumSeqs, 1)),
    ...opt('maxNumBatchedTokens', int('max-num-batched-tokens', flags.maxNumBatchedTokens, 1)),
    blockSize: int('block-size', flags.blockSize, 1)!,
    gpuMemoryUtilization: util,
    ...opt('numGpuBlocksOverride', int('num-gpu-blocks-override', flags.numGpuBlocksOverride, 1)),
    enablePrefixCaching: flags.enablePrefixCaching,
    policy,
    ...opt('seed', int('seed', flags.seed, Number.MIN_SAFE_INTEGER)),
  };
}

/** --chat-template: a file, or the template itself (vLLM accepts both). */
function chatTemplate(value: string | undefined, tokenizer: Tokenizer): ChatTemplate | undefined {
  if (value === undefined) return undefined;
  const source = existsSync(value) ? readFileSync(value, 'utf8') : value;
  const special: Record<string, string> = {};
  if (tokenizer.bosToken !== null) special.bos_token = tokenizer.bosToken;
  if (tokenizer.eosToken !== null) special.eos_token = tokenizer.eosToken;
  try {
    return new ChatTemplate(source, special);
  } catch (err) {
    throw new InvalidArgumentError(
      '--chat-template',
      'a Jinja chat template (file or text)',
      (err as Error).message,
    );
  }
}

const log = (line: string) => process.stderr.write(`x serve: ${line}\n`);

/** Starts the engine thread and the HTTP server; resolves once listening. */
export async function serve(flags: ServeFlags): Promise<{ close: () => Promise<void> }> {
  const config = engineConfig(flags);
  const port = int('port', flags.port, 0)!;
  const maxQueueLen = int('max-queue-len', flags.maxQueueLen, 1)!;
  const modelDir = resolveModelDir(config.model);
  const started = Date.now();
  const engine = await EngineClient.start({ config });
  const i = engine.info;
  log(
    `model ${i.modelDir} (${i.architecture}, ${i.dtype}) on ${i.device}, loaded in ${Date.now() - started} ms`,
  );
  const kvTokens = i.numKvBlocks * i.blockSize;
  log(
    `memory budget ${formatBytes(i.budgetBytes)} (gpu-memory-utilization ${config.gpuMemoryUtilization}); ` +
      `weights ${formatBytes(i.weightsBytes)}; KV cache ${i.numKvBlocks} blocks × ${i.blockSize} tokens ` +
      `= ${kvTokens} tokens (${formatBytes(i.kvCacheBytes)}); max_model_len ${i.maxModelLen}`,
  );
  let app: ReturnType<typeof createServer> | undefined;
  try {
    const tokenizer = await Tokenizer.load(modelDir, { vocabSize: i.vocabSize });
    const template = chatTemplate(flags.chatTemplate, tokenizer);
    app = createServer({
      engine,
      tokenizer,
      servedModelName: flags.servedModelName ?? flags.model ?? basename(modelDir),
      generationDefaults: await loadGenerationDefaults(modelDir),
      ...(template === undefined ? {} : { chatTemplate: template }),
      ...(flags.apiKey === undefined ? {} : { apiKey: flags.apiKey }),
      enableSleepMode: flags.enableSleepMode === true,
      maxQueueLen,
    });
    const address = await app.listen({ host: flags.host, port });
    engine.onDeath((err) => log(`the engine died: ${err.message}; /health answers 503`));
    log(
      `listening on ${address} (OpenAI API at ${address}/v1${flags.enableSleepMode ? '; sleep mode on' : ''})`,
    );
  } catch (err) {
    await app?.close().catch(() => undefined);
    await engine.shutdown();
    throw err;
  }
  const server = app;
  return {
    async close() {
      // Aborting the engine first ends every stream, so closing HTTP does not wait on them.
      await engine.shutdown();
      await server.close();
    },
  };
}

/** Registers `x serve`: the OpenAI-compatible server with vLLM's flag names. */
export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (vLLM flag names)')
    .argument('[model]', 'Hugging Face model directory (same as --model)')
    .option('--model <dir>', 'Hugging Face model directory (default: the built-in model)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0 picks a free one)', '8000')
    .option(
      '--device <device>',
      'auto (cuda:0 when there is a GPU, else cpu), cpu or cuda:N',
      'auto',
    )
    .option('--dtype <dtype>', 'weights: auto, float32, bfloat16 or float16', 'auto')
    .option('--max-model-len <n>', 'longest sequence, prompt + output (default: min(model, 4096))')
    .option('--max-num-seqs <n>', 'most sequences per step (default 256)')
    .option('--max-num-batched-tokens <n>', 'token budget per step (default 2048)')
    .option('--block-size <n>', 'tokens per KV block', '16')
    .option('--gpu-memory-utilization <f>', 'fraction of device memory to use', '0.9')
    .option('--num-gpu-blocks-override <n>', 'KV cache size in blocks (ignores the memory budget)')
    .option('--enable-prefix-caching', 'reuse KV blocks of shared prefixes (default)')
    .option('--no-enable-prefix-caching', 'turn automatic prefix caching off')
    .option(
      '--enable-sleep-mode',
      'enable /sleep, /wake_up, /pause, /resume, /reset_prefix_cache, /reload_weights',
    )
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1 and admin endpoints')
    .option('--served-model-name <name>', 'model name in the API (default: --model)')
    .option('--seed <n>', 'seed for requests that bring none (reproducible across restarts)')
    .option('--chat-template <file|template>', 'chat template to use instead of the tokenizer’s')
    .option('--scheduling-policy <policy>', 'fcfs or priority', 'fcfs')
    .option('--max-queue-len <n>', 'most requests in the server at once; more get 503', '1024')
    .action(async (model: string | undefined, flags: ServeFlags) => {
      if (model !== undefined && flags.model !== undefined && model !== flags.model) {
        throw new InvalidArgumentError(
          'model',
          'one model (positional or --model)',
          `${model} and ${flags.model}`,
        );
      }
      const apiKey = flags.apiKey ?? process.env.X_API_KEY;
      const running = await serve({
        ...flags,
        ...(model === undefined ? {} : { model }),
        ...(apiKey === undefined ? {} : { apiKey }),
      });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          log(`${signal} again: exiting now`);
          process.exit(1);
        }
        stopping = true;
        log(`${signal}: shutting down`);
        const force = setTimeout(() => {
          log('shutdown timed out; exiting');
          process.exit(1);
        }, 30_000);
        force.unref();
        running.close().then(
          () => process.exit(0),
          (err) => {
            log(`shutdown failed: ${(err as Error).message}`);
            process.exit(1);
          },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}
