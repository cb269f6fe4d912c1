/**
 * Errors in x: one base class with a stable `code`, and a subclass per failure a caller can act on.
 * Codes are part of the public API (they also come back from native code and across processes).
 */

/** Stable error codes. Never renamed; new ones are appended. */
export type XErrorCode =
  | 'X_INVALID_ARGUMENT'
  | 'X_CUDA_ERROR'
  | 'X_NO_DEVICE'
  | 'X_OUT_OF_MEMORY'
  | 'X_ASLEEP'
  | 'X_TIMEOUT'
  | 'X_INTERNAL'
  | 'X_STREAM_ERROR'
  | 'X_NATIVE_LOAD'
  | 'X_COMM_ERROR'
  | 'X_DISPOSED';

export interface XErrorOptions {
  cause?: unknown;
}

/** Base of every error x throws on purpose. */
export class XError extends Error {
  readonly code: XErrorCode;
  constructor(code: XErrorCode, message: string, options: XErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/** A function or option received a value outside its contract. */
export class InvalidArgumentError extends XError {
  readonly argument: string;
  readonly expected: string;
  readonly received: string;
  constructor(argument: string, expected: string, received: unknown, options?: XErrorOptions) {
    const got = describe(received);
    super(
      'X_INVALID_ARGUMENT',
      `Expected ${expected} for ${argument} but received ${got}`,
      options,
    );
    this.argument = argument;
    this.expected = expected;
    this.received = got;
  }

  /** An InvalidArgumentError whose whole message was composed by native code. */
  static fromMessage(message: string): InvalidArgumentError {
    const e = new InvalidArgumentError('(native)', 'a valid argument', undefined);
    e.message = message;
    return e;
  }
}

/** The native addon of a package could not be loaded. Lists every path tried and how to fix it. */
export class NativeLoadError extends XError {
  readonly packageName: string;
  readonly tried: ReadonlyArray<{ path: string; error: string }>;
  constructor(packageName: string, tried: Array<{ path: string; error: string }>, fixes: string[]) {
    const lines = tried.map((t) => `  - ${t.path}: ${t.error}`).join('\n');
    const fixLines = fixes.map((f) => `  - ${f}`).join('\n');
    super(
      'X_NATIVE_LOAD',
      `Could not load the native addon of ${packageName}.\nTried:\n${lines}\nPossible fixes:\n${fixLines}`,
    );
    this.packageName = packageName;
    this.tried = tried;
  }
}

/** A CUDA driver call failed. `cudaErrorName` is the driver's name, e.g. CUDA_ERROR_INVALID_VALUE. */
export class CudaError extends XError {
  readonly operation: string;
  readonly cudaResult: number;
  readonly cudaErrorName: string;
  constructor(message: string, operation: string, cudaResult: number, cudaErrorName: string) {
    super('X_CUDA_ERROR', message);
    this.operation = operation;
    this.cudaResult = cudaResult;
    this.cudaErrorName = cudaErrorName;
  }
}

/** The device asked for does not exist, or CUDA is unavailable on this machine. */
export class NoDeviceError extends XError {
  constructor(message: string) {
    super('X_NO_DEVICE', message);
  }
}

/** An allocation failed. `tag` names the @x/cumem tag when there is one. */
export class OutOfMemoryError extends XError {
  readonly bytes: number;
  readonly tag: string | undefined;
  constructor(message: string, bytes: number, tag?: string) {
    super('X_OUT_OF_MEMORY', message);
    this.bytes = bytes;
    this.tag = tag;
  }
}

/** Memory was touched while asleep (unmapped by @x/cumem). Wake it first. */
export class AsleepError extends XError {
  constructor(message: string) {
    super('X_ASLEEP', message);
  }
}

/** A bounded wait ran out. Names the operation and the timeout. */
export class TimeoutError extends XError {
  readonly operation: string;
  readonly timeoutMs: number;
  constructor(operation: string, timeoutMs: number, detail?: string) {
    super(
      'X_TIMEOUT',
      `${operation} timed out after ${timeoutMs} ms${detail ? `: ${detail}` : ''}`,
    );
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** Work enqueued on a stream failed; reported at the next synchronization point. */
export class StreamError extends XError {
  constructor(message: string) {
    super('X_STREAM_ERROR', message);
  }
}

/** A handle was used after `dispose()`. */
export class DisposedError extends XError {
  constructor(what: string) {
    super('X_DISPOSED', `${what} was disposed; create a new one`);
  }
}

/** A collective or point-to-point operation failed or timed out on a rank. */
export class CommError extends XError {
  readonly rank: number;
  readonly op: string;
  readonly peer: number | undefined;
  readonly timeoutMs: number | undefined;
  constructor(
    message: string,
    details: { rank: number; op: string; peer?: number; timeoutMs?: number },
    options?: XErrorOptions,
  ) {
    super('X_COMM_ERROR', message, options);
    this.rank = details.rank;
    this.op = details.op;
    this.peer = details.peer;
    this.timeoutMs = details.timeoutMs;
  }
}

/** An error that escaped x's own checks: a bug. */
export class InternalError extends XError {
  constructor(message: string, options?: XErrorOptions) {
    super('X_INTERNAL', message, options);
  }
}

interface NativeErrorShape {
  message: string;
  code?: string;
  cudaResult?: number;
  cudaErrorName?: string;
  operation?: string;
}

/**
 * Converts an error thrown or rejected by native code into the matching XError, with `stack` taken
 * from `site` (an Error captured where the JS call was made) so async failures point at user code.
 */
export function fromNative(err: unknown, site?: Error): Error {
  if (err instanceof XError || !(err instanceof Error)) return err as Error;
  const e = err as Error & NativeErrorShape;
  let out: XError;
  switch (e.code) {
    case 'X_INVALID_ARGUMENT':
      out = InvalidArgumentError.fromMessage(e.message);
      break;
    case 'X_CUDA_ERROR':
      out = new CudaError(
        e.message,
        e.operation ?? 'unknown',
        e.cudaResult ?? -1,
        e.cudaErrorName ?? '',
      );
      break;
    case 'X_NO_DEVICE':
      out = new NoDeviceError(e.message);
      break;
    case 'X_OUT_OF_MEMORY':
      out = new OutOfMemoryError(e.message, 0);
      break;
    case 'X_ASLEEP':
      out = new AsleepError(e.message);
      break;
    case 'X_TIMEOUT':
      out = new TimeoutError(e.operation ?? 'native wait', Number.NaN, e.message);
      out.message = e.message;
      break;
    case 'X_STREAM_ERROR':
      out = new StreamError(e.message);
      break;
    default:
      if (e instanceof TypeError || e instanceof RangeError) {
        out = InvalidArgumentError.fromMessage(e.message);
      } else {
        out = new InternalError(e.message, { cause: e });
      }
  }
  if (site?.stack) {
    out.stack = `${out.name}: ${out.message}\n${site.stack.split('\n').slice(1).join('\n')}`;
  }
  return out;
}

/** Runs a synchronous native call, converting its failure into a typed XError. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromNative(err, new Error());
  }
}

/** A short, safe description of any value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string')
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `array(${value.length})`;
  if (ArrayBuffer.isView(value))
    return `${value.constructor.name}(${(value as Uint8Array).length})`;
  if (typeof value === 'function') return 'function';
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? `${name} instance` : 'object';
}
