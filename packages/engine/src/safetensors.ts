import { type FileHandle, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelFileError } from './errors.js';
import { asObject, readJson } from './files.js';

/** Element types found in safetensors headers that x can load. */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16';

const ITEM_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2 };

/** Where one tensor's bytes are in which file. */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offset of the first element in `file.path`. */
  offset: number;
  byteLength: number;
  file: SafetensorsFile;
}

/** The safetensors header is a u64 length then JSON; 100 MB is far above any real header. */
const MAX_HEADER_BYTES = 100 << 20;

/**
 * One .safetensors file: the header is parsed at open; tensor bytes are read on demand by exact
 * byte range (Node has no mmap), so loading never buffers a whole file.
 */
export class SafetensorsFile {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly #fh: FileHandle;

  private constructor(path: string, fh: FileHandle, tensors: Map<string, TensorInfo>) {
    this.path = path;
    this.#fh = fh;
    this.tensors = tensors;
  }

  /** Opens `path` and validates its header (dtypes, shapes and byte ranges). */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ModelFileError(path, code === 'ENOENT' ? 'file not found' : String(err), {
        cause: err,
      });
    }
    try {
      const tensors = new Map<string, TensorInfo>();
      const file = new SafetensorsFile(path, fh, tensors);
      const size = (await fh.stat()).size;
      const head = await file.read(0, 8);
      if (head.byteLength < 8) throw new ModelFileError(path, 'truncated safetensors header');
      const headerLen = Number(new DataView(head.buffer, head.byteOffset).getBigUint64(0, true));
      if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > size) {
        throw new ModelFileError(path, `not a safetensors file (header length ${headerLen})`);
      }
      let header: Record<string, unknown>;
      try {
        header = asObject(
          JSON.parse(new TextDecoder().decode(await file.read(8, headerLen))),
          path,
        );
      } catch (err) {
        throw new ModelFileError(path, `unreadable safetensors header (${(err as Error).message})`);
      }
      const dataStart = 8 + headerLen;
      for (const [name, entry] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        tensors.set(name, parseEntry(file, name, entry, dataStart, size));
      }
      return file;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Reads `length` bytes at absolute `position` (fewer only at end of file). */
  async read(position: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const buf = into ?? new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

function parseEntry(
  file: SafetensorsFile,
  name: string,
  entry: unknown,
  dataStart: number,
  fileSize: number,
): TensorInfo {
  const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const where = `${file.path}: tensor ${name}`;
  if (typeof e !== 'object' || e === null)
    throw new ModelFileError(where, 'malformed header entry');
  if (!(typeof e.dtype === 'string' && e.dtype in ITEM_BYTES)) {
    throw new ModelFileError(
      where,
      `dtype ${JSON.stringify(e.dtype)} is not supported (F32, F16 or BF16)`,
    );
  }
  const dtype = e.dtype as SafetensorsDType;
  const shape = e.shape;
  const offsets = e.data_offsets;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ModelFileError(where, `malformed shape ${JSON.stringify(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    throw new ModelFileError(where, `malformed data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  if (end - begin !== numel * ITEM_BYTES[dtype] || dataStart + end > fileSize) {
    throw new ModelFileError(
      where,
      `data_offsets [${begin}, ${end}] do not hold ${numel} ${dtype} elements inside the file (truncated download?)`,
    );
  }
  return {
    name,
    dtype,
    shape: shape as number[],
    offset: dataStart + begin,
    byteLength: end - begin,
    file,
  };
}

/**
 * A checkpoint's tensors across all its files: `model.safetensors`, or the shards listed by
 * `model.safetensors.index.json`.
 */
export class SafetensorsCheckpoint {
  readonly dir: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly files: readonly SafetensorsFile[];

  private constructor(dir: string, files: SafetensorsFile[], tensors: Map<string, TensorInfo>) {
    this.dir = dir;
    this.files = files;
    this.tensors = tensors;
  }

  /** Opens the single file or every shard of the checkpoint in `dir`. */
  static async open(dir: string): Promise<SafetensorsCheckpoint> {
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = await readJson(indexPath, true);
    let names: string[];
    if (index !== null) {
      const map = asObject(index, indexPath).weight_map;
      if (typeof map !== 'object' || map === null) {
        throw new ModelFileError(indexPath, '"weight_map" is missing');
      }
      names = [...new Set(Object.values(map as Record<string, string>))].sort();
    } else {
      const single = join(dir, 'model.safetensors');
      if (!(await exists(single))) {
        throw new ModelFileError(
          dir,
          'no weights: expected model.safetensors or model.safetensors.index.json with its shards',
        );
      }
      names = ['model.safetensors'];
    }
    const files: SafetensorsFile[] = [];
    const tensors = new Map<string, TensorInfo>();
    try {
      for (const name of names) {
        const file = await SafetensorsFile.open(join(dir, name));
        files.push(file);
        for (const [k, info] of file.tensors) {
          if (tensors.has(k)) {
            throw new ModelFileError(
              file.path,
              `tensor ${k} is also in ${tensors.get(k)!.file.path}`,
            );
          }
          tensors.set(k, info);
        }
      }
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
    return new SafetensorsCheckpoint(dir, files, tensors);
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Bytes per element of a safetensors dtype. */
export function safetensorsItemBytes(dtype: SafetensorsDType): number {
  return ITEM_BYTES[dtype];
}
