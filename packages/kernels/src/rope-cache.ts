import { InvalidArgumentError } from '@x/core';

/** Llama 3 rope scaling (HF `rope_type: "llama3"`). */
export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** Options of {@link ropeCosSinCache}. */
export interface RopeCacheOptions {
  rotaryDim: number;
  /** HF `rope_theta`. */
  theta: number;
  /** Rows of the cache: positions 0 .. maxPositions-1. */
  maxPositions: number;
  scaling?: Llama3RopeScaling | null;
}

const f = Math.fround;

/**
 * The inverse frequencies of HF transformers' default rope (and its llama3 variant), computed step
 * by step in f32 as transformers does, so the cos/sin values match it to the last bit or one ulp.
 */
export function ropeInvFreq(options: RopeCacheOptions): Float32Array {
  const dim = options.rotaryDim;
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(options.theta ** f((2 * i) / dim)));
  const s = options.scaling;
  if (!s) return inv;
  if (s.type !== 'llama3') throw new InvalidArgumentError('scaling.type', '"llama3"', s.type);
  const old = s.originalMaxPositionEmbeddings;
  const lowWavelen = old / s.lowFreqFactor;
  const highWavelen = old / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = inv[i]!;
    const wavelen = f((2 * Math.PI) / freq);
    let scaled = wavelen > lowWavelen ? f(freq / s.factor) : freq;
    const smooth = f(f(f(old / wavelen) - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor));
    const smoothed = f(f(f(f(1 - smooth) * scaled) / s.factor) + f(smooth * scaled));
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) scaled = smoothed;
    inv[i] = scaled;
  }
  return inv;
}

/**
 * The cos/sin table {@link rotaryEmbedding} reads: [maxPositions, rotaryDim] f32, row p holding
 * cos(p·invFreq) in its first half and sin(p·invFreq) in its second (vLLM's cos_sin_cache layout).
 */
export function ropeCosSinCache(options: RopeCacheOptions): Float32Array {
  const { rotaryDim, maxPositions } = options;
  if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw new InvalidArgumentError('rotaryDim', 'an even integer >= 2', rotaryDim);
  }
  if (!Number.isInteger(maxPositions) || maxPositions < 1) {
    throw new InvalidArgumentError('maxPositions', 'an integer >= 1', maxPositions);
  }
  if (!(options.theta > 0))
    throw new InvalidArgumentError('theta', 'a positive number', options.theta);
  const inv = ropeInvFreq(options);
  const half = rotaryDim / 2;
  const out = new Float32Array(maxPositions * rotaryDim);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f(p * inv[i]!);
      out[p * rotaryDim + i] = Math.cos(angle);
      out[p * rotaryDim + half + i] = Math.sin(angle);
    }
  }
  return out;
}
