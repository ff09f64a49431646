import type { Logger } from 'pino';
import { segmentIds } from '../changes/manifest.ts';
import { LifeboatError, ObjectLockedError } from '../errors/errors.ts';
import { changesPrefix, committedSegmentIds, parseSegmentId, parseSegmentKey, segmentDataKey, segmentManifestKey, segmentSignatureKey } from '../store/layout.ts';
import { isLocked, type BackupStore } from '../store/store.ts';

/** Where the change log lives: the primary store and the cluster. */
export interface SegmentRetentionDeps {
  store: BackupStore;
  cluster: string;
  log: Logger;
  now: () => Date;
}

export interface SegmentPruneReport {
  /** The revision of the oldest backup left: segments that end below it were due. */
  belowRevision: string;
  /** Deleted (with dryRun: would be deleted), oldest first. */
  deleted: string[];
  /** The first due segment still under Object Lock: pruning stopped there. */
  locked?: { id: string; retainUntil?: string; legalHold?: boolean };
  /** The first due segment whose delete failed: pruning stopped there. */
  failed?: { id: string; code: string; message: string };
}

/**
 * Deletes the change-log segments that end below `belowRevision`, the revision of the oldest
 * full backup retention leaves: no restore can replay them, since every backup left already
 * holds their changes. Oldest first, each as a backup is deleted: its manifest first (so it
 * stops being part of the log at once), then its signature, then its data; a failure part way
 * leaves at worst data without a manifest. The chain stays whole: the oldest segment left may
 * name a deleted one, which checkChain allows, so pruning stops at the first segment it cannot
 * delete (still under Object Lock, or a failed delete) rather than leave a hole after it.
 */
export async function pruneSegments(deps: SegmentRetentionDeps, belowRevision: string, options: { dryRun: boolean; signal?: AbortSignal }): Promise<SegmentPruneReport> {
  const { store, cluster, log } = deps;
  const report: SegmentPruneReport = { belowRevision, deleted: [] };
  const below = BigInt(belowRevision);
  for (const id of await segmentIds(store, cluster)) {
    const { lastRevision } = parseSegmentId(id)!;
    if (BigInt(lastRevision) >= below || options.signal?.aborted) break;
    const keys = [segmentManifestKey(cluster, id), segmentSignatureKey(cluster, id), segmentDataKey(cluster, id)];
    try {
      const now = deps.now();
      const infos = await Promise.all(keys.map((k) => store.stat(k)));
      const lock = infos.find((info) => info !== undefined && isLocked(info, now));
      if (lock) {
        report.locked = { id, ...(lock.retainUntil && lock.retainUntil > now ? { retainUntil: lock.retainUntil.toISOString() } : {}), ...(lock.legalHold ? { legalHold: true } : {}) };
        log.info({ phase: 'prune', segmentId: id, action: 'locked', ...report.locked }, 'change segment not deleted: still under Object Lock; the later ones wait with it');
        break;
      }
      if (!options.dryRun) {
        for (const [i, key] of keys.entries()) {
          if (infos[i]) await store.delete(key);
        }
      }
      report.deleted.push(id);
    } catch (err) {
      if (err instanceof ObjectLockedError) {
        report.locked = { id, ...(err.retainUntil ? { retainUntil: err.retainUntil.toISOString() } : {}), ...(err.legalHold ? { legalHold: true } : {}) };
        break;
      }
      report.failed = { id, code: err instanceof LifeboatError ? err.code : 'UNEXPECTED', message: err instanceof Error ? err.message : String(err) };
      log.error({ phase: 'prune', segmentId: id, action: 'failed', code: report.failed.code, err: report.failed.message }, 'could not delete a change segment older than every backup kept; the later ones wait with it');
      break;
    }
  }
  if (report.deleted.length > 0 || report.locked || report.failed) {
    log.info({ phase: 'pruned-changes', dryRun: options.dryRun, belowRevision, deleted: report.deleted.length, first: report.deleted[0], last: report.deleted.at(-1) }, options.dryRun ? 'change log: segments that would be deleted' : 'change log: segments older than every backup kept deleted');
  }
  return report;
}

export interface SegmentCleanupResult {
  /** Data and signature objects of segments that were never committed (no manifest), removed. */
  orphans: string[];
  /** Under Object Lock: left until their retention ends. */
  locked?: string[];
  /** Writes under the change log that never completed (temp files, multipart uploads), removed. */
  incomplete: number;
}

/**
 * Removes what uncommitted segments left, older than `olderThan`: the data (and signature) of a
 * segment whose manifest was never written (a leader killed or fenced mid-commit, a failed store
 * write whose own clean-up failed), and incomplete writes. A segment being committed now is
 * younger than the threshold and is left alone.
 */
export async function cleanupSegments(store: BackupStore, cluster: string, olderThan: Date): Promise<SegmentCleanupResult> {
  const prefix = changesPrefix(cluster);
  const incomplete = await store.removeIncomplete(prefix, olderThan);
  const objects = await store.list(prefix);
  const committed = new Set(committedSegmentIds(objects));
  const orphans: string[] = [];
  const locked: string[] = [];
  for (const o of objects) {
    const parsed = parseSegmentKey(o.key);
    if (!parsed || committed.has(parsed.segmentId) || o.modified >= olderThan) continue;
    try {
      await store.delete(o.key);
      orphans.push(o.key);
    } catch (err) {
      if (!(err instanceof ObjectLockedError)) throw err;
      locked.push(o.key);
    }
  }
  return { orphans, ...(locked.length > 0 ? { locked } : {}), incomplete };
}
