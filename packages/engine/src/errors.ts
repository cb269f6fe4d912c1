import { XError } from '@x/core';

/**
 * Errors raised while loading a model directory. They all carry X_INVALID_ARGUMENT: the model the
 * user pointed at is the bad input, and each subclass names what to fix.
 */
export class ModelLoadError extends XError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('X_INVALID_ARGUMENT', message, options);
  }
}

/** A file the model directory must contain is missing or unreadable. */
export class ModelFileError extends ModelLoadError {
  readonly path: string;
  constructor(path: string, problem: string, options?: { cause?: unknown }) {
    super(`${path}: ${problem}`, options);
    this.path = path;
  }
}

/** config.json names an architecture (or a feature of one) that x does not implement. */
export class UnsupportedModelError extends ModelLoadError {
  readonly architecture: string;
  readonly supported: readonly string[];
  constructor(architecture: string, supported: readonly string[], detail?: string) {
    super(
      detail ??
        `unsupported architecture ${JSON.stringify(architecture)}; supported: ${supported.join(', ')}`,
    );
    this.architecture = architecture;
    this.supported = supported;
  }
}

/** A checkpoint tensor is missing or has another shape than the config implies. */
export class WeightShapeError extends ModelLoadError {
  readonly tensor: string;
  readonly expected: readonly number[];
  readonly found: readonly number[] | null;
  constructor(tensor: string, expected: readonly number[], found: readonly number[] | null) {
    super(
      found === null
        ? `tensor ${tensor} (expected shape [${expected.join(', ')}]) is not in the checkpoint`
        : `tensor ${tensor} has shape [${found.join(', ')}] but the config implies [${expected.join(', ')}]`,
    );
    this.tensor = tensor;
    this.expected = expected;
    this.found = found;
  }
}

/** tokenizer.json does not fit the model (its ids would index past the embedding). */
export class TokenizerMismatchError extends ModelLoadError {
  readonly tokenizerSize: number;
  readonly vocabSize: number;
  constructor(tokenizerSize: number, vocabSize: number, detail: string) {
    super(
      `the tokenizer has ${tokenizerSize} tokens but the model's vocab_size is ${vocabSize}: ${detail}`,
    );
    this.tokenizerSize = tokenizerSize;
    this.vocabSize = vocabSize;
  }
}
