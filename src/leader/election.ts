import { Etcd3, type Campaign, type Election } from 'etcd3';
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
  /** The election's key, one per cluster, e.g. `/lifeboat/election/prod`. */
  key: string;
  ttlSeconds: number;
  log: Logger;
  /** Called on every change of this instance's leadership. */
  onChange?: (isLeader: boolean) => void;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

/**
 * Leader election on etcd itself (etcd3's Election: a key under a lease of `ttlSeconds`; the
 * oldest key wins). If the leader dies, its lease expires and another instance takes over
 * within about the TTL. `stop()` resigns first: closing the etcd client alone does not stop
 * the lease keepalives, so a closed leader would keep its leadership for a while.
 *
 * If this instance's lease is lost (etcd unreachable for longer than the TTL), it stops being
 * leader at once and campaigns again with backoff.
 */
export class EtcdLeaderElection implements Leadership {
  readonly #options: ElectionOptions;
  readonly #client: Etcd3;
  readonly #election: Election;
  #campaign: Campaign | undefined;
  #isLeader = false;
  #leader: string | undefined;
  #stopped = false;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;

  constructor(options: ElectionOptions) {
    this.#options = options;
    this.#client = new Etcd3({
      hosts: [...options.etcd.endpoints],
      credentials: readEtcdCredentials(options.etcd.tls),
      dialTimeout: options.etcd.dialTimeoutMs,
      grpcOptions: { 'grpc.ssl_target_name_override': options.etcd.tls.serverName },
    });
    this.#election = this.#client.election(options.key, options.ttlSeconds);
  }

  isLeader(): boolean {
    return this.#isLeader;
  }

  leader(): string | undefined {
    return this.#isLeader ? this.#options.identity : this.#leader;
  }

  start(): void {
    this.#campaignNow();
    const pollMs = Math.max(1000, (this.#options.ttlSeconds * 1000) / 3);
    this.#pollTimer = setInterval(() => void this.#observe(), pollMs);
    this.#pollTimer.unref();
    void this.#observe();
  }

  /** Resigns (if leader) and closes the etcd client. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#pollTimer);
    clearTimeout(this.#retryTimer);
    const campaign = this.#campaign;
    this.#campaign = undefined;
    const wasLeader = this.#isLeader;
    this.#set(false);
    if (campaign) {
      const started = performance.now();
      try {
        await withTimeout(campaign.resign(), this.#options.etcd.dialTimeoutMs);
        this.#options.log.info({ phase: 'resigned', wasLeader, durationMs: Math.round(performance.now() - started) }, 'left the leader election');
      } catch (err) {
        this.#options.log.warn({ err: (err as Error).message }, 'could not resign; the lease expires after its TTL');
      }
    }
    this.#client.close();
  }

  #campaignNow(): void {
    if (this.#stopped) return;
    const campaign = this.#election.campaign(this.#options.identity);
    this.#campaign = campaign;
    campaign.on('elected', () => {
      if (this.#campaign !== campaign) return;
      this.#retryMs = RETRY_MIN_MS;
      this.#leader = this.#options.identity;
      this.#set(true);
    });
    campaign.on('error', (err: Error) => {
      if (this.#campaign !== campaign) return;
      this.#campaign = undefined;
      const wasLeader = this.#isLeader;
      this.#set(false);
      this.#options.log.warn({ err: err.message, wasLeader, retryMs: this.#retryMs }, 'the leader election failed; campaigning again');
      void campaign.resign().catch(() => undefined);
      this.#retryTimer = setTimeout(() => this.#campaignNow(), this.#retryMs * (0.5 + Math.random()));
      this.#retryTimer.unref();
      this.#retryMs = Math.min(RETRY_MAX_MS, this.#retryMs * 2);
    });
  }

  async #observe(): Promise<void> {
    if (this.#stopped) return;
    try {
      this.#leader = await withTimeout(this.#election.leader(), this.#options.etcd.dialTimeoutMs);
    } catch (err) {
      this.#options.log.debug({ err: (err as Error).message }, 'could not read the current leader');
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
