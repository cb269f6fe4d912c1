import { InvalidArgumentError } from './errors.js';

/** Element types x stores in tensors. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'i64' | 'u8';

/** All dtypes with their size in bytes. */
export const DTYPES: Readonly<Record<DType, { bytes: number; float: boolean }>> = Object.freeze({
  f32: { bytes: 4, float: true },
  f16: { bytes: 2, float: true },
  bf16: { bytes: 2, float: true },
  i32: { bytes: 4, float: false },
  i64: { bytes: 8, float: false },
  u8: { bytes: 1, float: false },
});

/** Size of one element in bytes. */
export function dtypeSize(dtype: DType): number {
  return DTYPES[assertDType('dtype', dtype)].bytes;
}

/** Narrows an unknown value to a DType or throws InvalidArgumentError naming `name`. */
export function assertDType(name: string, value: unknown): DType {
  if (typeof value !== 'string' || !Object.hasOwn(DTYPES, value)) {
    throw new InvalidArgumentError(name, `a dtype (${Object.keys(DTYPES).join(', ')})`, value);
  }
  return value as DType;
}

/** Maps Hugging Face / PyTorch dtype names ("bfloat16", "torch.float16", ...) to a DType. */
export function parseDType(name: string): DType {
  const n = name.replace(/^torch\./, '').toLowerCase();
  const table: Record<string, DType> = {
    f32: 'f32',
    float32: 'f32',
    float: 'f32',
    fp32: 'f32',
    f16: 'f16',
    float16: 'f16',
    half: 'f16',
    fp16: 'f16',
    bf16: 'bf16',
    bfloat16: 'bf16',
    i32: 'i32',
    int32: 'i32',
    int: 'i32',
    i64: 'i64',
    int64: 'i64',
    long: 'i64',
    u8: 'u8',
    uint8: 'u8',
  };
  const dt = table[n];
  if (dt === undefined) throw new InvalidArgumentError('dtype name', 'a known dtype name', name);
  return dt;
}
