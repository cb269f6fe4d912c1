import type { Request } from './request.js';

/** Scheduling policy: first come first served, or lowest `priority` value first (vLLM's). */
export type SchedulingPolicy = 'fcfs' | 'priority';

/** The waiting queue. `prepend` puts a preempted request back where it resumes first. */
export interface RequestQueue extends Iterable<Request> {
  readonly size: number;
  add(request: Request): void;
  prepend(request: Request): void;
  peek(): Request | undefined;
  pop(): Request | undefined;
  /** Removes `request` if queued (O(n); aborts only). */
  remove(request: Request): boolean;
}

/** Creates the waiting queue for `policy`. */
export function createRequestQueue(policy: SchedulingPolicy): RequestQueue {
  return policy === 'priority' ? new PriorityQueue() : new FcfsQueue();
}

/** Orders by priority, then arrival time, then admission order. */
export function comparePriority(a: Request, b: Request): number {
  return a.priority - b.priority || a.arrivalTime - b.arrivalTime || a.seq - b.seq;
}

/** A deque on an array with a moving head: O(1) amortized at both ends. */
class FcfsQueue implements RequestQueue {
  private items: (Request | undefined)[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  add(request: Request): void {
    this.items.push(request);
  }

  prepend(request: Request): void {
    if (this.head > 0) this.items[--this.head] = request;
    else this.items.unshift(request);
  }

  peek(): Request | undefined {
    return this.items[this.head];
  }

  pop(): Request | undefined {
    if (this.head >= this.items.length) return undefined;
    const r = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return r;
  }

  remove(request: Request): boolean {
    const i = this.items.indexOf(request, this.head);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  *[Symbol.iterator](): Iterator<Request> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i]!;
  }
}

/** A binary min-heap by comparePriority; a preempted request keeps its key, so it resumes early. */
class PriorityQueue implements RequestQueue {
  private readonly heap: Request[] = [];

  get size(): number {
    return this.heap.length;
  }

  add(request: Request): void {
    this.heap.push(request);
    this.up(this.heap.length - 1);
  }

  prepend(request: Request): void {
    this.add(request);
  }

  peek(): Request | undefined {
    return this.heap[0];
  }

  pop(): Request | undefined {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (top !== undefined && last !== undefined && this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
    return top;
  }

  remove(request: Request): boolean {
    const i = this.heap.indexOf(request);
    if (i < 0) return false;
    const last = this.heap.pop()!;
    if (i < this.heap.length) {
      this.heap[i] = last;
      this.down(i);
      this.up(i);
    }
    return true;
  }

  *[Symbol.iterator](): Iterator<Request> {
    yield* [...this.heap].sort(comparePriority);
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (comparePriority(h[i]!, h[p]!) >= 0) return;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && comparePriority(h[l]!, h[m]!) < 0) m = l;
      if (r < h.length && comparePriority(h[r]!, h[m]!) < 0) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
