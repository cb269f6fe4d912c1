import { UnsupportedModelError } from '../errors.js';
import type { ArchitectureSpec } from './architecture.js';
import { llama } from './llama.js';
import { mistral } from './mistral.js';
import { qwen2 } from './qwen2.js';
import { qwen3 } from './qwen3.js';

const REGISTRY = new Map<string, ArchitectureSpec>(
  [llama, mistral, qwen2, qwen3].map((a) => [a.name, a]),
);

/** The spec of an architecture name; UnsupportedModelError listing the supported ones otherwise. */
export function architectureSpec(name: string): ArchitectureSpec {
  const spec = REGISTRY.get(name);
  if (spec === undefined) throw new UnsupportedModelError(name, [...REGISTRY.keys()]);
  return spec;
}

/** Names of every registered architecture. */
export function registeredArchitectures(): string[] {
  return [...REGISTRY.keys()];
}
