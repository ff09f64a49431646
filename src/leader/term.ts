/**
 * How long this instance may act as the leader after etcd last confirmed it: a window of a
 * fraction (by default half) of the lease TTL, counted on a monotonic clock from when the
 * confirming request was sent (etcd refreshed the lease at or after that moment, so the lease
 * outlives the window by at least TTL/2 even if nothing answers any more). Another candidate can
 * lead only once our lease has expired in etcd, which is after our window has ended here.
 *
 * The remaining half of the TTL is the margin for what the clock cannot see: a process paused
 * (GC, a stopped VM) between a check and the work it guards, and etcd's lease clock running a
 * little fast.
 */
export interface LeaderTermOptions {
  ttlSeconds: number;
  /** A monotonic clock in milliseconds; performance.now() by default. */
  clock?: () => number;
  /** The share of the TTL a confirmation lasts; 0.5 by default. */
  fraction?: number;
}

export class LeaderTerm {
  readonly windowMs: number;
  readonly #clock: () => number;
  #confirmedAt: number | undefined;

  constructor(options: LeaderTermOptions) {
    this.windowMs = options.ttlSeconds * 1000 * (options.fraction ?? 0.5);
    this.#clock = options.clock ?? (() => performance.now());
  }

  /** etcd confirmed our lease and key in answer to a request sent at `sentAt` (on the same clock). */
  confirm(sentAt: number): void {
    if (this.#confirmedAt === undefined || sentAt > this.#confirmedAt) this.#confirmedAt = sentAt;
  }

  /** Leadership is over (lost, resigned, another key is first). */
  end(): void {
    this.#confirmedAt = undefined;
  }

  valid(): boolean {
    return this.remainingMs() > 0;
  }

  /** Milliseconds until the window ends; 0 or less once it has. */
  remainingMs(): number {
    return this.#confirmedAt === undefined ? 0 : this.#confirmedAt + this.windowMs - this.#clock();
  }

  now(): number {
    return this.#clock();
  }
}
