import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** packages/engine/fixtures (tiny checkpoints made by scripts/make_fixtures.py). */
export const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures');

/** The model fixtures: one per architecture and config style. */
export const MODEL_FIXTURES = [
  'llama-v4',
  'llama-v5',
  'mistral-v4',
  'mistral-v5',
  'qwen2-v4',
  'qwen2-v5',
  'qwen3-v4',
  'qwen3-v5',
] as const;

/** A fresh temporary directory. */
export function tempDir(prefix = 'x-engine-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
