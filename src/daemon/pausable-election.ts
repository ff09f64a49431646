import type { LeaderDirectory, Leadership } from '../leader/election.ts';

/** What PausableElection needs of an election. */
export interface StartableElection extends Leadership {
  /** The leader's API URL, when the election knows it (LeaderDirectory). */
  leaderApiUrl?(): string | undefined;
  start(): void;
  stop(): Promise<void>;
}

/**
 * The daemon's leader election, left while this node's etcd is being restored and joined again
 * with a new etcd client afterwards. While paused this instance is not the leader, so no
 * schedule fires here while its etcd is being replaced (a backup of a half-restored cluster would
 * be worse than none), and its old lease, which the restored etcd never heard of, is not kept
 * alive against it.
 */
export class PausableElection implements LeaderDirectory {
  readonly #make: () => StartableElection;
  #current: StartableElection | undefined;
  #pauses = 0;
  #stopped = false;
  #stopping: Promise<void> = Promise.resolve();

  constructor(make: () => StartableElection) {
    this.#make = make;
  }

  isLeader(): boolean {
    return this.#current?.isLeader() ?? false;
  }

  leader(): string | undefined {
    return this.#current?.leader();
  }

  leaderApiUrl(): string | undefined {
    return this.#current?.leaderApiUrl?.();
  }

  start(): void {
    if (this.#stopped || this.#pauses > 0 || this.#current) return;
    this.#current = this.#make();
    this.#current.start();
  }

  /** Leaves the election (resigns, closes the client); nested pauses need as many resumes. */
  async pause(): Promise<void> {
    this.#pauses += 1;
    const current = this.#current;
    this.#current = undefined;
    if (current) this.#stopping = current.stop();
    await this.#stopping;
  }

  /** Joins the election again with a new client, once every pause has been resumed. */
  resume(): void {
    this.#pauses = Math.max(0, this.#pauses - 1);
    if (this.#pauses === 0) this.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    const current = this.#current;
    this.#current = undefined;
    if (current) this.#stopping = current.stop();
    await this.#stopping;
  }
}
