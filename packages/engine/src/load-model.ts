import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Device, type DeviceName, InvalidArgumentError, parseDevice } from '@x/core';
import type { Allocator } from '@x/cumem';
import {
  type GenerationDefaults,
  loadGenerationDefaults,
  loadModelConfig,
  type ModelConfig,
} from './config.js';
import type { WeightDType } from './convert.js';
import { ModelFileError } from './errors.js';
import type { LoadProgress } from './progress.js';
import { Tokenizer } from './tokenizer.js';
import type { TensorParallel } from './weight-specs.js';
import { loadWeights, type WeightStore } from './weights.js';

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** Weights are allocated here (tag `weights`). */
  allocator: Allocator;
  /** The device the model runs on; must be the allocator's. Default: the allocator's device. */
  device?: DeviceName | Device;
  /**
   * dtype of the weights on the device. Default on the CPU: the checkpoint's when the kernels take
   * it (f32, bf16), f16 checkpoints widened to f32 (exact). Default on CUDA: f16 for f16
   * checkpoints, else bf16 (the CUDA kernels compute in the weights' dtype: bf16 or f16).
   */
  dtype?: WeightDType;
  /** Load only this tensor-parallel rank's slices (default rank 0 of 1). */
  tp?: TensorParallel;
  /** Called after each tensor; default: a progress bar on stderr when stderr is a terminal. */
  onProgress?: (p: LoadProgress) => void;
}

/** A Hugging Face model directory loaded for x: config, sampling defaults, tokenizer, weights. */
export interface Model {
  /** Absolute path of the model directory. */
  readonly dir: string;
  readonly config: ModelConfig;
  /** Sampling defaults from generation_config.json ({} without one). */
  readonly generationDefaults: GenerationDefaults;
  readonly tokenizer: Tokenizer;
  readonly weights: WeightStore;
  /** Frees the weights (the runner using them must be disposed first). */
  dispose(): void;
}

/**
 * Loads config.json, generation_config.json, the tokenizer (checked against vocab_size) and the
 * safetensors weights of `dir` into `options.allocator`. The cheap checks (config, tokenizer) run
 * before any weight is read, so a wrong directory fails fast.
 */
export async function loadModel(dir: string, options: LoadModelOptions): Promise<Model> {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new InvalidArgumentError('dir', 'the path of a Hugging Face model directory', dir);
  }
  const allocator = options?.allocator;
  if (typeof allocator !== 'object' || allocator === null || !('alloc' in allocator)) {
    throw new InvalidArgumentError('options.allocator', 'an @x/cumem Allocator', allocator);
  }
  if (options.device !== undefined) {
    const device = parseDevice(options.device, 'options.device');
    if (device.name !== allocator.device.name) {
      throw new InvalidArgumentError(
        'options.device',
        `the allocator's device (${allocator.device.name})`,
        device.name,
      );
    }
  }
  const abs = resolve(dir);
  const config = await loadModelConfig(abs);
  const generationDefaults = await loadGenerationDefaults(abs);
  const tokenizer = await Tokenizer.load(abs, { vocabSize: config.vocabSize });
  const dtype = weightDType(options.dtype, config.dtype, allocator.device.kind);
  const weights = await loadWeights(abs, config, {
    allocator,
    dtype,
    ...(options.tp === undefined ? {} : { tp: options.tp }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
  return {
    dir: abs,
    config,
    generationDefaults,
    tokenizer,
    weights,
    dispose: () => weights.dispose(),
  };
}

/** The device dtype of the weights: `asked` checked against what the device's kernels take. */
export function weightDType(
  asked: WeightDType | undefined,
  checkpoint: ModelConfig['dtype'],
  device: 'cpu' | 'cuda',
): WeightDType {
  const allowed: readonly WeightDType[] = device === 'cuda' ? ['bf16', 'f16'] : ['f32', 'bf16'];
  if (asked === undefined) {
    if (device === 'cuda') return checkpoint === 'f16' ? 'f16' : 'bf16';
    return checkpoint === 'bf16' ? 'bf16' : 'f32';
  }
  if (!allowed.includes(asked)) {
    throw new InvalidArgumentError(
      'options.dtype',
      `${allowed.map((d) => `"${d}"`).join(' or ')} on ${device === 'cuda' ? 'CUDA' : 'the CPU'}`,
      asked,
    );
  }
  return asked;
}

/** Files a model directory needs, in the order a user should check them. */
const REQUIRED_FILES = ['config.json', 'tokenizer.json', 'model.safetensors'] as const;

/**
 * The directory of the built-in default model (`packages/engine/models/default`, shipped in the
 * package). It exists only once the model has been trained; see {@link resolveModelDir}.
 */
export function defaultModelDir(): string {
  // dist/index.js and src/load-model.ts both sit one level below the package root.
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', 'models', 'default');
}

/** The built-in default model is not in this installation (it has not been trained yet). */
export class DefaultModelMissingError extends ModelFileError {
  constructor(dir: string, missing: string) {
    super(
      dir,
      `the built-in default model is not present (${missing} is missing). Pass --model DIR ` +
        '(a Hugging Face model directory), or build the default model: see docs/default-model.md ' +
        '(bash packages/engine/scripts/default-model/extract_corpus.sh, then ' +
        'python3 packages/engine/scripts/default-model/train.py --out packages/engine/models/default)',
    );
  }
}

/**
 * The model directory to load: `dir` made absolute, or the built-in default model when `dir` is
 * undefined — a {@link DefaultModelMissingError} when that is not present.
 */
export function resolveModelDir(dir?: string): string {
  if (dir !== undefined) {
    if (typeof dir !== 'string' || dir.length === 0) {
      throw new InvalidArgumentError('model', 'the path of a Hugging Face model directory', dir);
    }
    return resolve(dir);
  }
  const root = defaultModelDir();
  for (const f of REQUIRED_FILES) {
    if (!existsSync(join(root, f))) throw new DefaultModelMissingError(root, f);
  }
  return root;
}
