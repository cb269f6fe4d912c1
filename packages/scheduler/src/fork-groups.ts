import type { Request } from './request.js';
import type { RequestQueue } from './request-queue.js';

/** Siblings of an n > 1 request; `held` wait until the first one has computed the prompt. */
interface ForkGroup {
  members: Request[];
  held: Request[];
}

/**
 * The n > 1 completions of each request: the first computes the prompt, the others are held and
 * then fork its full prompt blocks (see Scheduler). Owned by the Scheduler; O(n) per operation.
 */
export class ForkGroups {
  readonly #groups = new Map<string, ForkGroup>();
  readonly #waiting: RequestQueue;
  #numHeld = 0;

  constructor(waiting: RequestQueue) {
    this.#waiting = waiting;
  }

  /** Siblings held back (counted as waiting in stats). */
  get numHeld(): number {
    return this.#numHeld;
  }

  has(parentRequestId: string): boolean {
    return this.#groups.has(parentRequestId);
  }

  /** Parent ids of every group with an unfinished member. */
  parentIds(): string[] {
    return [...this.#groups.keys()];
  }

  /** Every completion of a group, or undefined for n = 1 requests. */
  members(parentRequestId: string): readonly Request[] | undefined {
    return this.#groups.get(parentRequestId)?.members;
  }

  /** Registers `members` (all n); all but the first are held. */
  add(parentRequestId: string, members: Request[]): void {
    this.#groups.set(parentRequestId, { members, held: members.slice(1) });
    this.#numHeld += members.length - 1;
  }

  /** Moves a group's held siblings into the waiting queue (the first computed the prompt or left). */
  release(parentRequestId: string): void {
    const g = this.#groups.get(parentRequestId);
    if (!g || g.held.length === 0) return;
    for (const r of g.held.reverse()) this.#waiting.prepend(r);
    this.#numHeld -= g.held.length;
    g.held = [];
  }

  /** Takes `r` out of its group's held list; false if it was not held. */
  unhold(r: Request): boolean {
    const g = this.#groups.get(r.parentRequestId);
    const h = g ? g.held.indexOf(r) : -1;
    if (h < 0) return false;
    g!.held.splice(h, 1);
    this.#numHeld--;
    return true;
  }

  /** `r` finished: release its siblings (it may have left before the prompt) and forget done groups. */
  onFinish(r: Request): void {
    const g = this.#groups.get(r.parentRequestId);
    if (!g) return;
    this.release(r.parentRequestId);
    if (g.members.every((m) => m.isFinished)) this.#groups.delete(r.parentRequestId);
  }

  /** A running sibling whose computed blocks cover the prompt, for n > 1 forks. */
  forkSource(r: Request): Request | undefined {
    const g = this.#groups.get(r.parentRequestId);
    return g?.members.find(
      (m) => m !== r && m.status === 'running' && m.numComputedTokens >= r.numPromptTokens,
    );
  }
}
