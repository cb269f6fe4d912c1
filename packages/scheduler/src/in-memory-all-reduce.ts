import { CommError, InvalidArgumentError } from '@x/core';
import type { AllReduceSum } from './pause-consensus.js';

interface Round {
  sums: number[] | null;
  arrived: number;
  resolvers: Array<(sums: number[]) => void>;
}

/**
 * A SUM all-reduce between N in-process participants, for simulating engine ranks in tests.
 * The k-th call of every rank meets in round k; a rank waiting past its timeout rejects with a
 * CommError naming the rank and the round — that is how a simulated deadlock shows up.
 */
export class InMemoryAllReduce {
  private readonly rounds = new Map<number, Round>();
  private readonly calls: number[];

  constructor(readonly worldSize: number) {
    if (!Number.isInteger(worldSize) || worldSize < 1) {
      throw new InvalidArgumentError('worldSize', 'an integer >= 1', worldSize);
    }
    this.calls = new Array(worldSize).fill(0);
  }

  /** The all-reduce function for `rank`. */
  forRank(rank: number): AllReduceSum {
    return (values, timeoutMs) => this.sum(rank, values, timeoutMs);
  }

  /** How many all-reduces `rank` has entered. */
  callsOf(rank: number): number {
    return this.calls[rank]!;
  }

  private sum(rank: number, values: readonly number[], timeoutMs: number): Promise<number[]> {
    const k = this.calls[rank]!++;
    let round = this.rounds.get(k);
    if (!round) {
      round = { sums: null, arrived: 0, resolvers: [] };
      this.rounds.set(k, round);
    }
    const r = round;
    r.sums = r.sums ? r.sums.map((s, i) => s + (values[i] ?? 0)) : [...values];
    r.arrived++;
    return new Promise<number[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new CommError(`all-reduce round ${k} timed out on rank ${rank}`, {
            rank,
            op: 'all_reduce',
            timeoutMs,
          }),
        );
      }, timeoutMs);
      r.resolvers.push((sums) => {
        clearTimeout(timer);
        resolve(sums);
      });
      if (r.arrived === this.worldSize) {
        this.rounds.delete(k);
        for (const done of r.resolvers) done([...r.sums!]);
      }
    });
  }
}
