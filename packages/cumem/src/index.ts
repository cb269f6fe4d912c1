/**
 * @x/cumem — a tagged virtual-memory allocator with sleep/wake, on the CPU and on CUDA GPUs.
 * Addresses never move; a tag decides what sleep does to its memory (offload, discard or keep).
 */
export { Allocation, type AllocationState } from './allocation.js';
export {
  Allocator,
  type AllocatorOptions,
  type AuditEntry,
  type Barrier,
  type SleepOptions,
  type TagStats,
  type WakeOptions,
} from './allocator.js';
export { BUILTIN_TAGS, type SleepPolicy, type TagOptions } from './tags.js';
