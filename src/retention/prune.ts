import type { Logger } from 'pino';
import { CancelledError, LifeboatError, ObjectLockedError } from '../errors/errors.ts';
import type { BackupLock, CatalogEntry } from '../store/catalog.ts';
import { isVerified } from '../verify/record.ts';
import type { BackupStore } from '../store/store.ts';
import { planRetention, type KeepReason, type RetentionPolicy } from './policy.ts';
import { pruneSegments, type SegmentPruneReport } from './segments.ts';

/** What prune needs of the catalogue (../store/catalog.ts has it). */
export interface PruneCatalog {
  entries(): Promise<CatalogEntry[]>;
  lockOf(id: string): Promise<BackupLock | undefined>;
  deleteBackup(id: string): Promise<void>;
}

export interface PruneDeps {
  catalog: PruneCatalog;
  log: Logger;
  /** The change log beside the backups (the catalogue's store and cluster): its segments older than every backup left go too. */
  changes?: { store: BackupStore; cluster: string; now: () => Date };
}

export interface PruneOptions {
  /** Decide and report, delete nothing. */
  dryRun: boolean;
  /** The IANA zone whose wall clock defines the hourly, daily, weekly and monthly buckets. */
  timeZone: string;
  /** Stops before the next deletion (CancelledError). */
  signal?: AbortSignal;
}

export interface PruneReport {
  dryRun: boolean;
  /** Newest first, with why each is kept. */
  kept: { id: string; reasons: KeepReason[] }[];
  /** Deleted (with dryRun: would be deleted), newest first. */
  deleted: string[];
  /** Due to go, but still under Object Lock: skipped, not an error. `retainUntil` is RFC 3339. */
  locked: { id: string; retainUntil?: string; legalHold?: boolean }[];
  /** Due to go, but the delete failed; the others were still pruned. */
  failed: { id: string; code: string; message: string }[];
  /** The change-log segments that end below the oldest backup left (with deps.changes, once a backup is left). */
  segments?: SegmentPruneReport;
}

/**
 * Applies the retention policy to the catalogue: every backup the policy does not keep is deleted
 * (manifest first, see Catalog.deleteBackup), unless it is still under Object Lock, which is
 * reported and skipped. One failed delete does not stop the others. Never deletes the newest
 * backup, the newest verified one, or a future-dated one (the policy always keeps them). Logs one line per deleted or
 * locked backup and a summary. Then, with `deps.changes`, the change-log segments that end below
 * the revision of the oldest backup left (kept, or locked or failed to delete) go too
 * (./segments.ts): no restore can replay them.
 */
export async function prune(deps: PruneDeps, policy: RetentionPolicy, options: PruneOptions): Promise<PruneReport> {
  const { catalog, log } = deps;
  const started = performance.now();
  const entries = await catalog.entries();
  const plan = planRetention(
    entries.map((e) => ({ id: e.manifest.backupId, createdAt: new Date(e.manifest.createdAt), verified: isVerified(e.verification), futureDated: e.futureDated === true })),
    policy,
    options.timeZone,
  );
  const report: PruneReport = { dryRun: options.dryRun, kept: [], deleted: [], locked: [], failed: [] };
  for (const decision of plan) {
    if (decision.keep) {
      report.kept.push({ id: decision.id, reasons: decision.reasons });
      log.debug({ phase: 'prune', backupId: decision.id, action: 'keep', reasons: decision.reasons }, 'kept by the retention policy');
    }
  }
  for (const { id } of plan.filter((d) => !d.keep)) {
    if (options.signal?.aborted) {
      throw new CancelledError(`prune cancelled after deleting ${report.deleted.length} of ${plan.length - report.kept.length} backups`);
    }
    const one = performance.now();
    try {
      // deleteBackup checks the locks itself (ObjectLockedError, nothing deleted); a dry run asks.
      const lock = options.dryRun ? await catalog.lockOf(id) : undefined;
      if (lock) {
        addLocked(report, log, id, lock.retainUntil, lock.legalHold);
        continue;
      }
      if (!options.dryRun) await catalog.deleteBackup(id);
      report.deleted.push(id);
      log.info({ phase: 'prune', backupId: id, action: options.dryRun ? 'would-delete' : 'deleted', durationMs: Math.round(performance.now() - one) }, options.dryRun ? 'would delete: not kept by the retention policy' : 'deleted: not kept by the retention policy');
    } catch (err) {
      if (err instanceof ObjectLockedError) {
        addLocked(report, log, id, err.retainUntil, err.legalHold);
        continue;
      }
      const code = err instanceof LifeboatError ? err.code : 'UNEXPECTED';
      const message = err instanceof Error ? err.message : String(err);
      report.failed.push({ id, code, message });
      log.error({ phase: 'prune', backupId: id, action: 'failed', code, err: message }, 'could not delete a backup the retention policy does not keep; going on with the others');
    }
  }
  const left = new Set([...report.kept.map((k) => k.id), ...report.locked.map((l) => l.id), ...report.failed.map((f) => f.id)]);
  const revisions = entries.filter((e) => left.has(e.manifest.backupId)).map((e) => BigInt(e.manifest.etcd.revision));
  if (deps.changes && revisions.length > 0) {
    const oldest = revisions.reduce((a, b) => (b < a ? b : a));
    report.segments = await pruneSegments({ ...deps.changes, log }, oldest.toString(), { dryRun: options.dryRun, ...(options.signal ? { signal: options.signal } : {}) });
  }
  log.info(
    { phase: 'pruned', dryRun: options.dryRun, backups: plan.length, kept: report.kept.length, deleted: report.deleted.length, locked: report.locked.length, failed: report.failed.length, durationMs: Math.round(performance.now() - started) },
    options.dryRun ? 'retention dry run: nothing deleted' : 'retention applied',
  );
  return report;
}

function addLocked(report: PruneReport, log: Logger, id: string, retainUntil: Date | undefined, legalHold: boolean | undefined): void {
  const entry = { id, ...(retainUntil ? { retainUntil: retainUntil.toISOString() } : {}), ...(legalHold ? { legalHold: true } : {}) };
  report.locked.push(entry);
  log.info({ phase: 'prune', backupId: id, action: 'locked', ...entry }, 'not deleted: still under Object Lock; it goes in a later prune once the lock ends');
}
