import { randomBytes } from 'node:crypto';

/**
 * 64-bit seeds for requests that bring none (SplitMix64). With `seed` the sequence is fixed, so
 * a fresh engine given the same requests in the same order draws the same tokens (vLLM's --seed);
 * without, it starts from the OS's randomness. A request keeps its seed for life, so a preempted
 * request replays the same draws.
 */
export class SeedSource {
  #state: bigint;

  constructor(seed?: number) {
    this.#state =
      seed === undefined ? randomBytes(8).readBigUInt64LE(0) : BigInt.asUintN(64, BigInt(seed));
  }

  next(): bigint {
    this.#state = BigInt.asUintN(64, this.#state + 0x9e3779b97f4a7c15n);
    let z = this.#state;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    return z ^ (z >> 31n);
  }
}
