import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Random bytes (never zeros: zeros hide unwritten memory). */
export function randomBytes(n: number): Uint8Array {
  return randomFillSync(new Uint8Array(n));
}

export function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Resident set size of this process in bytes (Linux). */
export function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}
