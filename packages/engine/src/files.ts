import { readFile } from 'node:fs/promises';
import { ModelFileError } from './errors.js';

/** Reads and parses a JSON file; a missing file is null when `optional`, else a ModelFileError. */
export async function readJson(path: string, optional: true): Promise<unknown | null>;
export async function readJson(path: string, optional?: false): Promise<unknown>;
export async function readJson(path: string, optional = false): Promise<unknown | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && optional) return null;
    const problem =
      code === 'ENOENT' ? 'file not found' : `cannot read (${(err as Error).message})`;
    throw new ModelFileError(path, problem, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelFileError(path, `invalid JSON (${(err as Error).message})`, { cause: err });
  }
}

/** Narrows parsed JSON to a plain object or throws naming the file. */
export function asObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelFileError(path, 'expected a JSON object at the top level');
  }
  return value as Record<string, unknown>;
}
