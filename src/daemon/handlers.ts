import type { Transform } from 'node:stream';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { missingKitRoles, type StoredManifest } from '../archive/manifest.ts';
import { backupCycle, cycleSettings } from '../backup/cycle.ts';
import type { Config } from '../config/schema.ts';
import { ConfigError, LifeboatError } from '../errors/errors.ts';
import type { SnapshotSource } from '../etcd/source.ts';
import { createDecryptStream, createEncryptStream } from '../crypto/age.ts';
import { readIdentityFile } from '../crypto/identity-file.ts';
import { etcdClient } from '../etcd/client.ts';
import { Etcd3SnapshotSource } from '../etcd/etcd3-source.ts';
import { processExecutor, type Executor } from '../exec/executor.ts';
import type { JobKind } from '../jobs/job.ts';
import { BackupJobParamsSchema, readJobParams } from '../jobs/params.ts';
import type { JobContext, JobHandler } from '../jobs/runner.ts';
import type { LifeboatMetrics } from '../metrics/metrics.ts';
import { replicate } from '../replicate/replicate.ts';
import { RestoreEngine } from '../restore/engine.ts';
import { prune } from '../retention/prune.ts';
import { cleanupSegments } from '../retention/segments.ts';
import { Catalog } from '../store/catalog.ts';
import { drillWithChangeLog } from '../changes/drill-replay.ts';
import { openChangeLog } from '../changes/replay-run.ts';
import { backupSigner, type Signing } from '../signing/trust.ts';
import { provenanceOf } from '../verify/provenance.ts';
import type { BackupStore } from '../store/store.ts';
import { checkAndRecord, type VerificationLevel } from '../verify/record.ts';
import { verifyBackup } from '../verify/verify.ts';
import { restoreIdentities, restoreJobParams, restoreSummary } from './restores.ts';

export interface HandlerDeps {
  config: Config;
  store: BackupStore;
  secondary: BackupStore | undefined;
  catalog: Catalog;
  /** The keys of config `signing`: what reads trust, and the signer of new backups. */
  signing: Signing;
  metrics: LifeboatMetrics;
  exec: Executor;
  encrypt: (recipients: readonly string[]) => Transform;
  decrypt: (identities: readonly string[]) => Transform;
  /** A snapshot source for one backup; closed after it. */
  snapshotSource: () => SnapshotSource;
  /** A client of the live cluster (a drill compares its replay of the change log with it); the caller closes it. */
  liveEtcd: () => Etcd3;
  /** The identities of encryption.identityFile, read when a drill needs them; undefined when none is configured. */
  identities: () => Promise<string[] | undefined>;
  /** This node's restore engine (the one the API plans with). */
  restores: Pick<RestoreEngine, 'get' | 'apply' | 'rollback'>;
  /** Runs a restore that touches this node's etcd (not a dry run); the daemon leaves the leader election meanwhile. */
  duringRestore?: <T>(restoreId: string, run: () => Promise<T>) => Promise<T>;
  now: () => Date;
  log: Logger;
}

/** The daemon's real parts behind the handlers: processes, age, etcd, the identity file, the restore engine. */
export function handlerDeps(parts: Pick<HandlerDeps, 'config' | 'store' | 'secondary' | 'catalog' | 'signing' | 'metrics' | 'now' | 'log'>): HandlerDeps & { restores: RestoreEngine } {
  const { config } = parts;
  return {
    ...parts,
    exec: processExecutor,
    encrypt: createEncryptStream,
    decrypt: createDecryptStream,
    snapshotSource: () => new Etcd3SnapshotSource(config.etcd, parts.log),
    liveEtcd: () => etcdClient({ endpoints: config.etcd.endpoints, tls: config.etcd.tls, dialTimeoutMs: config.etcd.dialTimeoutMs }),
    identities: async () => (config.encryption.identityFile === undefined ? undefined : readIdentityFile(config.encryption.identityFile, '/encryption/identityFile')),
    restores: new RestoreEngine({
      store: parts.store,
      catalog: parts.catalog,
      decrypt: createDecryptStream,
      exec: processExecutor,
      log: parts.log,
      config,
      now: parts.now,
      changeLog: (identities) => openChangeLog({ store: parts.store, decrypt: createDecryptStream, trust: parts.signing.trust }, config.cluster, identities),
    }),
  };
}

/** What each kind of job does in the daemon, and what it tells the metrics. */
export function createHandlers(deps: HandlerDeps): Record<JobKind, JobHandler> {
  const { config, metrics } = deps;

  const backup: JobHandler = async (ctx) => {
    const started = deps.now();
    metrics.backupStarted(started);
    const etcd = deps.snapshotSource();
    try {
      const result = await backupCycle(
        {
          store: deps.store,
          etcd,
          encrypt: deps.encrypt,
          log: ctx.log,
          now: deps.now,
          signer: backupSigner(deps.signing),
          previous: () => deps.catalog.newestLink(),
          catalog: deps.catalog,
          secondary: deps.secondary,
          report: { phase: (name) => ctx.phase(name), progress: (done, total) => ctx.progress(done, total), backupId: (id) => ctx.setBackupId(id) },
        },
        cycleSettings(config),
        ctx.signal,
      );
      const { manifest } = result;
      metrics.backupFinished({ result: 'success', durationSeconds: seconds(started, deps.now()), sizeBytes: manifest.archive.size, kitMissing: missingKitRoles(manifest) });
      metrics.setEtcdDbSize(manifest.etcd.dbSize);
      if (result.retention) metrics.retentionDeleted(result.retention.deleted.length);
      return {
        backupId: manifest.backupId,
        revision: manifest.etcd.revision,
        dbSize: manifest.etcd.dbSize,
        archive: { key: manifest.archive.key, size: manifest.archive.size, sha256: manifest.archive.sha256 },
        ...(result.replica ? { secondCopy: result.replica.status } : {}),
        ...(result.retention ? { retention: { deleted: result.retention.deleted, locked: result.retention.locked.map((l) => l.id) } } : {}),
        warnings: result.warnings,
      };
    } catch (err) {
      metrics.backupFinished({ result: 'failure', durationSeconds: seconds(started, deps.now()), ...(err instanceof LifeboatError ? { reason: err.code } : {}) });
      throw err;
    } finally {
      await etcd.close();
    }
  };

  /** Runs a check, records its outcome beside the backup, and counts it in the metrics. */
  const checked = async <T>(ctx: JobContext, stored: StoredManifest, level: VerificationLevel, check: () => Promise<T>): Promise<T> => {
    ctx.setBackupId(stored.backupId);
    try {
      const { report } = await checkAndRecord(deps.catalog, stored.backupId, level, check, ctx.log);
      metrics.verifyFinished({ result: 'success', level });
      return report;
    } catch (err) {
      metrics.verifyFinished({ result: 'failure', level });
      throw err;
    }
  };

  const drill = async (ctx: JobContext, backupId: string) => {
    const identities = await deps.identities();
    if (!identities) {
      throw new ConfigError('/encryption/identityFile', 'a restore drill decrypts the backup, but no identity is configured on this node', {
        hint: 'mount the identity and set encryption.identityFile, or verify without deep',
      });
    }
    const stored = await deps.catalog.resolve(backupId);
    ctx.phase('drill');
    const report = await checked(ctx, stored, 'drill', () =>
      drillWithChangeLog(
        { store: deps.store, decrypt: deps.decrypt, exec: deps.exec, log: ctx.log, trust: deps.signing.trust },
        stored,
        {
          identities,
          etcdutl: config.tools.etcdutl,
          etcd: config.tools.etcd,
          startTimeoutSeconds: config.drill.startTimeoutSeconds,
          signal: ctx.signal,
          cluster: config.cluster,
          changeLog: config.drill.changeLog,
          leaseTtlSeconds: config.changes.replayLeaseTtlSeconds,
          connectLive: deps.liveEtcd,
          ...(config.drill.scratchDir ? { scratchDir: config.drill.scratchDir } : {}),
        },
      ),
    );
    if (report.changeLog.replayed) metrics.changes.replayed(report.changeLog.stats.events, report.changeLog.stats.seconds);
    return report;
  };

  const verify: JobHandler = async (ctx, params) => {
    const { backupId, deep } = readJobParams('verify', BackupJobParamsSchema, params);
    if (deep === true) return drill(ctx, backupId);
    const stored = await deps.catalog.resolve(backupId);
    ctx.phase('verifying');
    ctx.progress(0, stored.archive.size);
    return checked(ctx, stored, 'ciphertext', async () => {
      const provenance = await provenanceOf(deps.catalog, stored.backupId);
      return { ...(await verifyBackup({ store: deps.store, decrypt: deps.decrypt, exec: deps.exec, log: ctx.log }, stored, { etcdutl: config.tools.etcdutl })), provenance };
    });
  };

  return {
    backup,
    verify,
    drill: async (ctx, params) => drill(ctx, readJobParams('drill', BackupJobParamsSchema, params).backupId),
    prune: async (ctx) => {
      ctx.phase('pruning');
      const report = await prune({ catalog: deps.catalog, log: ctx.log, changes: { store: deps.store, cluster: config.cluster, now: deps.now } }, config.retention, { dryRun: false, timeZone: config.daemon.schedules.timezone });
      metrics.retentionDeleted(report.deleted.length);
      return report;
    },
    cleanup: async (ctx) => {
      ctx.phase('cleaning');
      const olderThan = new Date(deps.now().getTime() - config.backup.orphanMinAgeSeconds * 1000);
      const primary = await deps.catalog.cleanup(olderThan);
      metrics.orphansCleaned(primary.orphans.length + primary.incomplete);
      // What uncommitted change-log segments left (a leader killed or fenced mid-commit).
      const changes = await cleanupSegments(deps.store, config.cluster, olderThan);
      metrics.orphansCleaned(changes.orphans.length + changes.incomplete);
      if (!deps.secondary) return { primary, changes };
      // What interrupted second copies left behind.
      const secondary = await new Catalog(deps.secondary, config.cluster, { trust: deps.signing.trust }).cleanup(olderThan);
      metrics.orphansCleaned(secondary.orphans.length + secondary.incomplete);
      return { primary, changes, secondary };
    },
    replicate: async (ctx) => {
      if (!deps.secondary) throw new ConfigError('/secondaryStore', 'no second store is configured, so there is nothing to copy to');
      ctx.phase('replicating');
      return replicate({ source: deps.store, target: deps.secondary, trust: deps.signing.trust, log: ctx.log }, config.cluster, { signal: ctx.signal });
    },
    // The API checked the caller's confirmation token against the plan before submitting this
    // job; the job reads the token from the plan (it is never a job parameter).
    restore: async (ctx, params) => {
      const request = restoreJobParams(params);
      const { restoreId, action, through } = request;
      const engine = deps.restores;
      const before = await engine.get(restoreId);
      const confirmationToken = before.plan.confirmationToken;
      const run = async () => {
        if (action === 'rollback') {
          ctx.phase('rollback');
          return restoreSummary(await engine.rollback(restoreId, { confirmationToken, signal: ctx.signal }), request);
        }
        // The identity is needed only to fetch (a dry run always fetches again).
        const needsKey = before.plan.dryRun || before.journal.steps.fetch?.state !== 'done';
        const identities = needsKey ? await restoreIdentities(deps.identities) : [];
        const view = await engine.apply(restoreId, {
          confirmationToken,
          identities,
          ...(through === undefined ? {} : { through }),
          report: (step) => ctx.phase(step),
          signal: ctx.signal,
        });
        // A point-in-time restore's fetch replayed the change log in this apply.
        const replayed = view.journal.facts.replayed;
        if (replayed && (view.journal.steps.fetch?.attempts ?? 0) > (before.journal.steps.fetch?.attempts ?? 0)) metrics.changes.replayed(replayed.events, replayed.seconds);
        return restoreSummary(view, request);
      };
      return before.plan.dryRun || !deps.duringRestore ? run() : deps.duringRestore(restoreId, run);
    },
  };
}

function seconds(from: Date, to: Date): number {
  return Math.max(0, (to.getTime() - from.getTime()) / 1000);
}
