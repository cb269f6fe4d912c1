/**
 * @x/engine — the model layer of x: Hugging Face config, safetensors weights (TP-sharded),
 * tokenizer with an incremental detokenizer and chat templates, Llama/Mistral/Qwen2/Qwen3 decoders
 * on a paged KV cache, and the ModelRunner that executes one batch step. See README.md.
 */

export { type ChatMessage, ChatTemplate, type ChatTemplateOptions } from './chat-template.js';
export {
  type Architecture,
  type GenerationDefaults,
  type Llama3RopeScaling,
  loadGenerationDefaults,
  loadModelConfig,
  type ModelConfig,
  parseModelConfig,
  SUPPORTED_ARCHITECTURES,
} from './config.js';
export { convertElements, type WeightDType } from './convert.js';
export { type DetokenizerOptions, IncrementalDetokenizer } from './detokenizer.js';
export {
  ModelFileError,
  ModelLoadError,
  TokenizerMismatchError,
  UnsupportedModelError,
  WeightShapeError,
} from './errors.js';
export {
  DefaultModelMissingError,
  defaultModelDir,
  type LoadModelOptions,
  loadModel,
  type Model,
  resolveModelDir,
  weightDType,
} from './load-model.js';
export {
  type ExecuteOptions,
  type ExecuteResult,
  graphBuckets,
  ModelRunner,
  type ModelRunnerOptions,
  type SampleRequest,
  type SequenceStep,
  type StepSamples,
} from './model-runner.js';
export {
  type ArchitectureSpec,
  architectureSpec,
  bucket,
  checkpointShapes,
  DecoderModel,
  type ForwardShape,
  KvCache,
  type KvCacheOptions,
  layerWeightNames,
  type RandomWeights,
  type RandomWeightsOptions,
  randomWeights,
  registeredArchitectures,
  type WeightSource,
  Workspace,
  type WorkspaceShape,
} from './models/index.js';
export { formatBytes, type LoadProgress, type ProgressSink, progressBar } from './progress.js';
export {
  SafetensorsCheckpoint,
  type SafetensorsDType,
  SafetensorsFile,
  safetensorsItemBytes,
  type TensorInfo,
} from './safetensors.js';
export { type LoadTokenizerOptions, Tokenizer } from './tokenizer.js';
export {
  type ShardKind,
  type ShardRange,
  shardRange,
  type TensorParallel,
  type WeightSpec,
  weightSpecs,
} from './weight-specs.js';
export { type LoadWeightsOptions, loadWeights, WeightStore } from './weights.js';

// Serving: the engine core, its executor and the thread the frontend talks to (src/serving).

export {
  CompletionStream,
  EngineClient,
  type EngineClientOptions,
} from './serving/engine-client.js';
export {
  EngineCore,
  type EngineCoreOptions,
  type EngineSleepOptions,
} from './serving/engine-core.js';
export {
  createEngine,
  type Engine,
  type EngineConfig,
  kvBytesPerBlock,
} from './serving/engine-setup.js';
export {
  EngineDeadError,
  EngineUnavailableError,
  type UnavailableState,
} from './serving/errors.js';
export type { Executor, ExecutorMemory, SleepRequest, WakeResult } from './serving/executor.js';
export { InProcessExecutor, type InProcessExecutorOptions } from './serving/in-process-executor.js';
export { type RequestState, RequestStates, type ScheduledRow } from './serving/request-states.js';
export { MAX_LOGPROBS, Sampler } from './serving/sampler.js';
export {
  type EngineSamplingParams,
  resolveSamplerParams,
  type SamplerParams,
} from './serving/sampling-params.js';
export { IncrementalText, TextDecoder } from './serving/text-decoder.js';
export type {
  AbortReason,
  CompletionOutput,
  EngineInfo,
  EngineRequest,
  EngineStats,
  EngineStatus,
  OutputLogprob,
} from './serving/types.js';
export { Worker, type WorkerOptions } from './serving/worker.js';
