import { join } from 'node:path';
import { ModelFileError, UnsupportedModelError } from './errors.js';
import { asObject, readJson } from './files.js';
import { architectureSpec, registeredArchitectures } from './models/registry.js';

/** Architectures x implements (config.json `architectures[0]`): those in models/registry.ts. */
export const SUPPORTED_ARCHITECTURES: readonly string[] = registeredArchitectures();

/** A config.json `architectures[0]` that x implements (one of SUPPORTED_ARCHITECTURES). */
export type Architecture = string;

/** Llama-3 style frequency-dependent rope scaling. */
export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** What the model code needs from a Hugging Face model directory, in one normalized shape. */
export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: null | Llama3RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (the architecture's rule over config `attention_bias`). */
  attentionBias: boolean;
  /** Per-head RMSNorm of q and k before rotary (Qwen3). */
  qkNorm: boolean;
  /** The checkpoint's dtype (config `dtype`, or `torch_dtype` in transformers 4 style). */
  dtype: 'f32' | 'f16' | 'bf16';
  bosTokenId: number | null;
  /** Every id that ends generation: config.json's eos ids and generation_config.json's, merged. */
  eosTokenIds: number[];
}

/** Sampling defaults a model ships in generation_config.json (vLLM applies them too). */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
}

/** Reads `dir`/config.json (transformers 4 or 5 style) and generation_config.json. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, 'config.json');
  const raw = asObject(await readJson(path), path);
  const genPath = join(dir, 'generation_config.json');
  const gen = await readJson(genPath, true);
  return parseModelConfig(raw, gen === null ? {} : asObject(gen, genPath), path);
}

/** Sampling defaults from `dir`/generation_config.json ({} when the file is absent). */
export async function loadGenerationDefaults(dir: string): Promise<GenerationDefaults> {
  const path = join(dir, 'generation_config.json');
  const gen = await readJson(path, true);
  if (gen === null) return {};
  const g = asObject(gen, path);
  const out: GenerationDefaults = {};
  const pick = (key: string, into: keyof GenerationDefaults) => {
    const v = g[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new ModelFileError(path, `"${key}" must be a number, found ${JSON.stringify(v)}`);
    }
    out[into] = v;
  };
  pick('temperature', 'temperature');
  pick('top_p', 'topP');
  pick('top_k', 'topK');
  pick('min_p', 'minP');
  pick('repetition_penalty', 'repetitionPenalty');
  pick('max_new_tokens', 'maxNewTokens');
  // transformers ignores temperature/top_p/top_k when do_sample is false: greedy is the default.
  if (g.do_sample === false) out.temperature = 0;
  return out;
}

/** Normalizes parsed config.json + generation_config.json objects; `path` is used in errors. */
export function parseModelConfig(
  raw: Record<string, unknown>,
  gen: Record<string, unknown>,
  path = 'config.json',
): ModelConfig {
  const f = new Fields(raw, path);
  const architecture = parseArchitecture(raw, path);
  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  const numKvHeads = f.int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ModelFileError(
      path,
      `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  if (hiddenSize % numHeads !== 0 && raw.head_dim == null) {
    throw new ModelFileError(
      path,
      'head_dim is missing and hidden_size % num_attention_heads != 0',
    );
  }
  const headDim = f.int('head_dim', hiddenSize / numHeads);
  const rope = parseRope(raw, f, architecture, path);
  if (f.bool('mlp_bias', false)) {
    throw new UnsupportedModelError(
      architecture,
      SUPPORTED_ARCHITECTURES,
      `${path}: mlp_bias=true is not supported (MLP layers without bias only)`,
    );
  }
  const config: ModelConfig = {
    architecture,
    hiddenSize,
    intermediateSize: f.int('intermediate_size'),
    numLayers: f.int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: f.int('vocab_size'),
    rmsNormEps: f.num('rms_norm_eps', 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings: f.int('max_position_embeddings', 2048),
    // Every supported config class defaults to untied embeddings.
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    // The raw flag; the architecture's spec decides below (Qwen2 always has q/k/v biases).
    attentionBias: f.bool('attention_bias', false),
    qkNorm: false,
    dtype: parseCheckpointDType(raw.dtype ?? raw.torch_dtype, path),
    bosTokenId: tokenIds(raw.bos_token_id ?? gen.bos_token_id, path, 'bos_token_id')[0] ?? null,
    eosTokenIds: [
      ...new Set([
        ...tokenIds(raw.eos_token_id, path, 'eos_token_id'),
        ...tokenIds(gen.eos_token_id, 'generation_config.json', 'eos_token_id'),
      ]),
    ],
  };
  const spec = architectureSpec(architecture);
  return { ...config, attentionBias: spec.qkvBias(config), qkNorm: spec.qkNorm(config) };
}

function parseArchitecture(raw: Record<string, unknown>, path: string): Architecture {
  const list = raw.architectures;
  if (!Array.isArray(list) || typeof list[0] !== 'string') {
    throw new ModelFileError(
      path,
      `"architectures" must list the model class (one of ${SUPPORTED_ARCHITECTURES.join(', ')})`,
    );
  }
  const name = list[0];
  if (!SUPPORTED_ARCHITECTURES.includes(name)) {
    throw new UnsupportedModelError(name, SUPPORTED_ARCHITECTURES);
  }
  return name;
}

/**
 * transformers 5 keeps rope settings in `rope_parameters` (with rope_theta inside); transformers 4
 * has top-level `rope_theta` and an optional `rope_scaling` whose kind is `rope_type` or `type`.
 */
function parseRope(
  raw: Record<string, unknown>,
  f: Fields,
  architecture: string,
  path: string,
): { theta: number; scaling: ModelConfig['ropeScaling'] } {
  const params = raw.rope_parameters;
  let theta: number;
  let scaling: Record<string, unknown> | null;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) {
      throw new ModelFileError(path, '"rope_parameters" must be an object');
    }
    scaling = params as Record<string, unknown>;
    theta = new Fields(scaling, `${path} rope_parameters`).num(
      'rope_theta',
      f.num('rope_theta', 10000),
    );
  } else {
    theta = f.num('rope_theta', 10000);
    const s = raw.rope_scaling;
    if (s !== undefined && s !== null && (typeof s !== 'object' || Array.isArray(s))) {
      throw new ModelFileError(path, '"rope_scaling" must be an object or null');
    }
    scaling = (s as Record<string, unknown> | null | undefined) ?? null;
  }
  if (scaling === null) return { theta, scaling: null };
  const kind = scaling.rope_type ?? scaling.type ?? 'default';
  if (kind === 'default') return { theta, scaling: null };
  if (kind !== 'llama3') {
    throw new UnsupportedModelError(
      architecture,
      ['default', 'llama3'],
      `rope scaling type ${JSON.stringify(kind)} is not supported (supported: default, llama3)`,
    );
  }
  const s = new Fields(scaling, `${path} rope scaling`);
  return {
    theta,
    scaling: {
      type: 'llama3',
      factor: s.num('factor'),
      lowFreqFactor: s.num('low_freq_factor'),
      highFreqFactor: s.num('high_freq_factor'),
      originalMaxPositionEmbeddings: s.int('original_max_position_embeddings'),
    },
  };
}

function parseCheckpointDType(value: unknown, path: string): ModelConfig['dtype'] {
  if (value === undefined || value === null) return 'f32'; // transformers' default
  const name = String(value).replace(/^torch\./, '');
  const table: Record<string, ModelConfig['dtype']> = {
    float32: 'f32',
    float: 'f32',
    float16: 'f16',
    half: 'f16',
    bfloat16: 'bf16',
  };
  const dt = table[name];
  if (dt === undefined) {
    throw new ModelFileError(
      path,
      `dtype ${JSON.stringify(value)} is not supported (float32, float16 or bfloat16)`,
    );
  }
  return dt;
}

function tokenIds(value: unknown, path: string, key: string): number[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  for (const id of list) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new ModelFileError(
        path,
        `"${key}" must be a token id or a list of them, found ${JSON.stringify(value)}`,
      );
    }
  }
  return list as number[];
}

/** Typed access to config fields; every failure names the file and the key. */
class Fields {
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly path: string,
  ) {}

  num(key: string, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ModelFileError(this.path, `"${key}" is missing`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new ModelFileError(this.path, `"${key}" must be a number, found ${JSON.stringify(v)}`);
    }
    return v;
  }

  int(key: string, fallback?: number): number {
    const v = this.num(key, fallback);
    if (!Number.isInteger(v) || v <= 0) {
      throw new ModelFileError(this.path, `"${key}" must be a positive integer, found ${v}`);
    }
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') {
      throw new ModelFileError(
        this.path,
        `"${key}" must be true or false, found ${JSON.stringify(v)}`,
      );
    }
    return v;
  }
}
