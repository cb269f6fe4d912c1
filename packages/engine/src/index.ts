/**
 * @x/engine — model definitions, weight loading, tokenizer, model runner, workers, executor, engine core loop.
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
