import type { Etcd3 } from 'etcd3';
import { GRPCDeadlineExceededError, GRPCOutOfRangeError, GRPCUnavailableError } from 'etcd3';
import type { StoredManifest } from '../archive/manifest.ts';
import { ConfigError, IntegrityError } from '../errors/errors.ts';
import type { ManifestTrust } from '../signing/trust.ts';
import { runDrill, type DrillDeps, type DrillOptions, type DrillReport } from '../verify/drill.ts';
import type { SegmentManifest } from './manifest.ts';
import { planReplay } from './replay-plan.ts';
import { compareKeys, openChangeLog, replayOnto, type Comparison } from './replay-run.ts';
import type { ReplayStats } from './replay.ts';

/** What a drill did with the change log: replayed it and compared, or why it did not. */
export type ChangeLogDrill =
  | {
      replayed: true;
      /** The newest revision the log holds after the backup with no gap between. */
      targetRevision: string;
      targetTime: string;
      segments: number;
      stats: ReplayStats;
      /** Every key and value against the live cluster at the target revision, or why that was not possible. */
      comparison: Comparison | { skipped: string };
    }
  | { replayed: false; skipped: string };

export type ChangeLogDrillReport = DrillReport & { changeLog: ChangeLogDrill };

export interface ChangeLogDrillOptions extends Omit<DrillOptions, 'replay' | 'etcdArgs'> {
  cluster: string;
  /** Off: a plain drill of the backup (config drill.changeLog, `lifeboat drill --no-change-log`). */
  changeLog: boolean;
  leaseTtlSeconds: number;
  /**
   * A client of the live cluster to compare with, made when the replay is done and closed after
   * the comparison. Without it, or when it cannot be made or reach the cluster, the comparison
   * is skipped and the report says why.
   */
  connectLive?: () => Etcd3;
}

/**
 * A drill of `stored` that also drills the change log after it: the events from the backup's
 * revision to the newest revision the log holds are replayed onto the restored throwaway etcd
 * (as a point-in-time restore would), and the result is compared key by key with the live
 * cluster at that revision (`get --rev`), while the live cluster has not compacted it.
 *
 * Fails (IntegrityError) when the chain of segments is broken or a key differs: a restore to a
 * point would then not give the cluster as it was. Skips the replay, and says why, when the log
 * holds nothing after this backup, or a gap follows it at once. A compacted live revision skips
 * only the comparison.
 */
export async function drillWithChangeLog(deps: DrillDeps & { trust: ManifestTrust }, stored: StoredManifest, options: ChangeLogDrillOptions): Promise<ChangeLogDrillReport> {
  const { connectLive, cluster, changeLog, ...drillOptions } = options;
  if (!changeLog) return { ...(await runDrill(deps, stored, drillOptions)), changeLog: { replayed: false, skipped: 'the change log is not drilled (drill.changeLog is off)' } };
  const log = await openChangeLog(deps, cluster, options.identities);
  const target = newestReachable(stored.etcd.revision, log.segments);
  if (typeof target !== 'string') return { ...(await runDrill(deps, stored, drillOptions)), changeLog: { replayed: false, skipped: target.skipped } };
  // The plan is made with this backup alone, so that it starts from it and not from a newer one.
  const plan = await planReplay({ revision: target }, log.segments, [stored], log.readEvents);
  let skipped: string | undefined;
  const compare = connectLive && (async (replayed: Etcd3, revision: string): Promise<Comparison> => {
    let live: Etcd3 | undefined;
    try {
      live = connectLive();
      return await compareKeys(replayed, live, revision);
    } catch (err) {
      skipped = whyNotCompared(err, revision);
      if (skipped === undefined) throw err;
      return { keys: 0 };
    } finally {
      live?.close();
    }
  });
  const result = await replayOnto(deps, stored, plan, log.segments, { ...drillOptions, ...(compare ? { compare } : {}) });
  const difference = result.comparison?.difference;
  if (difference) {
    throw new IntegrityError(`the change log replayed onto backup ${stored.backupId} does not rebuild the live cluster at revision ${plan.targetRevision}: key ${difference.key} is ${difference.replayed} in the replay and ${difference.live} in the cluster`, {
      hint: 'run `lifeboat changes verify` to check the chain of segments; a restore to a point after this backup would not give the cluster as it was',
    });
  }
  const comparison = skipped !== undefined ? { skipped } : (result.comparison ?? { skipped: 'no live cluster to compare with' });
  return {
    ...result.drill,
    changeLog: { replayed: true, targetRevision: plan.targetRevision, targetTime: plan.targetTime, segments: plan.segments.length, stats: result.stats, comparison },
  };
}

/**
 * The newest revision the change log can rebuild from a backup at `backupRevision`: the end of
 * the last segment after it before any gap. Why there is none, otherwise.
 */
export function newestReachable(backupRevision: string, segments: readonly SegmentManifest[]): string | { skipped: string } {
  const from = BigInt(backupRevision);
  let end = from;
  for (const s of segments) {
    if (BigInt(s.lastRevision) <= from) continue;
    if (s.gap && BigInt(s.gap.to) > end) {
      if (end === from) return { skipped: `revisions ${s.gap.from}-${s.gap.to} right after this backup are not in the change log (etcd compacted them before they were captured)` };
      break;
    }
    end = BigInt(s.lastRevision);
  }
  if (end === from) return { skipped: `the change log holds no revision after this backup's (${backupRevision})` };
  return end.toString();
}

/** Why the comparison with the live cluster could not be made, for the errors that only skip it. */
function whyNotCompared(err: unknown, revision: string): string | undefined {
  if (err instanceof GRPCOutOfRangeError) return `the live cluster no longer holds revision ${revision} (compacted since it was captured)`;
  if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError) return `the live cluster could not be reached: ${err.message}`;
  if (err instanceof ConfigError) return `no client for the live cluster: ${err.message}`;
  return undefined;
}
