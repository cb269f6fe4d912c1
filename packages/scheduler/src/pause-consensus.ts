import { InvalidArgumentError } from '@x/core';

/**
 * A SUM all-reduce over the engine ranks (the CPU group of @x/comm in production; an
 * InMemoryAllReduce in tests). It must reject with a CommError naming the rank after `timeoutMs`.
 */
export type AllReduceSum = (values: readonly number[], timeoutMs: number) => Promise<number[]>;

/** Options of a PauseConsensus. */
export interface PauseConsensusOptions {
  rank: number;
  worldSize: number;
  allReduce: AllReduceSum;
  /** Bound on each sync's all-reduce, ms. Default 60 000. */
  timeoutMs?: number;
}

/** What every rank learns from one sync; identical on all ranks, so all act alike. */
export interface SyncResult {
  /** Some rank has unfinished requests. */
  anyUnfinished: boolean;
  /** Every rank wants to pause: all ranks are now paused. */
  paused: boolean;
  /** Nothing left anywhere and nobody pausing: all ranks stop stepping until a new wave. */
  waveEnded: boolean;
}

/**
 * Two-phase pause across data-parallel engine ranks (DESIGN.md rule 6, vLLM PR 39366).
 *
 * Ranks step in lockstep "waves" (their forward passes contain collectives). A periodic sync
 * all-reduces [hasUnfinished, wantsPause, pendingPause] with one SUM: sum > 0 is OR, sum ===
 * worldSize is AND. Phase 1: a pause request only marks `pendingPause`; the rank keeps stepping
 * (and syncing) while it drains. Phase 2: the sync in which every rank reports wantsPause
 * (pending and locally quiesced) pauses all ranks in the same round. A paused rank ignores
 * start-wave messages, and each pause or wave end advances `wave`, so a late message for an
 * older wave can never pull one rank back into a collective the others have left. resume()
 * engages every rank in a fresh wave, so ranks whose resume arrives late still meet in the sync.
 *
 * The engine loop per rank: while `engaged`, step (a dummy step when idle) and call sync() every
 * few steps; when not engaged, wait for a local request (startLocalWave) or a peer's
 * onStartWave. Whenever a call returns a wave number, broadcast "start wave N" to the peers.
 */
export class PauseConsensus {
  readonly rank: number;
  readonly worldSize: number;
  private readonly allReduce: AllReduceSum;
  private readonly timeoutMs: number;
  private currentWave = 0;
  private isEngaged = false;
  private pending = false;
  private isPaused = false;

  constructor(options: PauseConsensusOptions) {
    const { rank, worldSize } = options;
    if (!Number.isInteger(worldSize) || worldSize < 1) {
      throw new InvalidArgumentError('worldSize', 'an integer >= 1', worldSize);
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new InvalidArgumentError('rank', `an integer in [0, ${worldSize - 1}]`, rank);
    }
    if (typeof options.allReduce !== 'function') {
      throw new InvalidArgumentError('allReduce', 'a function', options.allReduce);
    }
    const timeoutMs = options.timeoutMs ?? 60_000;
    if (!(timeoutMs > 0))
      throw new InvalidArgumentError('timeoutMs', 'a positive number', timeoutMs);
    this.rank = rank;
    this.worldSize = worldSize;
    this.allReduce = options.allReduce;
    this.timeoutMs = timeoutMs;
  }

  /** The current wave number (carried by start-wave messages). */
  get wave(): number {
    return this.currentWave;
  }

  /** This rank must keep stepping and syncing. */
  get engaged(): boolean {
    return this.isEngaged;
  }

  /** A pause was requested here and not yet agreed by all ranks. */
  get pendingPause(): boolean {
    return this.pending;
  }

  /** All ranks agreed to pause; nothing starts until resume(). */
  get paused(): boolean {
    return this.isPaused;
  }

  /** Phase 1. Returns the wave to broadcast if this engaged an idle rank, else null. */
  requestPause(): number | null {
    if (this.isPaused || this.pending) return null;
    this.pending = true;
    return this.engage();
  }

  /** A request arrived locally. Returns the wave to broadcast if this rank just engaged. */
  startLocalWave(): number | null {
    if (this.isPaused) return null; // queued; resume() engages every rank
    return this.engage();
  }

  /** A peer's "start wave N". Returns true if this rank engaged because of it. */
  onStartWave(wave: number): boolean {
    if (this.isPaused || this.pending || this.isEngaged || wave < this.currentWave) return false;
    this.isEngaged = true;
    return true;
  }

  /** The periodic sync (a collective: every engaged rank calls it at the same step). */
  async sync(local: { hasUnfinished: boolean; quiesced: boolean }): Promise<SyncResult> {
    const wants = this.pending && local.quiesced;
    const [unfinished, wanting, pendingCount] = await this.allReduce(
      [local.hasUnfinished ? 1 : 0, wants ? 1 : 0, this.pending ? 1 : 0],
      this.timeoutMs,
    );
    const result: SyncResult = {
      anyUnfinished: unfinished! > 0,
      paused: wanting === this.worldSize,
      waveEnded: false,
    };
    if (result.paused) {
      this.isPaused = true;
      this.pending = false;
      this.isEngaged = false;
      this.currentWave++;
    } else if (!result.anyUnfinished && pendingCount === 0) {
      result.waveEnded = true;
      this.isEngaged = false;
      this.currentWave++;
    }
    return result;
  }

  /** Leaves the paused state and engages in a new wave (every rank resumes into one sync). */
  resume(): void {
    if (!this.isPaused) return;
    this.isPaused = false;
    this.isEngaged = true;
  }

  private engage(): number | null {
    if (this.isEngaged) return null;
    this.isEngaged = true;
    return this.currentWave;
  }
}
