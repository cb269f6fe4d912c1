/**
 * @x/comm — process groups over gloo (CPU) and NCCL (CUDA, libnccl opened at run time) with
 * explicit streams, a rendezvous store (TCP served by rank 0, or a file store on one host) and a
 * launcher that starts one process per rank. Tensor operations take the Stream they run on; there
 * is no current stream.
 */
export {
  type ExchangeItem,
  type HostArray,
  type P2POptions,
  ProcessGroup,
  type ReduceOp,
} from './group.js';
export { type InitGroupOptions, initGroup } from './init-group.js';
export { type LaunchOptions, type LaunchResult, launch } from './launch.js';
export { type NcclStatus, NcclUnavailableError, ncclStatus } from './nccl.js';
export { NcclGroup } from './nccl-group.js';
export {
  DEFAULT_STORE_TIMEOUT_MS,
  Store,
  type StoreCallOptions,
  StoreServer,
} from './store.js';
