/**
 * @x/kv-connector — async KV-cache load/save; backends (host memory, disk, Redis, user-written).
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
