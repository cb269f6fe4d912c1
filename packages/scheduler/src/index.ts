/**
 * @x/scheduler — continuous batching, paged block pool, prefix cache, chunked prefill, preemption, pause/sleep state.
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
