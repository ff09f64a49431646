import type { Etcd3, Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { etcdClient } from '../etcd/client.ts';
import { encodeAdvert, parseAdvert, type LeaderAdvert } from './advert.ts';
import { LeaderTerm } from './term.ts';

/** What the rest of the daemon needs to know about leadership. */
export interface Leadership {
  isLeader(): boolean;
  /** The identity of the current leader, as last seen; undefined when there is none. */
  leader(): string | undefined;
}

/** Leadership, and where the leader's API is: what a follower needs to forward a request to it. */
export interface LeaderDirectory extends Leadership {
  /** The current leader's API URL, as it published it; undefined when no leader is known or it did not say (an older version). */
  leaderApiUrl(): string | undefined;
}

export interface ElectionOptions {
  etcd: Config['etcd'];
  /** This instance's identity, shown to clients of a non-leader (the node name). */
  identity: string;
  /** This instance's API URL (https://host:port), published with the identity for followers to forward to. */
  apiUrl?: string;
  /** The election's key prefix, one per cluster, e.g. `/lifeboat/election/prod`. */
  key: string;
  ttlSeconds: number;
  log: Logger;
  /** Called on every change of this instance's leadership. */
  onChange?: (isLeader: boolean) => void;
  /** A monotonic clock in milliseconds (performance.now() by default): how long a confirmation lasts is measured on it. */
  clock?: () => number;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

/**
 * Leader election on etcd itself, as etcd's own election recipe: each candidate puts a key
 * `<key>/<lease id>` under a lease of `ttlSeconds`, kept alive while it runs; the candidate whose
 * key was created first leads. Candidates poll the keys (at least every second, and four times
 * per TTL) rather than watch them: a watch from an old revision breaks when etcd is restored
 * under it, and an open watch keeps a process from exiting.
 *
 * One leader at a time: each poll also sends a keepalive of our lease, and a poll that finds our
 * key first with the keepalive answered confirms our leadership for TTL/2 from when it was sent
 * (term.ts). No answer, no confirmation: a leader that cannot reach etcd stops leading once its
 * last confirmation is TTL/2 old, while etcd keeps its lease, and so its key, for at least TTL
 * after that keepalive; only then can another candidate find its own key first. (etcd3's Lease
 * reports itself lost only after 2 × TTL without a keepalive, by which time another instance may
 * have led for a whole TTL: it is not what decides leadership here.) A leader that lost its term
 * but whose lease survived leads again at its next confirming poll.
 *
 * If the leader dies, its lease expires and the next candidate leads within about the TTL plus
 * one poll. `stop()` revokes the lease first (closing the client alone does not stop the
 * keepalives, so a closed leader would keep its key for up to the TTL), and the next
 * candidate leads at its next poll. If this instance's lease is lost (etcd says it is gone, or
 * restored without it), it stops leading at once and campaigns again with backoff.
 */
export class EtcdLeaderElection implements LeaderDirectory {
  readonly #options: ElectionOptions;
  #client: Etcd3 | undefined;
  readonly #prefix: string;
  readonly #pollMs: number;
  #lease: Lease | undefined;
  #ownKey: string | undefined;
  #isLeader = false;
  #leader: LeaderAdvert | undefined;
  #stopped = false;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #polling = false;
  readonly #term: LeaderTerm;

  constructor(options: ElectionOptions) {
    this.#options = options;
    this.#prefix = `${options.key.replace(/\/+$/, '')}/`;
    this.#pollMs = Math.min(1000, (options.ttlSeconds * 1000) / 4);
    this.#term = new LeaderTerm({ ttlSeconds: options.ttlSeconds, ...(options.clock ? { clock: options.clock } : {}) });
  }

  /**
   * The etcd client, made at the first campaign: on a host being restored into a fresh control
   * plane the TLS files do not exist yet, and the daemon must serve (the restore API) meanwhile.
   */
  #connect(): Etcd3 {
    this.#client ??= etcdClient({ endpoints: this.#options.etcd.endpoints, tls: this.#options.etcd.tls, dialTimeoutMs: this.#options.etcd.dialTimeoutMs });
    return this.#client;
  }

  /** True only while the last confirmation is younger than TTL/2, whether or not a timer has run since. */
  isLeader(): boolean {
    return this.#isLeader && this.#term.valid();
  }

  leader(): string | undefined {
    return this.#current()?.node;
  }

  leaderApiUrl(): string | undefined {
    return this.#current()?.apiUrl;
  }

  #current(): LeaderAdvert | undefined {
    if (this.isLeader()) return { node: this.#options.identity, ...(this.#options.apiUrl === undefined ? {} : { apiUrl: this.#options.apiUrl }) };
    // Our own key first but unconfirmed: nobody is known to lead.
    return this.#leader?.node === this.#options.identity ? undefined : this.#leader;
  }

  start(): void {
    void this.#campaign();
    this.#pollTimer = setInterval(() => void this.#poll(), this.#pollMs);
    this.#pollTimer.unref();
  }

  /** Revokes this instance's lease (resigning if it leads) and closes the etcd client. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#pollTimer);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#expiryTimer);
    const wasLeader = this.#isLeader;
    this.#term.end();
    this.#set(false);
    const lease = this.#lease;
    this.#lease = undefined;
    if (lease) {
      const started = performance.now();
      try {
        await withTimeout(lease.revoke(), this.#options.etcd.dialTimeoutMs);
        this.#options.log.info({ phase: 'resigned', wasLeader, durationMs: Math.round(performance.now() - started) }, 'left the leader election');
      } catch (err) {
        this.#options.log.warn({ err: (err as Error).message }, 'could not resign; the lease expires after its TTL');
      }
    }
    this.#client?.close();
  }

  async #campaign(): Promise<void> {
    if (this.#stopped) return;
    let client: Etcd3;
    try {
      client = this.#connect();
    } catch (err) {
      this.#options.log.warn({ err: (err as Error).message, retryMs: this.#retryMs }, 'cannot join the leader election yet; trying again');
      this.#retryLater();
      return;
    }
    const lease = client.lease(this.#options.ttlSeconds);
    this.#lease = lease;
    lease.on('lost', (err) => this.#lost(lease, err));
    try {
      const id = await lease.grant();
      if (this.#stopped || this.#lease !== lease) return;
      const key = `${this.#prefix}${id}`;
      await lease.put(key).value(encodeAdvert({ node: this.#options.identity, ...(this.#options.apiUrl === undefined ? {} : { apiUrl: this.#options.apiUrl }) }));
      this.#ownKey = key;
      this.#retryMs = RETRY_MIN_MS;
      await this.#poll();
    } catch (err) {
      this.#lost(lease, err as Error);
    }
  }

  /** Our lease is gone (or could not be made): stop leading, campaign again after a backoff. */
  #lost(lease: Lease, err: Error): void {
    if (this.#stopped || this.#lease !== lease) return;
    this.#lease = undefined;
    this.#ownKey = undefined;
    const wasLeader = this.#isLeader;
    this.#term.end();
    this.#set(false);
    void lease.revoke().catch(() => undefined);
    this.#options.log.warn({ err: err.message, wasLeader, retryMs: this.#retryMs }, 'the leader election lost its lease; campaigning again');
    this.#retryLater();
  }

  #retryLater(): void {
    this.#retryTimer = setTimeout(() => void this.#campaign(), this.#retryMs * (0.5 + Math.random()));
    this.#retryTimer.unref();
    this.#retryMs = Math.min(RETRY_MAX_MS, this.#retryMs * 2);
  }

  /**
   * Reads who leads (the candidate key created first) and keeps our lease alive; when our key is
   * first and the keepalive was answered, our leadership is confirmed from the moment both were sent.
   */
  async #poll(): Promise<void> {
    const client = this.#client;
    if (this.#stopped || this.#polling || !client) return;
    this.#polling = true;
    const lease = this.#lease;
    const ownKey = this.#ownKey;
    const sentAt = this.#term.now();
    try {
      const [res] = await withTimeout(
        Promise.all([
          client.getAll().prefix(this.#prefix).sort('Create', 'Ascend').limit(1).exec(),
          // A lease etcd no longer has rejects here, and the lease reports itself lost (#lost).
          lease && ownKey !== undefined ? lease.keepaliveOnce() : undefined,
        ]),
        this.#options.etcd.dialTimeoutMs,
      );
      if (this.#stopped) return;
      const first = res.kvs[0];
      this.#leader = first === undefined ? undefined : parseAdvert(first.value.toString());
      const ours = first !== undefined && ownKey !== undefined && this.#ownKey === ownKey && this.#lease === lease && first.key.toString() === ownKey;
      if (ours) this.#term.confirm(sentAt);
      else this.#term.end();
    } catch (err) {
      // Nothing is confirmed: leadership lasts until the last confirmation is TTL/2 old, no longer.
      this.#options.log.debug({ err: (err as Error).message, leaderForMs: Math.max(0, Math.round(this.#term.remainingMs())) }, 'could not confirm the current leader');
    } finally {
      this.#polling = false;
      if (!this.#stopped) this.#refresh();
    }
  }

  /** Leads while the term lasts; a timer ends it when it runs out, so onChange fires even if no poll returns. */
  #refresh(): void {
    clearTimeout(this.#expiryTimer);
    const remaining = this.#term.remainingMs();
    if (remaining <= 0 && this.#isLeader && this.#lease) {
      this.#options.log.warn({ phase: 'not-confirmed', windowMs: this.#term.windowMs }, 'etcd has not confirmed this leader for half the lease TTL; stepping down before the lease can expire');
    }
    this.#set(remaining > 0);
    if (remaining <= 0) return;
    this.#expiryTimer = setTimeout(() => this.#refresh(), Math.ceil(remaining) + 1);
    this.#expiryTimer.unref();
  }

  #set(isLeader: boolean): void {
    if (this.#isLeader === isLeader) return;
    this.#isLeader = isLeader;
    this.#options.log.info({ phase: isLeader ? 'elected' : 'not-leader', identity: this.#options.identity }, isLeader ? 'this instance is the leader' : 'this instance is no longer the leader');
    this.#options.onChange?.(isLeader);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
