import { TimeoutError } from '@x/core';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Promises that resolve once a condition holds (checked by `check()` after every engine step),
 * each bounded by a timeout — the engine's drains never wait forever (DESIGN.md rule 8).
 */
export class ConditionWaiters {
  readonly #condition: () => boolean;
  readonly #waiters = new Set<Waiter>();

  constructor(condition: () => boolean) {
    this.#condition = condition;
  }

  /** Resolves when the condition holds; TimeoutError naming `operation` after `timeoutMs`. */
  wait(timeoutMs: number, operation: string): Promise<void> {
    if (this.#condition()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(w);
          reject(new TimeoutError(operation, timeoutMs));
        }, timeoutMs),
      };
      this.#waiters.add(w);
    });
  }

  /** Resolves every waiter if the condition holds now. */
  check(): void {
    if (this.#waiters.size === 0 || !this.#condition()) return;
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.resolve();
    }
    this.#waiters.clear();
  }

  /** Rejects every waiter (the engine died or shut down). */
  fail(err: Error): void {
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.#waiters.clear();
  }
}
