import { InvalidArgumentError, memoryInfo, OutOfMemoryError, parseDevice } from '@x/core';
import { Allocator } from '@x/cumem';
import type { SchedulingPolicy } from '@x/scheduler';
import type { ModelConfig } from '../config.js';
import type { WeightDType } from '../convert.js';
import { loadModel, type Model, resolveModelDir } from '../load-model.js';
import { EngineCore, type EngineCoreOptions } from './engine-core.js';
import { InProcessExecutor } from './in-process-executor.js';
import { TextDecoder } from './text-decoder.js';
import type { EngineInfo } from './types.js';

/** Everything `x serve` passes to the engine (vLLM's engine arguments, camelCase). */
export interface EngineConfig {
  /** Hugging Face model directory; default: the built-in model. */
  model?: string;
  /** "cpu" (default) or "cuda:N". */
  device?: string;
  /** Weights on the device: auto (the checkpoint's f32/bf16; f16 → f32), f32 or bf16. */
  dtype?: 'auto' | WeightDType;
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  blockSize?: number;
  /** Fraction of device memory the engine may use (weights + activations + KV). Default 0.9. */
  gpuMemoryUtilization?: number;
  /** Exact KV cache size in blocks (overrides the memory budget; tests, vLLM's flag). */
  numGpuBlocksOverride?: number;
  enablePrefixCaching?: boolean;
  policy?: SchedulingPolicy;
  seed?: number;
  /** Discarded memory reads as NaN bytes after wake (debug; X_CUMEM_POISON=1). */
  poison?: boolean;
  drainTimeoutMs?: number;
  /** Run each decode one step ahead (see EngineCoreOptions.asyncScheduling). Default true. */
  asyncScheduling?: boolean;
  /**
   * Enqueue each step before the previous one's sampled ids reach the host, feeding them back on
   * the device (WorkerOptions.pipeline). Default true.
   */
  pipeline?: boolean;
}

/** On the CPU the KV cache is capped like vLLM's VLLM_CPU_KVCACHE_SPACE default (bytes). */
const CPU_KV_CAP_BYTES = 4 * 1024 ** 3;

/** A loaded model, its executor and an engine core that is not started yet. */
export interface Engine {
  core: EngineCore;
  model: Model;
  allocator: Allocator;
  info: EngineInfo;
  /** Shuts the core down and frees the weights and the allocator. */
  dispose(): Promise<void>;
}

function positive(name: string, v: number | undefined, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < 1) throw new InvalidArgumentError(name, 'an integer >= 1', x);
  return x;
}

/** KV bytes of one block: K and V, every layer; elements f32 (CPU) or the weights' half type (CUDA). */
export function kvBytesPerBlock(c: ModelConfig, blockSize: number, elementBytes = 4): number {
  return c.numLayers * 2 * blockSize * c.numKvHeads * c.headDim * elementBytes;
}

/** Peak activation bytes of one step (the largest workspace bucket), a planning estimate. */
function activationBytes(c: ModelConfig, tokens: number, seqs: number): number {
  const perToken =
    4 * c.hiddenSize +
    c.numHeads * c.headDim * 2 +
    2 * c.numKvHeads * c.headDim +
    3 * c.intermediateSize;
  return 2 * tokens * perToken * 4 + 2 * seqs * c.vocabSize * 4;
}

/**
 * Loads the model, sizes the KV cache from the memory budget (vLLM's gpu-memory-utilization:
 * budget − weights − activations, capped on the CPU), builds the executor and the engine core,
 * and runs one warm-up step so a device or kernel problem fails startup, not the first request.
 */
export async function createEngine(
  config: EngineConfig,
  hooks: Pick<EngineCoreOptions, 'onOutputs' | 'onFatal'>,
): Promise<Engine> {
  const device = parseDevice(config.device ?? 'cpu', 'device');
  const util = config.gpuMemoryUtilization ?? 0.9;
  if (typeof util !== 'number' || !(util > 0 && util <= 1)) {
    throw new InvalidArgumentError('gpuMemoryUtilization', 'a number in (0, 1]', util);
  }
  const blockSize = positive('blockSize', config.blockSize, 16);
  const dir = resolveModelDir(config.model);
  const allocator = await Allocator.create({
    device: device.name,
    ...(config.poison === undefined ? {} : { poison: config.poison }),
  });
  let model: Model | undefined;
  try {
    model = await loadModel(dir, {
      allocator,
      ...(config.dtype === undefined || config.dtype === 'auto' ? {} : { dtype: config.dtype }),
      onProgress: () => undefined,
    });
    const c = model.config;
    const maxModelLen = positive(
      'maxModelLen',
      config.maxModelLen,
      Math.min(c.maxPositionEmbeddings, 4096),
    );
    if (maxModelLen > c.maxPositionEmbeddings) {
      throw new InvalidArgumentError(
        'maxModelLen',
        `at most the model's max_position_embeddings (${c.maxPositionEmbeddings})`,
        maxModelLen,
      );
    }
    const maxNumSeqs = positive('maxNumSeqs', config.maxNumSeqs, 256);
    const maxNumBatchedTokens = positive('maxNumBatchedTokens', config.maxNumBatchedTokens, 2048);
    const perBlock = kvBytesPerBlock(c, blockSize, device.kind === 'cuda' ? 2 : 4);
    const blocksPerSeq = Math.ceil(maxModelLen / blockSize);
    const budgetBytes = Math.floor(util * memoryInfo(device.name).totalBytes);
    let numKvBlocks: number;
    if (config.numGpuBlocksOverride !== undefined) {
      numKvBlocks = positive('numGpuBlocksOverride', config.numGpuBlocksOverride, 1);
    } else {
      const free =
        budgetBytes - model.weights.bytes - activationBytes(c, maxNumBatchedTokens, maxNumSeqs);
      let kvBytes = Math.min(free, maxNumSeqs * blocksPerSeq * perBlock);
      if (device.kind === 'cpu') kvBytes = Math.min(kvBytes, CPU_KV_CAP_BYTES);
      numKvBlocks = Math.floor(kvBytes / perBlock);
    }
    if (numKvBlocks < blocksPerSeq) {
      throw new OutOfMemoryError(
        `the KV cache (${numKvBlocks} blocks of ${blockSize} tokens) cannot hold one sequence of ` +
          `max_model_len ${maxModelLen} (${blocksPerSeq} blocks); lower --max-model-len or raise ` +
          '--gpu-memory-utilization',
        blocksPerSeq * perBlock,
        'kv_cache',
      );
    }
    const executor = await InProcessExecutor.create({
      config: c,
      weights: model.weights,
      allocator,
      numKvBlocks,
      blockSize,
      maxModelLen,
      budgetBytes,
      ...(config.pipeline === undefined ? {} : { pipeline: config.pipeline }),
    });
    await warmUp(executor);
    const decoder = TextDecoder.load(dir, model.tokenizer);
    const core = new EngineCore({
      executor,
      decoder,
      modelDir: dir,
      maxModelLen,
      vocabSize: c.vocabSize,
      eosTokenIds: c.eosTokenIds,
      maxNumSeqs,
      maxNumBatchedTokens,
      enablePrefixCaching: config.enablePrefixCaching ?? true,
      ...(config.policy === undefined ? {} : { policy: config.policy }),
      ...(config.seed === undefined ? {} : { seed: config.seed }),
      ...(config.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: config.drainTimeoutMs }),
      ...(config.asyncScheduling === undefined ? {} : { asyncScheduling: config.asyncScheduling }),
      ...hooks,
    });
    const mem = executor.memory();
    const info: EngineInfo = {
      modelDir: dir,
      device: device.name,
      dtype: model.weights.dtype,
      architecture: c.architecture,
      maxModelLen,
      blockSize,
      numKvBlocks,
      budgetBytes,
      weightsBytes: mem.weightsBytes,
      kvCacheBytes: mem.kvCacheBytes,
      vocabSize: c.vocabSize,
      eosTokenIds: [...c.eosTokenIds],
    };
    const loaded = model;
    return {
      core,
      model: loaded,
      allocator,
      info,
      async dispose() {
        await core.shutdown();
        loaded.dispose();
        await allocator.dispose();
      },
    };
  } catch (err) {
    model?.dispose();
    await allocator.dispose();
    throw err;
  }
}

/** One 1-token step on block 0 through the real executor path (no request state is kept). */
async function warmUp(executor: InProcessExecutor): Promise<void> {
  const data = {
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 0,
    seed: '0',
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    logitBias: null,
    promptLogprobs: null,
  };
  await executor.execute({
    stepId: -1,
    totalNumScheduledTokens: 1,
    finishedRequestIds: [],
    cachedRequests: [],
    newRequests: [
      {
        requestId: '__warmup__',
        parentRequestId: '__warmup__',
        index: 0,
        promptTokenIds: [0],
        outputTokenIds: [],
        blockIds: [0],
        numComputedTokens: 0,
        numScheduledTokens: 1,
        sample: true,
        maskStopTokens: false,
        eosTokenIds: [],
        stopTokenIds: [],
        logprobs: null,
        data,
      },
    ],
  });
  await executor.execute({
    stepId: -2,
    totalNumScheduledTokens: 0,
    finishedRequestIds: ['__warmup__'],
    cachedRequests: [],
    newRequests: [],
  });
}
