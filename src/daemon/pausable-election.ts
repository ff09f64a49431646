import type { Leadership } from '../leader/election.ts';

/** What PausableElection needs of an election. */
export interface StartableElection extends Leadership {
  start(): void;
  stop(): Promise<void>;
}

/**
 * The daemon's leader election, left while this node's etcd is being restored and joined again
 * with a new etcd client afterwards.
 *
 * Why: a restore replaces the data under the election. An instance that waits for leadership
 * has a watch from an old revision; when its etcd comes back restored, the watch stream
 * reconnects, etcd refuses it as compacted, and the etcd client library throws from its stream
 * handler ("Failed to find watcher for IWatchResponse"), which ends the process. Closing the
 * client before etcd restarts keeps its stream from reconnecting, and a new client after the
 * restore watches from the restored revisions. While paused this instance is not the leader,
 * so no schedule fires here while its etcd is being replaced.
 */
export class PausableElection implements Leadership {
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
