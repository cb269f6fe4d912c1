import { InvalidArgumentError } from '@x/core';

/** What sleep does to a tag's memory. */
export type SleepPolicy = 'offload' | 'discard' | 'keep';

/** How a tag behaves across sleep/wake. */
export interface TagOptions {
  /** offload: copied out on sleep and restored on wake; discard: undefined after wake; keep: never unmapped. */
  onSleep: SleepPolicy;
  /** Where offloaded contents go: pinned host memory (default) or a file in the allocator's diskDir. */
  offloadTo?: 'host' | 'disk';
  /**
   * Keep the backup after wake. The next sleep then skips the copy for every allocation not marked
   * dirty (written through the API or `markDirty()`): weights that did not change sleep instantly.
   * Contract: memory of such a tag is read-only after wake unless you call markDirty().
   */
  keepBackup?: boolean;
  /**
   * Keep the (pinned) host memory of a host backup after wake, so the next sleep copies at full
   * link speed instead of first allocating and pinning it again. Default true; false returns the
   * host memory at every wake.
   */
  reuseHostMemory?: boolean;
}

/** Tags every allocator has. */
export const BUILTIN_TAGS: Readonly<Record<string, TagOptions>> = Object.freeze({
  weights: { onSleep: 'offload', offloadTo: 'host' },
  kv_cache: { onSleep: 'discard' },
  activations: { onSleep: 'discard' },
  meta: { onSleep: 'keep' },
});

const TAG_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

/** Validates a tag definition, naming the bad field. */
export function checkTag(name: unknown, options: unknown): TagOptions {
  if (typeof name !== 'string' || !TAG_NAME.test(name)) {
    throw new InvalidArgumentError(
      'tag',
      'a name of letters, digits, "_", "." or "-" (1-64 chars)',
      name,
    );
  }
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`options of tag ${name}`, 'an object', options);
  }
  const o = options as Partial<TagOptions>;
  if (!['offload', 'discard', 'keep'].includes(o.onSleep as string)) {
    throw new InvalidArgumentError(`${name}.onSleep`, '"offload", "discard" or "keep"', o.onSleep);
  }
  if (o.offloadTo !== undefined && o.offloadTo !== 'host' && o.offloadTo !== 'disk') {
    throw new InvalidArgumentError(`${name}.offloadTo`, '"host" or "disk"', o.offloadTo);
  }
  for (const key of ['keepBackup', 'reuseHostMemory'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') {
      throw new InvalidArgumentError(`${name}.${key}`, 'a boolean', o[key]);
    }
  }
  return {
    onSleep: o.onSleep!,
    offloadTo: o.offloadTo ?? 'host',
    keepBackup: o.keepBackup ?? false,
    reuseHostMemory: o.reuseHostMemory ?? true,
  };
}
