/**
 * @x/server — OpenAI-compatible HTTP API, admin endpoints, metrics.
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
