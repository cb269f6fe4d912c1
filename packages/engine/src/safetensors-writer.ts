import { writeFileSync } from 'node:fs';
import type { SafetensorsDType } from './safetensors.js';

/** A tensor to write: values as numbers, stored as `dtype`. */
export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: number[];
  values: ArrayLike<number>;
}

/**
 * Writes a .safetensors file. Used by tests to build checkpoints with exactly known contents;
 * bf16 values are truncated from f32, so pass values bf16 represents exactly.
 */
export function writeSafetensors(path: string, tensors: Record<string, TensorToWrite>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = encode(t);
    header[name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.byteLength],
    };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the format pads the header to 8 bytes
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  writeFileSync(path, Buffer.concat([head, Buffer.from(json), ...parts]));
}

function encode(t: TensorToWrite): Uint8Array {
  const f32 = Float32Array.from(t.values);
  if (t.dtype === 'F32') return new Uint8Array(f32.buffer);
  const bits = new Uint32Array(f32.buffer);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < f32.length; i++) {
    out[i] = t.dtype === 'BF16' ? bits[i]! >>> 16 : floatToHalf(f32[i]!);
  }
  return new Uint8Array(out.buffer);
}

/** number → IEEE half bits, for values half represents exactly (tests only). */
function floatToHalf(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const exp = Math.floor(Math.log2(a));
  if (exp < -14) return sign | Math.round(a / 2 ** -24);
  const frac = Math.round((a / 2 ** exp - 1) * 1024);
  return sign | ((exp + 15) << 10) | frac;
}
