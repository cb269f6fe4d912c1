import { HostBuffer, InternalError, type Stream } from '@x/core';
import type { ModelConfig } from '../config.js';
import { convertElements } from '../convert.js';
import { WeightShapeError } from '../errors.js';
import { SafetensorsCheckpoint, safetensorsItemBytes } from '../safetensors.js';
import { shardRange, weightSpecs } from '../weight-specs.js';
import type { WeightStore } from '../weights.js';

/** Checkpoint bytes per read and per host→device copy. */
const CHUNK_BYTES = 16 << 20;

/**
 * Writes the safetensors checkpoint in `dir` into the memory `store` already holds, tensor by
 * tensor, through `stream` (host staging → device copy): no allocation is made or moved, so the
 * model, block tables and any captured graph keep their addresses (DESIGN.md rule 2). Every
 * tensor must have the shape `config` implies (WeightShapeError otherwise); this rank's TP slice
 * is taken as at load time. Used after a level-2 sleep discarded the weights.
 */
export async function reloadWeightsInPlace(
  dir: string,
  config: ModelConfig,
  store: WeightStore,
  stream: Stream,
  timeoutMs: number,
): Promise<void> {
  const ckpt = await SafetensorsCheckpoint.open(dir);
  const specs = weightSpecs(config);
  // Check every shape before writing anything, so a wrong directory changes nothing.
  for (const spec of specs) {
    const info = ckpt.tensors.get(spec.name);
    if (info === undefined) throw new WeightShapeError(spec.name, spec.shape, null);
    if (info.shape.length !== spec.shape.length || info.shape.some((d, i) => d !== spec.shape[i])) {
      throw new WeightShapeError(spec.name, spec.shape, info.shape);
    }
  }
  const staging = HostBuffer.alloc(CHUNK_BYTES * 2, { device: stream.device.name });
  try {
    for (const spec of specs) {
      const info = ckpt.tensors.get(spec.name)!;
      const range = shardRange(spec, config, store.tp);
      const dst = store.get(spec.name);
      const srcItem = safetensorsItemBytes(info.dtype);
      const full = info.shape;
      const rowElems = full.length > 1 ? full.slice(1).reduce((a, b) => a * b, 1) : 1;
      const rowBytes = rowElems * srcItem;
      const [firstRow, lastRow] = range.dim === 0 ? [range.start, range.end] : [0, full[0]!];
      const colStart = range.dim === 1 ? range.start : 0;
      const colCount = range.dim === 1 ? range.end - range.start : rowElems;
      const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
      let written = 0;
      for (let r = firstRow; r < lastRow; r += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, lastRow - r);
        const raw = await info.file.read(info.offset + r * rowBytes, rows * rowBytes);
        if (raw.byteLength !== rows * rowBytes) {
          throw new WeightShapeError(spec.name, spec.shape, info.shape);
        }
        let picked = raw;
        if (range.dim === 1) {
          picked = new Uint8Array(rows * colCount * srcItem);
          for (let k = 0; k < rows; k++) {
            const from = k * rowBytes + colStart * srcItem;
            picked.set(raw.subarray(from, from + colCount * srcItem), k * colCount * srcItem);
          }
        }
        const out = convertElements(picked, info.dtype, store.dtype);
        if (written + out.byteLength > dst.byteLength || out.byteLength > staging.byteLength) {
          throw new InternalError(`weight reload: ${spec.name} overflows its ${dst.byteLength} B`);
        }
        staging.bytes.set(out, 0);
        stream.copy(dst.ptr + BigInt(written), staging.ptr, out.byteLength);
        // The staging buffer is reused by the next chunk: wait for this copy to read it.
        await stream.synchronize({ timeoutMs });
        written += out.byteLength;
      }
      if (written !== dst.byteLength) {
        throw new InternalError(
          `weight reload: wrote ${written} of ${dst.byteLength} B of ${spec.name}`,
        );
      }
    }
  } finally {
    await stream.synchronize({ timeoutMs }).catch(() => undefined);
    staging.dispose();
    await ckpt.close();
  }
}
