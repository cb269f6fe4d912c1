import { XError } from '@x/core';

/** What the engine is doing instead of serving. */
export type UnavailableState = 'pausing' | 'paused' | 'sleeping' | 'weights-invalid';

/**
 * The engine does not take new requests now: it is pausing, paused, asleep, or waiting for its
 * weights after a level-2 sleep. Retryable: the server answers 503 with Retry-After.
 */
export class EngineUnavailableError extends XError {
  readonly state: UnavailableState;
  constructor(state: UnavailableState) {
    const why = {
      pausing: 'is pausing',
      paused: 'is paused (POST /resume)',
      sleeping: 'is asleep (POST /wake_up)',
      'weights-invalid': 'has no valid weights after a level-2 sleep (POST /reload_weights)',
    }[state];
    super('X_ASLEEP', `the engine ${why}; retry later`);
    this.state = state;
  }
}

/** The engine loop failed; nothing more is served. `reason` is the failure. */
export class EngineDeadError extends XError {
  readonly reason: string;
  constructor(reason: string) {
    super('X_INTERNAL', `the engine stopped after an error: ${reason}`);
    this.reason = reason;
  }
}
