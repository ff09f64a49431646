import type { Logger } from 'pino';

/** What the hold needs of the election (PausableElection). */
export interface PausableLeadership {
  pause(): Promise<void>;
  resume(): void;
}

export interface RestoreHoldDeps {
  election: PausableLeadership;
  /**
   * The restore on this node that has touched it and is neither done nor rolled back (restores.ts
   * `unfinishedLiveRestore`, read from the restore journals on disk); undefined when there is none.
   */
  openRestore: () => Promise<string | undefined>;
  log: Logger;
}

/**
 * Keeps this daemon out of the leader election for the whole span of a restore on its node,
 * not just while one of its steps runs: from the first step that touches the node past the fetch
 * until the restore is done or rolled back, across the phases of `restore apply --all` and
 * across restarts of the daemon.
 *
 * Why here and not in etcd: an in-place restore replaces etcd's data, so a "restore running"
 * key in etcd would vanish with the data it was written into (the snapshot predates it), just
 * when the restored members start. The restore journal on the node's disk survives both the
 * restore and a crash. `apply --all` restores every member (orchestrate.ts refuses fewer), and a
 * daemon runs on each control-plane node, so every daemon that could lead holds; between the
 * phases etcd is down or holds half-restored data, and none of them backs up or prunes it.
 * While held, leader-only jobs are refused at start (NOT_LEADER), since this instance does not
 * lead. A daemon outside the restored members is not held: between stop-etcd and start-etcd
 * it cannot lead (no etcd), but after start-etcd it could.
 *
 * When the journal cannot be read after a step the hold stays (it fails closed); the next
 * restore job on the node, or a restart, reads it again.
 */
export class RestoreHold {
  readonly #deps: RestoreHoldDeps;
  #held: string | undefined;

  constructor(deps: RestoreHoldDeps) {
    this.#deps = deps;
  }

  /** The restore that holds this daemon out of the election, if any. */
  held(): string | undefined {
    return this.#held;
  }

  /** At start, before the election starts: a restore the last process left unfinished holds it. */
  async recover(): Promise<void> {
    let open: string | undefined;
    try {
      open = await this.#deps.openRestore();
    } catch (err) {
      open = 'unknown';
      this.#deps.log.error({ err: (err as Error).message }, 'cannot read the restore journals; staying out of the leader election until a restore job reads them');
    }
    if (open === undefined) return;
    await this.#hold(open);
    this.#deps.log.warn({ phase: 'election-held', restoreId: open }, `restore ${open} on this node is unfinished: this daemon stays out of the leader election (no backup, no prune) until it is applied to the end or rolled back`);
  }

  /** Runs a restore step (not a dry run) out of the election; stays out afterwards while the restore is unfinished. */
  async during<T>(restoreId: string, run: () => Promise<T>): Promise<T> {
    if (this.#held === undefined) {
      this.#deps.log.info({ phase: 'election-paused', restoreId }, `leaving the leader election while restore ${restoreId} runs on this node`);
      await this.#hold(restoreId);
    }
    try {
      return await run();
    } finally {
      await this.#settle(restoreId);
    }
  }

  async #hold(restoreId: string): Promise<void> {
    this.#held = restoreId;
    await this.#deps.election.pause();
  }

  async #settle(restoreId: string): Promise<void> {
    let open: string | undefined;
    try {
      open = await this.#deps.openRestore();
    } catch (err) {
      this.#deps.log.error({ restoreId, err: (err as Error).message }, 'cannot read the restore journals after a restore step; staying out of the leader election');
      return;
    }
    if (open !== undefined) {
      this.#held = open;
      this.#deps.log.info({ phase: 'election-held', restoreId: open }, `restore ${open} is unfinished on this node: staying out of the leader election until it is done or rolled back`);
      return;
    }
    this.#held = undefined;
    this.#deps.election.resume();
    this.#deps.log.info({ phase: 'election-resumed', restoreId }, 'no unfinished restore on this node: joining the leader election again');
  }
}
