import { Etcd3, type Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { readEtcdCredentials } from '../etcd/etcd3-source.ts';

/** What the rest of the daemon needs to know about leadership. */
export interface Leadership {
  isLeader(): boolean;
  /** The identity of the current leader, as last seen; undefined when there is none. */
  leader(): string | undefined;
}

export interface ElectionOptions {
  etcd: Config['etcd'];
  /** This instance's identity, shown to clients of a non-leader (the node name). */
  identity: string;
  /** The election's key prefix, one per cluster, e.g. `/lifeboat/election/prod`. */
  key: string;
  ttlSeconds: number;
  log: Logger;
  /** Called on every change of this instance's leadership. */
  onChange?: (isLeader: boolean) => void;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

/**
 * Leader election on etcd itself, as etcd's own election recipe: each candidate puts a key
 * `<key>/<lease id>` under a lease of `ttlSeconds`, kept alive while it runs; the candidate whose
 * key was created first leads. Candidates poll the keys (at least every second, and three times
 * per TTL) rather than watch them: a watch from an old revision breaks when etcd is restored
 * under it, and an open watch keeps a process from exiting.
 *
 * If the leader dies, its lease expires and the next candidate leads within about the TTL plus
 * one poll. `stop()` revokes the lease first (closing the client alone does not stop the
 * keepalives, so a closed leader would keep its leadership for up to the TTL), and the next
 * candidate leads at its next poll. If this instance's lease is lost (etcd unreachable for longer
 * than the TTL, or restored without it), it stops leading at once and campaigns again with
 * backoff.
 */
export class EtcdLeaderElection implements Leadership {
  readonly #options: ElectionOptions;
  #client: Etcd3 | undefined;
  readonly #prefix: string;
  readonly #pollMs: number;
  #lease: Lease | undefined;
  #ownKey: string | undefined;
  #isLeader = false;
  #leader: string | undefined;
  #stopped = false;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #polling = false;

  constructor(options: ElectionOptions) {
    this.#options = options;
    this.#prefix = `${options.key.replace(/\/+$/, '')}/`;
    this.#pollMs = Math.min(1000, (options.ttlSeconds * 1000) / 3);
  }

  /**
   * The etcd client, made at the first campaign: on a host being restored into a fresh control
   * plane the TLS files do not exist yet, and the daemon must serve (the restore API) meanwhile.
   */
  #connect(): Etcd3 {
    this.#client ??= new Etcd3({
      hosts: [...this.#options.etcd.endpoints],
      credentials: readEtcdCredentials(this.#options.etcd.tls),
      dialTimeout: this.#options.etcd.dialTimeoutMs,
      grpcOptions: { 'grpc.ssl_target_name_override': this.#options.etcd.tls.serverName },
    });
    return this.#client;
  }

  isLeader(): boolean {
    return this.#isLeader;
  }

  leader(): string | undefined {
    return this.#isLeader ? this.#options.identity : this.#leader;
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
    const wasLeader = this.#isLeader;
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
      await lease.put(key).value(this.#options.identity);
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

  /** Reads who leads: the candidate key created first. */
  async #poll(): Promise<void> {
    const client = this.#client;
    if (this.#stopped || this.#polling || !client) return;
    this.#polling = true;
    try {
      const res = await withTimeout(
        client.getAll().prefix(this.#prefix).sort('Create', 'Ascend').limit(1).exec(),
        this.#options.etcd.dialTimeoutMs,
      );
      if (this.#stopped) return;
      const first = res.kvs[0];
      this.#leader = first?.value.toString();
      this.#set(first !== undefined && this.#ownKey !== undefined && first.key.toString() === this.#ownKey);
    } catch (err) {
      // Leadership is kept until the lease is lost: etcd unreachable for less than the TTL is not a reason to step down.
      this.#options.log.debug({ err: (err as Error).message }, 'could not read the current leader');
    } finally {
      this.#polling = false;
    }
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
