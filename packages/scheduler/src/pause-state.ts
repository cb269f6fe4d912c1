import { InvalidArgumentError } from '@x/core';

/** How pause() treats unfinished requests (vLLM's `POST /pause?mode=`). */
export type PauseMode = 'abort' | 'wait' | 'keep';

/** The scheduler's serving state. */
export type SchedulerState = 'running' | 'pausing' | 'paused' | 'sleeping';

/** Sleep level: 1 = weights offloaded and KV discarded; 2 = both discarded (reload weights). */
export type SleepLevel = 1 | 2;

export const PAUSE_MODES: readonly PauseMode[] = ['abort', 'wait', 'keep'];

/** A call that the scheduler's current state does not allow (e.g. sleep() while running). */
export class SchedulerStateError extends InvalidArgumentError {
  readonly state: SchedulerState;
  constructor(operation: string, expected: string, state: SchedulerState) {
    super(`the scheduler state for ${operation}`, expected, state);
    this.state = state;
  }
}

/**
 * The pause/sleep state machine of one scheduler:
 *
 *   running --pause(mode)--> pausing --(quiesced)--> paused --sleep(level)--> sleeping
 *   sleeping --wakeUp()--> paused --resume()--> running        pausing --resume()--> running
 *
 * "Quiesced" means no step in flight and, for mode 'wait', no running request left. While
 * pausing, a stricter mode may replace a looser one ('wait' → 'keep' → 'abort', the escalation a
 * drain timeout uses). Level-2 sleep invalidates weights: resume() refuses until
 * markWeightsLoaded(). Repeated pause, sleep or wake calls are no-ops returning false.
 */
export class PauseState {
  private current: SchedulerState = 'running';
  private pauseMode: PauseMode | null = null;
  private level: SleepLevel | null = null;
  private weightsOk = true;

  get state(): SchedulerState {
    return this.current;
  }

  get mode(): PauseMode | null {
    return this.pauseMode;
  }

  get sleepLevel(): SleepLevel | null {
    return this.level;
  }

  get weightsValid(): boolean {
    return this.weightsOk;
  }

  /** May new requests be admitted from the waiting queue? */
  get admits(): boolean {
    return this.current === 'running';
  }

  /** May running requests be stepped? (running, or draining in mode 'wait') */
  get steps(): boolean {
    return this.current === 'running' || (this.current === 'pausing' && this.pauseMode === 'wait');
  }

  /** Starts pausing. Returns false when already paused or asleep, or when `mode` is looser. */
  pause(mode: PauseMode): boolean {
    if (!PAUSE_MODES.includes(mode)) {
      throw new InvalidArgumentError('mode', "one of 'abort', 'wait', 'keep'", mode);
    }
    if (this.current === 'paused' || this.current === 'sleeping') return false;
    if (this.current === 'pausing' && rank(mode) <= rank(this.pauseMode!)) return false;
    this.current = 'pausing';
    this.pauseMode = mode;
    return true;
  }

  /** Called by the scheduler once quiesced. */
  markPaused(): void {
    if (this.current === 'pausing') this.current = 'paused';
  }

  /** Back to running. Throws while asleep or while weights are invalid. */
  resume(): boolean {
    if (this.current === 'sleeping') {
      throw new SchedulerStateError('resume()', 'not sleeping (call wakeUp() first)', this.current);
    }
    if (!this.weightsOk) {
      throw new SchedulerStateError(
        'resume()',
        'valid weights (level-2 sleep discarded them: reload, then markWeightsLoaded())',
        this.current,
      );
    }
    if (this.current === 'running') return false;
    this.current = 'running';
    this.pauseMode = null;
    return true;
  }

  /** paused → sleeping. Throws unless paused; no-op when already asleep. */
  sleep(level: SleepLevel): boolean {
    if (level !== 1 && level !== 2) throw new InvalidArgumentError('level', '1 or 2', level);
    if (this.current === 'sleeping') {
      if (level === 2 && this.level === 1) {
        throw new SchedulerStateError(
          'sleep(2)',
          'awake (already asleep at level 1)',
          this.current,
        );
      }
      return false;
    }
    if (this.current !== 'paused') {
      throw new SchedulerStateError(
        'sleep()',
        'paused (pause() and step until isPaused)',
        this.current,
      );
    }
    this.current = 'sleeping';
    this.level = level;
    if (level === 2) this.weightsOk = false;
    return true;
  }

  /** sleeping → paused. No-op when not asleep. */
  wakeUp(): boolean {
    if (this.current !== 'sleeping') return false;
    this.current = 'paused';
    this.level = null;
    return true;
  }

  /** Weights were reloaded after a level-2 sleep. */
  markWeightsLoaded(): void {
    this.weightsOk = true;
  }

  /** Weights are not usable (being rewritten, or a rewrite failed). */
  markWeightsInvalid(): void {
    this.weightsOk = false;
  }
}

function rank(mode: PauseMode): number {
  return mode === 'wait' ? 0 : mode === 'keep' ? 1 : 2;
}
