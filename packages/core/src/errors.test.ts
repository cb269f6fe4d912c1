import { describe, expect, it } from 'vitest';
import {
  CudaError,
  fromNative,
  InvalidArgumentError,
  NativeLoadError,
  StreamError,
  TimeoutError,
  XError,
} from './errors.js';

describe('errors', () => {
  it('InvalidArgumentError names the argument, the expectation and what was received', () => {
    const e = new InvalidArgumentError('options.device', '"cpu" or "cuda:N"', 'gpu7');
    expect(e).toBeInstanceOf(XError);
    expect(e.code).toBe('X_INVALID_ARGUMENT');
    expect(e.message).toBe('Expected "cpu" or "cuda:N" for options.device but received "gpu7"');
    expect(e.argument).toBe('options.device');
    expect(e.name).toBe('InvalidArgumentError');
  });

  it('maps native error codes to typed errors and re-attaches the JS call site', () => {
    function callSite(): Error {
      return new Error();
    }
    const site = callSite();
    const native = Object.assign(new Error('cuMemcpyAsync failed: CUDA_ERROR_INVALID_VALUE'), {
      code: 'X_CUDA_ERROR',
      cudaResult: 1,
      cudaErrorName: 'CUDA_ERROR_INVALID_VALUE',
      operation: 'cuMemcpyAsync',
    });
    const e = fromNative(native, site) as CudaError;
    expect(e).toBeInstanceOf(CudaError);
    expect(e.cudaErrorName).toBe('CUDA_ERROR_INVALID_VALUE');
    expect(e.operation).toBe('cuMemcpyAsync');
    expect(e.stack).toContain('callSite');
    expect(fromNative(Object.assign(new Error('x'), { code: 'X_STREAM_ERROR' }))).toBeInstanceOf(
      StreamError,
    );
    expect(fromNative(Object.assign(new Error('t'), { code: 'X_TIMEOUT' }))).toBeInstanceOf(
      TimeoutError,
    );
  });

  it('NativeLoadError lists every path tried and the fixes', () => {
    const e = new NativeLoadError(
      '@x/core',
      [{ path: '/a/x_core.node', error: 'not found' }],
      ['build it'],
    );
    expect(e.code).toBe('X_NATIVE_LOAD');
    expect(e.message).toContain('/a/x_core.node: not found');
    expect(e.message).toContain('build it');
  });
});
