import type { StoredManifest } from '../archive/manifest.ts';
import type { Config } from '../config/schema.ts';
import { LifeboatError } from '../errors/errors.ts';
import { replicateOne, type ReplicaOutcome } from '../replicate/replicate.ts';
import { prune, type PruneReport } from '../retention/prune.ts';
import type { Catalog } from '../store/catalog.ts';
import type { BackupStore } from '../store/store.ts';
import { runBackup, type BackupDeps, type BackupSettings } from './run.ts';

export interface CycleDeps extends BackupDeps {
  /** The primary store's catalogue (retention runs over it). */
  catalog: Catalog;
  /** The second copy's store, when one is configured. */
  secondary?: BackupStore | undefined;
}

export interface CycleSettings extends BackupSettings {
  /** Run retention after the backup commits (config retention.afterBackup). */
  retention?: Config['retention'] | undefined;
  /** The time zone retention's hourly/daily/weekly/monthly slots are counted in. */
  timeZone: string;
}

/** The settings of a backup cycle, as the config gives them. */
export function cycleSettings(config: Config): CycleSettings {
  return {
    cluster: config.cluster,
    node: config.node,
    kit: config.kit,
    compression: config.compression,
    recipients: config.encryption.recipients,
    progressIntervalSeconds: config.backup.progressIntervalSeconds,
    maxClockSkewSeconds: config.backup.maxClockSkewSeconds,
    retention: config.retention.afterBackup ? config.retention : undefined,
    timeZone: config.daemon.schedules.timezone,
  };
}

/** A step after the commit that failed; the backup itself is committed and stays. */
export interface CycleWarning {
  step: 'replicate' | 'retention';
  code: string;
  message: string;
}

export interface CycleResult {
  manifest: StoredManifest;
  replica?: ReplicaOutcome;
  retention?: PruneReport;
  warnings: CycleWarning[];
}

/**
 * What "take a backup" means for both the CLI and the daemon: the backup itself (committed only
 * once verified in the store), then its second copy, then retention. A failure after the commit
 * does not undo the backup: it is reported as a warning (and counted by the store metrics, so
 * the store-errors alert fires), and the next run catches up.
 */
export async function backupCycle(deps: CycleDeps, settings: CycleSettings, signal?: AbortSignal): Promise<CycleResult> {
  const manifest = await runBackup(deps, settings, signal);
  const result: CycleResult = { manifest, warnings: [] };
  const warn = (step: CycleWarning['step'], err: unknown) => {
    const code = err instanceof LifeboatError ? err.code : 'INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    result.warnings.push({ step, code, message });
    deps.log.error({ phase: step, backupId: manifest.backupId, code, err: message }, `the backup is committed, but ${step === 'replicate' ? 'its second copy' : 'retention'} failed`);
  };
  if (deps.secondary) {
    try {
      result.replica = await replicateOne({ source: deps.store, target: deps.secondary, trust: deps.catalog.trust, log: deps.log }, settings.cluster, manifest, signal ? { signal } : {});
    } catch (err) {
      warn('replicate', err);
    }
  }
  if (settings.retention?.afterBackup) {
    try {
      result.retention = await prune({ catalog: deps.catalog, log: deps.log, changes: { store: deps.store, cluster: settings.cluster, now: deps.now } }, settings.retention, { dryRun: false, timeZone: settings.timeZone });
      for (const failed of result.retention.failed) result.warnings.push({ step: 'retention', code: failed.code, message: `${failed.id}: ${failed.message}` });
    } catch (err) {
      warn('retention', err);
    }
  }
  return result;
}
