import { InvalidArgumentError } from './errors.js';

/** Argument checks that produce "Expected X for Y but received Z" errors. */

export function assertInteger(
  name: string,
  value: unknown,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidArgumentError(name, `an integer ${range}`, value);
  }
  return value;
}

export function assertPointer(name: string, value: unknown): bigint {
  if (typeof value !== 'bigint' || value <= 0n || value >= 1n << 64n) {
    throw new InvalidArgumentError(name, 'a non-null address (bigint)', value);
  }
  return value;
}

export function assertOneOf<T extends string | number>(
  name: string,
  value: unknown,
  allowed: readonly T[],
): T {
  if (!allowed.includes(value as T)) {
    throw new InvalidArgumentError(
      name,
      `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`,
      value,
    );
  }
  return value as T;
}

export function assertTimeout(name: string, value: unknown): number {
  if (value === Number.POSITIVE_INFINITY) return value;
  if (typeof value !== 'number' || !(value > 0) || Number.isNaN(value)) {
    throw new InvalidArgumentError(name, 'a positive number of milliseconds or Infinity', value);
  }
  return value;
}

/** Default bound on host-side waits (rule: every wait has a timeout). */
export const DEFAULT_TIMEOUT_MS = 300_000;
