import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { StoredManifest } from '../archive/manifest.ts';
import { replayOnto } from '../changes/replay-run.ts';
import { IntegrityError } from '../errors/errors.ts';
import { noChangeLogIdentity } from './plan-model.ts';
import type { RestoreFacts } from './journal-model.ts';
import { staged, type StepContext } from './step-context.ts';

/** How long the replay's throwaway etcd may take to have a leader. */
const REPLAY_START_SECONDS = 60;

/**
 * A point-in-time restore's part of fetch: the change log's events after the backup, up to the
 * plan's target revision, replayed onto the fetched (and checked) snapshot in a throwaway etcd
 * in the restore's state dir; its snapshot then replaces the fetched one, so every later step
 * restores it as any snapshot. The plan names the segments: each must still be in the store,
 * with its signature and its place in the chain, and the replay must reach the target revision
 * exactly. Every member of an in-place restore replays the same events in the same transactions,
 * with the same lease ids, and so restores the same keys at the same revisions.
 */
export async function replayFetched(ctx: StepContext, stored: StoredManifest, snapshotFile: string): Promise<NonNullable<RestoreFacts['replayed']>> {
  const { plan, deps } = ctx;
  const pit = plan.pointInTime!;
  if (!deps.changeLog) throw noChangeLogIdentity();
  const log = await deps.changeLog(ctx.identities);
  const have = new Set(log.segments.map((s) => s.segmentId));
  const missing = pit.segments.filter((s) => !have.has(s.segmentId));
  if (missing.length > 0) {
    throw new IntegrityError(`segment(s) ${missing.map((s) => s.segmentId).join(', ')} of the change log, which this plan replays, are no longer in the store`, {
      hint: 'plan the restore again: retention may have pruned them, or choose a later point',
    });
  }
  const replayed = `${snapshotFile}.replayed`;
  await rm(replayed, { force: true });
  const report = await replayOnto(
    { store: deps.store, decrypt: deps.decrypt, exec: deps.exec, log: ctx.log },
    stored,
    { target: pit.target, backupId: plan.backupId, backupRevision: plan.backup.revision, targetRevision: pit.targetRevision, targetTime: pit.targetTime, segments: pit.segments },
    log.segments,
    {
      identities: ctx.identities,
      etcdutl: deps.config.tools.etcdutl,
      etcd: deps.config.tools.etcd,
      startTimeoutSeconds: REPLAY_START_SECONDS,
      scratchDir: path.dirname(snapshotFile),
      // Unix socket paths are short (107 bytes): beside the restore's own, not in the scratch dir.
      sockets: { dir: staged(ctx, 'replay-sock'), setting: '/daemon/stateDir' },
      snapshotFile,
      output: replayed,
      leaseTtlSeconds: pit.leaseTtlSeconds,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    },
  );
  await rename(replayed, snapshotFile);
  const s = report.stats;
  return { targetRevision: pit.targetRevision, events: s.events, transactions: s.transactions, leases: s.leases, seconds: Math.round(s.seconds * 100) / 100 };
}
