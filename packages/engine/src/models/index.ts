export type { ArchitectureSpec, WeightSource } from './architecture.js';
export { layerWeightNames } from './architecture.js';
export { DecoderModel, type ForwardOptions, type ForwardShape } from './decoder.js';
export { KvCache, type KvCacheOptions } from './kv-cache.js';
export {
  checkpointShapes,
  type RandomWeights,
  type RandomWeightsOptions,
  randomWeights,
} from './random-weights.js';
export { architectureSpec, registeredArchitectures } from './registry.js';
export { bucket, Workspace, type WorkspaceShape } from './workspace.js';
