/**
 * @x/core — the device runtime every x package uses: typed errors, dtypes, tensor descriptors,
 * devices, explicit CPU/CUDA streams and events, host buffers, and the native addon loader.
 */

export {
  type CudaStatus,
  cudaStatus,
  type Device,
  type DeviceInfo,
  type DeviceName,
  devices,
  memoryInfo,
  parseDevice,
} from './device.js';
export { assertDType, DTYPES, type DType, dtypeSize, parseDType } from './dtype.js';
export {
  AsleepError,
  CommError,
  CudaError,
  callNative,
  DisposedError,
  fromNative as fromNativeError,
  InternalError,
  InvalidArgumentError,
  NativeLoadError,
  NoDeviceError,
  OutOfMemoryError,
  StreamError,
  TimeoutError,
  XError,
  type XErrorCode,
  type XErrorOptions,
} from './errors.js';
export { type CaptureMode, type CaptureOptions, CudaGraph } from './graph.js';
export { HostBuffer, type HostBufferOptions } from './host-buffer.js';
export { type BuildInfo, buildInfo, CAPI_VERSION, capi, version } from './info.js';
export { type LoadedAddon, type LoadNativeAddonOptions, loadNativeAddon } from './load-native.js';
export {
  Event,
  type EventOptions,
  Stream,
  type StreamOptions,
  type WaitOptions,
} from './stream.js';
export { contiguousStrides, Tensor, type TensorOptions } from './tensor.js';
export { DEFAULT_TIMEOUT_MS } from './validate.js';
