import { InvalidArgumentError, parseDevice } from '@x/core';
import { type GroupContext, ProcessGroup } from './group.js';
import { requireNccl } from './nccl.js';
import { NcclGroup } from './nccl-group.js';
import { DEFAULT_STORE_TIMEOUT_MS, Store, StoreServer } from './store.js';

/** Options of initGroup. rank / worldSize / initMethod default to the launcher's environment. */
export interface InitGroupOptions {
  backend: 'gloo' | 'nccl';
  /** This process's rank (default: $RANK). */
  rank?: number;
  /** Number of ranks (default: $WORLD_SIZE). */
  worldSize?: number;
  /**
   * Where ranks meet: "tcp://host:port" (rank 0 serves the store there), "file:///dir" (one host)
   * or "env://" ($MASTER_ADDR / $MASTER_PORT; the default).
   */
  initMethod?: string;
  /** Bound on rendezvous and on every operation of the group (default 60000 ms). */
  timeoutMs?: number;
  /**
   * Device of the group's tensors: "cpu" for gloo (the default there); "cuda:N" for NCCL (default
   * cuda:$LOCAL_RANK, one GPU per rank).
   */
  device?: string;
  /** Address this rank's transport listens on (default: 127.0.0.1 for loopback masters, else $X_COMM_HOST or the host name). */
  host?: string;
  /** Namespace of this job's keys in a shared store (file stores: use a fresh one per job). */
  jobId?: string;
  /**
   * Rendezvous through this store instead of `initMethod` (the caller owns it and its server),
   * e.g. to form a gloo and an NCCL group over one store. Groups on one store need distinct
   * `jobId`s unless they use different backends.
   */
  store?: Store;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`$${name}`, 'an integer', v);
  return n;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

interface Rendezvous {
  store: Store;
  server: StoreServer | undefined;
  masterHost: string;
}

async function rendezvous(
  initMethod: string,
  rank: number,
  timeoutMs: number,
): Promise<Rendezvous> {
  let method = initMethod;
  if (method === 'env://') {
    const addr = process.env.MASTER_ADDR;
    const port = process.env.MASTER_PORT;
    if (!addr || !port) {
      throw new InvalidArgumentError(
        'initMethod',
        'env:// with $MASTER_ADDR and $MASTER_PORT set (x launch sets them)',
        'env:// without them',
      );
    }
    method = `tcp://${addr}:${port}`;
  }
  if (method.startsWith('file://')) {
    const dir = method.slice('file://'.length);
    return {
      store: Store.openFile(dir, { timeoutMs }),
      server: undefined,
      masterHost: '127.0.0.1',
    };
  }
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(method);
  if (!m) {
    throw new InvalidArgumentError(
      'initMethod',
      '"tcp://host:port", "file:///dir" or "env://"',
      initMethod,
    );
  }
  const host = m[1]!;
  const port = Number(m[2]);
  const server = rank === 0 ? StoreServer.listen(host, port) : undefined;
  try {
    const store = await Store.connect(host, port, { timeoutMs });
    return { store, server, masterHost: host };
  } catch (err) {
    server?.close();
    throw err;
  }
}

/**
 * Joins a process group of `worldSize` ranks: gloo (CPU tensors and host arrays) or NCCL (CUDA
 * tensors, one GPU per rank). Resolves when every rank joined and the transport is connected; a
 * rank that never joins makes every other rank fail with CommError (op "init") within
 * `timeoutMs`, naming the missing ranks. For NCCL, an unusable library or driver fails at once
 * with NcclUnavailableError (a NoDeviceError) before any rendezvous.
 */
export async function initGroup(
  options: InitGroupOptions & { backend: 'gloo' },
): Promise<ProcessGroup>;
export async function initGroup(
  options: InitGroupOptions & { backend: 'nccl' },
): Promise<NcclGroup>;
export async function initGroup(options: InitGroupOptions): Promise<ProcessGroup | NcclGroup>;
export async function initGroup(options: InitGroupOptions): Promise<ProcessGroup | NcclGroup> {
  if (options === null || typeof options !== 'object') {
    throw new InvalidArgumentError('options', 'an object', options);
  }
  if (options.backend !== 'gloo' && options.backend !== 'nccl') {
    throw new InvalidArgumentError('options.backend', '"gloo" or "nccl"', options.backend);
  }
  const nccl = options.backend === 'nccl';
  const deviceName = options.device ?? (nccl ? `cuda:${envInt('LOCAL_RANK') ?? 0}` : 'cpu');
  const device = parseDevice(deviceName, 'options.device');
  if (!nccl && device.kind !== 'cpu') {
    throw new InvalidArgumentError('options.device', '"cpu" for the gloo backend', options.device);
  }
  if (nccl && device.kind !== 'cuda') {
    throw new InvalidArgumentError(
      'options.device',
      '"cuda:N" for the nccl backend',
      options.device,
    );
  }
  const worldSize = options.worldSize ?? envInt('WORLD_SIZE');
  const rank = options.rank ?? envInt('RANK');
  if (typeof worldSize !== 'number' || !Number.isInteger(worldSize) || worldSize < 1) {
    throw new InvalidArgumentError(
      'options.worldSize',
      'an integer >= 1 (or $WORLD_SIZE)',
      worldSize,
    );
  }
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new InvalidArgumentError(
      'options.rank',
      `an integer in [0, ${worldSize}) (or $RANK)`,
      rank,
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new InvalidArgumentError(
      'options.timeoutMs',
      'a finite number of milliseconds > 0',
      timeoutMs,
    );
  }
  if (nccl) {
    requireNccl();
    // Read by NCCL when the communicator is created; the user's environment wins. Without NVLink
    // multicast (project rule), and with every collective connection made at init, on the connect
    // thread, instead of lazily inside an enqueue call on the JS thread.
    process.env.NCCL_NVLS_ENABLE ??= '0';
    process.env.NCCL_RUNTIME_CONNECT ??= '0';
  }
  const jobId = options.jobId ?? process.env.X_JOB_ID ?? 'x';
  if (options.store !== undefined && !(options.store instanceof Store)) {
    throw new InvalidArgumentError('options.store', 'a Store', options.store);
  }
  const { store, server, masterHost } = options.store
    ? { store: options.store, server: undefined, masterHost: options.store.host ?? '127.0.0.1' }
    : await rendezvous(options.initMethod ?? 'env://', rank, timeoutMs);
  const worldRanks = Array.from({ length: worldSize }, (_, i) => i);
  try {
    if (nccl) {
      const ctx = {
        store: store.prefixed(jobId),
        device,
        timeoutMs: Math.ceil(timeoutMs),
        worldRanks,
      };
      const g = await NcclGroup._connect(ctx, 'nccl-world/', rank);
      g._onDispose(() => server?.close());
      return g;
    }
    const host =
      options.host ??
      process.env.X_COMM_HOST ??
      (isLoopback(masterHost) ? '127.0.0.1' : (await import('node:os')).hostname());
    const ctx: GroupContext = {
      store: store.prefixed(jobId),
      host,
      timeoutMs: Math.ceil(timeoutMs),
      worldRanks,
    };
    const g = await ProcessGroup._connect(ctx, 'world/', rank);
    g._onDispose(() => server?.close());
    return g;
  } catch (err) {
    server?.close();
    throw err;
  }
}
