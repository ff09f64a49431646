import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { createServers, type Servers } from '../api/server.ts';
import { BUILD_INFO } from '../build-info.ts';
import { etcdWatcher } from '../changes/watch.ts';
import type { Config } from '../config/schema.ts';
import { ConfigError, NotFoundError } from '../errors/errors.ts';
import type { Job } from '../jobs/job.ts';
import { DirectoryJobJournal } from '../jobs/journal.ts';
import { JobRunner } from '../jobs/runner.ts';
import { leaderGate, requireLeader } from '../jobs/leader-gate.ts';
import { advertisedApiUrl } from '../leader/advert.ts';
import { EtcdLeaderElection } from '../leader/election.ts';
import { InstrumentedStore } from '../metrics/instrumented-store.ts';
import { expectedIntervalSeconds } from '../metrics/interval.ts';
import { LifeboatMetrics } from '../metrics/metrics.ts';
import { Scheduler } from '../scheduler/scheduler.ts';
import { Catalog } from '../store/catalog.ts';
import { createStore } from '../store/create-store.ts';
import { backupSigner, loadSigning, type ManifestTrust } from '../signing/trust.ts';
import type { BackupStore } from '../store/store.ts';
import { daemonApiDeps } from './api-deps.ts';
import { changeLogService, realTimer, type ChangeLogService } from './change-log.ts';
import { FencedStore } from './fenced-store.ts';
import { createHandlers, handlerDeps } from './handlers.ts';
import { PausableElection } from './pausable-election.ts';
import { RestoreHold } from './restore-hold.ts';
import { unfinishedLiveRestore } from './restores.ts';

export interface DaemonOptions {
  config: Config;
  log: Logger;
  now?: () => Date;
}

/**
 * `lifeboat serve`: one instance per control-plane node. All of them serve the API and the
 * metrics; the one elected through etcd runs the schedules and, with changes.enabled, the change
 * log (change-log.ts). Every piece of work, scheduled or asked for over the API, goes through the
 * one JobRunner; restores are per node, so every instance takes them, leader or not.
 *
 * Start: recover the job journal (jobs a crash left running are marked failed) and the restore
 * journals (a restore a crash left mid-step is found and reported), seed the
 * metrics from the catalogue, campaign, arm the schedules, listen, and run a store cleanup.
 * Stop (SIGTERM): stop the schedules, let the running job finish within the grace period (else
 * abort it: it cleans up after itself), resign leadership, close the listeners.
 */
export class Daemon {
  readonly #parts: Parts;
  #stopping: Promise<void> | undefined;

  private constructor(parts: Parts) {
    this.#parts = parts;
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const { config, log } = options;
    const now = options.now ?? (() => new Date());
    if (config.encryption.recipients.length === 0) {
      throw new ConfigError('/encryption/recipients', 'no age recipient is configured, so no backup could be encrypted', {
        hint: 'run `lifeboat keygen --output key.txt` and put the printed age1... recipient in encryption.recipients',
      });
    }
    // Every daemon may lead and back up: without a signing key it would make backups nobody accepts.
    const signing = loadSigning(config.signing);
    backupSigner(signing);
    const metrics = new LifeboatMetrics({ cluster: config.cluster, node: config.node, version: BUILD_INFO.version });
    metrics.setStoreKind('primary', config.store.kind);
    if (config.secondaryStore) metrics.setStoreKind('secondary', config.secondaryStore.kind);
    const localOnly = localStoreWarning(config);
    if (localOnly) log.warn({ phase: 'config', store: 'fs', dir: config.store.kind === 'fs' ? config.store.dir : undefined }, localOnly);
    // Committing or deleting a manifest is a leader's decision: checked right before it happens (fenced-store.ts).
    const fence = () => requireLeader(election, config.node, 'a backup manifest is written or deleted only by the leader');
    const store = new FencedStore(new InstrumentedStore({ store: createStore(config.store), name: 'primary', metrics }), fence);
    const secondary = config.secondaryStore && new FencedStore(new InstrumentedStore({ store: createStore(config.secondaryStore), name: 'secondary', metrics }), fence);
    const catalog = daemonCatalog(store, config, signing.trust, metrics, log, now);
    const real = handlerDeps({ config, store, secondary, catalog, signing, metrics, now, log });
    const restores = real.restores;
    // A restore replaces the etcd data under the leader election: stay out of it until the
    // restore is done or rolled back, across the phases of apply --all (restore-hold.ts).
    const handlers = createHandlers({ ...real, duringRestore: (restoreId, run) => hold.during(restoreId, run) });
    // A leader-only job starts only if this instance still leads when its turn comes (leader-gate.ts).
    const mayStart = (job: Job) => leaderGate(election, config.node)(job);
    const runner = new JobRunner({ handlers, journal: new DirectoryJobJournal(config.daemon.stateDir, log), log, now, history: config.daemon.jobHistory, mayStart });
    await runner.recover();
    // A restore the last process was applying when it died: its job is failed now (above), and
    // its journal says where it stopped. Applying it again with the same token resumes it.
    for (const r of await restores.recover()) {
      log.warn(
        { phase: 'restore-interrupted', restoreId: r.id, step: r.step, dryRun: r.dryRun },
        r.dryRun
          ? `dry run ${r.id} was interrupted during ${r.step} and cleaned up; plan a new dry run to run it again`
          : `restore ${r.id} was interrupted during ${r.step}: apply it again with its confirmation token to resume (POST /v1/restores/${r.id}/apply, or the same \`lifeboat restore apply --all\` command), or roll it back (POST /v1/restores/${r.id}/rollback)`,
      );
    }

    const backupInterval = expectedIntervalSeconds(config.daemon.schedules.backup, config.daemon.schedules.timezone);
    metrics.setExpectedInterval(backupInterval, 'backup');
    metrics.setExpectedInterval(expectedIntervalSeconds(config.daemon.schedules.drill, config.daemon.schedules.timezone), 'drill');
    // In the background: reading every manifest of a large catalogue must not hold up the start.
    void seedMetrics(catalog, metrics, log, now, config.backup.maxClockSkewSeconds);

    // The change log (config changes): the leader's watch over etcd, committed in segments
    // between full backups. Its etcd client is made at the first watch, as the election's is.
    let watcher: ReturnType<typeof etcdWatcher> | undefined;
    const changeLog = config.changes.enabled
      ? changeLogService({
          config,
          store,
          signing,
          latestBackup: () => catalog.resolve('latest'),
          openWatch: (start) => (watcher ??= etcdWatcher(config.etcd, log)).open(start),
          encrypt: real.encrypt,
          isLeader: () => election.isLeader(),
          fence: () => requireLeader(election, config.node, 'a change segment manifest is written only by the leader'),
          submit: (request) => runner.submit(request),
          metrics: metrics.changes,
          timer: realTimer,
          log,
        })
      : undefined;

    let catchUp: () => void = () => undefined;
    // Known once the API listens (the port may be 0); the election starts after that.
    let apiUrl: string | undefined;
    const election = new PausableElection(() => new EtcdLeaderElection({
      etcd: config.etcd,
      identity: config.node,
      ...(apiUrl === undefined ? {} : { apiUrl }),
      key: `${config.daemon.election.prefix}${config.cluster}`,
      ttlSeconds: config.daemon.election.ttlSeconds,
      log,
      onChange: (leading) => {
        metrics.setLeader(leading);
        changeLog?.leadership(leading);
        if (leading) catchUp();
      },
    }));
    const hold = new RestoreHold({ election, openRestore: async () => unfinishedLiveRestore(await restores.list())?.plan.id, log });
    const scheduler = new Scheduler({
      schedules: config.daemon.schedules,
      cleanupIntervalSeconds: config.daemon.cleanupIntervalSeconds,
      submit: (request) => runner.submit(request),
      isLeader: () => election.isLeader(),
      log,
    });
    // A new leader takes the backup a dead leader missed: a scheduled backup that never ran is
    // a lost backup, and a failover must not lose one. Missed means: the schedule fired after
    // the newest committed backup was made.
    catchUp = () => {
      if (backupInterval === undefined) return;
      void catalog
        .resolve('latest')
        .catch((err: unknown) => {
          if (err instanceof NotFoundError) return undefined;
          throw err;
        })
        .then((newest) => {
          const tick = scheduler.previousRun('backup', now(), backupInterval + 60);
          const newestAt = newest ? new Date(newest.createdAt) : undefined;
          if (election.isLeader() && (!newestAt || (tick !== undefined && newestAt < tick))) {
            log.info({ phase: 'catch-up', newestBackup: newest?.backupId, missedTick: tick?.toISOString() }, 'a scheduled backup was missed (no backup since the last tick); backing up now');
            scheduler.tick('backup');
          }
        })
        .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'could not check whether a scheduled backup was missed'));
    };

    const parts: Parts = { config, log, metrics, runner, election, scheduler, changeLog, closeWatcher: () => watcher?.close(), servers: undefined, ready: false };
    const deps = daemonApiDeps({
      config,
      log,
      catalog,
      jobs: runner,
      leadership: election,
      restores: { engine: restores, identities: real.identities },
      changes: { store, trust: signing.trust, decrypt: real.decrypt },
      metrics,
      ready: () => (parts.ready ? { ready: true, reasons: [] } : { ready: false, reasons: ['starting or stopping'] }),
    });
    let ports: { apiPort: number; metricsPort: number };
    try {
      const servers = await createServers(deps);
      parts.servers = servers;
      ports = await servers.listen();
      apiUrl = advertisedApiUrl({ advertiseURL: config.api.advertiseURL, listenHost: config.api.listen.host, node: config.node, port: ports.apiPort });
    } catch (err) {
      await parts.servers?.close().catch(() => undefined);
      await runner.drain(0);
      await election.stop();
      throw err;
    }
    await hold.recover();
    election.start();
    scheduler.start();
    runner.submit({ kind: 'cleanup', trigger: 'startup', requestedBy: 'startup' });
    parts.ready = true;
    log.info({ phase: 'serving', apiPort: ports.apiPort, apiUrl, metricsPort: ports.metricsPort, node: config.node, cluster: config.cluster, version: BUILD_INFO.version, schedules: scheduler.nextRuns() }, 'lifeboat is serving');
    return new Daemon(parts);
  }

  /** Graceful stop; safe to call more than once. */
  stop(reason = 'stop requested'): Promise<void> {
    this.#stopping ??= this.#stop(reason);
    return this.#stopping;
  }

  async #stop(reason: string): Promise<void> {
    const { log, config, scheduler, runner, election, changeLog, servers } = this.#parts;
    const started = performance.now();
    this.#parts.ready = false;
    log.info({ phase: 'stopping', reason, graceSeconds: config.daemon.shutdownGraceSeconds }, 'stopping');
    await scheduler.stop();
    // While this instance still leads, so that what the change log holds is committed; no
    // longer than the grace period (a store that hangs: the next leader captures it again).
    if (changeLog) await Promise.race([changeLog.stop(), sleep(config.daemon.shutdownGraceSeconds * 1000, undefined, { ref: false })]);
    this.#parts.closeWatcher();
    const job = await runner.drain(config.daemon.shutdownGraceSeconds * 1000);
    await election.stop();
    this.#parts.metrics.setLeader(false);
    await servers?.close();
    log.info({ phase: 'stopped', runningJob: job, durationMs: Math.round(performance.now() - started) }, 'stopped');
  }
}

interface Parts {
  config: Config;
  log: Logger;
  metrics: LifeboatMetrics;
  runner: JobRunner;
  election: PausableElection;
  scheduler: Scheduler;
  changeLog: ChangeLogService | undefined;
  closeWatcher: () => void;
  servers: Servers | undefined;
  ready: boolean;
}

/**
 * The primary catalogue as the daemon reads it: backups dated further ahead of `now` than
 * backup.maxClockSkewSeconds are never latest, and each full read counts them in the metrics
 * (lifeboat_backup_future_dated) and warns.
 */
export function daemonCatalog(store: BackupStore, config: Config, trust: ManifestTrust, metrics: LifeboatMetrics, log: Logger, now: () => Date): Catalog {
  return new Catalog(store, config.cluster, {
    trust,
    now,
    onRejected: (rejected) => {
      metrics.setRejected(rejected.length);
      for (const r of rejected) log.warn({ phase: 'catalogue', backupId: r.backupId, code: r.error.code, err: r.error.message }, 'a backup in the store is refused and left out: its manifest is unsigned, wrongly signed, invalid or misplaced');
    },
    maxClockSkewSeconds: config.backup.maxClockSkewSeconds,
    onFutureDated: (ids) => {
      metrics.setFutureDated(ids.length);
      if (ids.length > 0) log.warn({ phase: 'catalogue', futureDated: ids, maxClockSkewSeconds: config.backup.maxClockSkewSeconds }, 'backups dated in the future: they are not taken as latest nor as the last success; check the clock of the node that made them, then delete them');
    },
  });
}

/**
 * The one loud line of a daemon in a pod whose backups stay on its node's own disk; undefined
 * when the store is S3 or the process runs outside Kubernetes (a directory may then be a mount).
 */
export function localStoreWarning(config: Pick<Config, 'store' | 'secondaryStore' | 'runtime'>): string | undefined {
  if (config.store.kind !== 'fs' || !config.runtime.inPod || config.secondaryStore?.kind === 's3') return undefined;
  return `backups stay on this node's disk (store.fs.dir ${config.store.dir}): a lost node takes its backups with it, and each leader writes to its own node; set store.s3 (Ceph RGW or any S3, see the components ceph-rgw and s3 in deploy/components) or secondaryStore.s3 for backups you mean to restore from`;
}

/**
 * So that a restart does not reset "last success" to never, and the staleness alert stays right.
 * A backup or a check dated more than `maxSkewSeconds` after `now` is not trusted: it would pin
 * the last success in the future, and the failed and stale alerts would never fire.
 */
export async function seedMetrics(catalog: Catalog, metrics: LifeboatMetrics, log: Logger, now: () => Date, maxSkewSeconds: number): Promise<void> {
  try {
    const entries = await catalog.entries();
    const newest = entries.find((e) => !e.futureDated);
    const limit = now().getTime() + maxSkewSeconds * 1000;
    const lastVerifiedAt: Partial<Record<'ciphertext' | 'deep' | 'drill', Date>> = {};
    for (const e of entries) {
      const v = e.verification;
      if (v?.lastPassedAt && v.lastPassedLevel && !e.futureDated && Date.parse(v.lastPassedAt) <= limit) {
        const at = new Date(v.lastPassedAt);
        const seen = lastVerifiedAt[v.lastPassedLevel];
        if (!seen || seen < at) lastVerifiedAt[v.lastPassedLevel] = at;
      }
    }
    metrics.seedFromCatalogue({
      ...(newest ? { lastBackupAt: new Date(newest.manifest.createdAt), lastBackupSizeBytes: newest.manifest.archive.size, lastBackupKitMissing: newest.kitMissing } : {}),
      lastVerifiedAt,
    });
    if (newest) metrics.setEtcdDbSize(newest.manifest.etcd.dbSize);
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'could not read the catalogue to seed the metrics; they start from zero');
  }
}
