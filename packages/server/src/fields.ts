import { badField } from './errors.js';

/**
 * Typed readers for request bodies: each returns the value or undefined (absent or null), and
 * throws a 400 naming the field when the value has the wrong type or range. JSON null is treated
 * as absent, as OpenAI's and vLLM's schemas do.
 */
export class Fields {
  readonly #o: Record<string, unknown>;
  readonly #prefix: string;

  constructor(body: unknown, prefix = '') {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw badField(prefix || 'body', 'a JSON object', body);
    }
    this.#o = body as Record<string, unknown>;
    this.#prefix = prefix;
  }

  name(key: string): string {
    return this.#prefix ? `${this.#prefix}.${key}` : key;
  }

  raw(key: string): unknown {
    const v = this.#o[key];
    return v === null ? undefined : v;
  }

  has(key: string): boolean {
    return this.raw(key) !== undefined;
  }

  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw badField(this.name(key), 'a boolean', v);
    return v;
  }

  string(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw badField(this.name(key), 'a string', v);
    return v;
  }

  number(
    key: string,
    min: number,
    max: number,
    open: { minOpen?: boolean } = {},
  ): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const lowOk = typeof v === 'number' && (open.minOpen ? v > min : v >= min);
    if (typeof v !== 'number' || !Number.isFinite(v) || !lowOk || v > max) {
      const lo = open.minOpen ? `(${min}` : `[${min}`;
      throw badField(this.name(key), `a number in ${lo}, ${max}]`, v);
    }
    return v;
  }

  int(key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
      throw badField(this.name(key), `an integer ${range}`, v);
    }
    return v;
  }

  intArray(key: string, min: number, max: number): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw badField(this.name(key), 'an array of integers', v);
    v.forEach((x, i) => {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) {
        throw badField(`${this.name(key)}[${i}]`, `an integer in [${min}, ${max}]`, x);
      }
    });
    return v as number[];
  }

  /** A string or an array of strings (OpenAI `stop`). */
  strings(key: string): string[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const list = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(list)) throw badField(this.name(key), 'a string or an array of strings', v);
    list.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) {
        throw badField(`${this.name(key)}[${i}]`, 'a non-empty string', s);
      }
    });
    return list as string[];
  }

  object(key: string): Fields | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    return new Fields(v, this.name(key));
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !values.includes(v as T)) {
      throw badField(this.name(key), `one of ${values.map((x) => `"${x}"`).join(', ')}`, v);
    }
    return v as T;
  }

  /** Keys present in the object. */
  keys(): string[] {
    return Object.keys(this.#o);
  }
}
