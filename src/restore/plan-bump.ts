import type { StoredManifest } from '../archive/manifest.ts';
import { BadRequestError } from '../errors/errors.ts';
import type { PlanContext, RestoreRequest } from './plan-model.ts';

export interface BumpInput {
  minimum: number;
  backup: { revision: string; createdAt: string };
  /** The catalogue, newest first. */
  recent: { revision: string; createdAt: string }[];
  now: Date;
  /** The live cluster's revision, when known. */
  liveRevision?: string | undefined;
}

export interface BumpResult {
  bumpRevision: number;
  estimatedRevisionsSinceBackup: number;
  revisionsPerSecond: number | undefined;
}

/** How many of the newest backups the revision rate is measured over. */
const RATE_WINDOW = 10;

/**
 * The revision bump, so that the restored cluster's revision is above every revision a client
 * has seen (a revision going backwards breaks every informer and watch cache):
 *
 *   rate      = (rev(newest) − rev(oldest of the newest RATE_WINDOW backups)) / (their time apart)
 *   liveEst   = rev(newest) + rate × (now − time(newest))       the cluster's revision now, estimated
 *   since     = max(liveEst, live revision if it answers) − rev(backup)
 *   bump      = max(restore.minRevisionBump, ⌈2 × since⌉)
 *
 * Measuring from the newest backup (not only the restored one) keeps earlier jumps (a previous
 * restore's bump) in the estimate; the factor 2 covers a write burst since the last backup and
 * the time between plan and apply. With fewer than two backups the rate is unknown and the
 * minimum applies (a warning says so). stop-etcd checks the live revision again before it
 * stops the last running member.
 */
export function computeBump(input: BumpInput): BumpResult {
  const rev = (r: string) => {
    const n = Number(r);
    if (!Number.isSafeInteger(n)) throw new BadRequestError('/backup', `revision ${r} is beyond what this computation handles (2^53)`);
    return n;
  };
  const time = (t: string) => Date.parse(t) / 1000;
  const window = input.recent.slice(0, RATE_WINDOW);
  const newest = window[0];
  let rate: number | undefined;
  if (newest) {
    const oldest = [...window].reverse().find((b) => time(b.createdAt) < time(newest.createdAt));
    if (oldest) {
      const r = (rev(newest.revision) - rev(oldest.revision)) / (time(newest.createdAt) - time(oldest.createdAt));
      if (Number.isFinite(r) && r >= 0) rate = r;
    }
  }
  const base = rev(input.backup.revision);
  let liveEstimate = base;
  if (newest) {
    const elapsed = Math.max(0, input.now.getTime() / 1000 - time(newest.createdAt));
    liveEstimate = Math.max(base, rev(newest.revision) + (rate ?? 0) * elapsed);
  }
  if (input.liveRevision !== undefined) liveEstimate = Math.max(liveEstimate, rev(input.liveRevision));
  const since = Math.max(0, Math.ceil(liveEstimate - base));
  return {
    bumpRevision: Math.max(input.minimum, Math.ceil(2 * since)),
    estimatedRevisionsSinceBackup: since,
    revisionsPerSecond: rate,
  };
}

export async function planBump(input: RestoreRequest, backup: StoredManifest, backups: StoredManifest[], ctx: PlanContext, now: Date, warnings: string[]) {
  const minimum = ctx.config.restore.minRevisionBump;
  const live = input.mode === 'in-place' && ctx.liveRevision ? await ctx.liveRevision().catch(() => undefined) : undefined;
  if (input.mode === 'in-place' && live === undefined) warnings.push('the live etcd did not answer, so the bump is estimated from the catalogue alone');
  const computed = computeBump({
    minimum,
    backup: { revision: backup.etcd.revision, createdAt: backup.createdAt },
    recent: backups.map((b) => ({ revision: b.etcd.revision, createdAt: b.createdAt })),
    now,
    liveRevision: live,
  });
  if (computed.revisionsPerSecond === undefined) warnings.push('fewer than two backups: the revision rate is unknown, so the bump is the configured minimum unless the live cluster answered');
  let bumpRevision = computed.bumpRevision;
  if (input.bumpRevision !== undefined) {
    if (input.bumpRevision < minimum) {
      throw new BadRequestError('/bumpRevision', `${input.bumpRevision} is below restore.minRevisionBump (${minimum})`);
    }
    if (input.bumpRevision < computed.bumpRevision) {
      warnings.push(`the pinned bump ${input.bumpRevision} is below this node's estimate ${computed.bumpRevision}`);
    }
    bumpRevision = input.bumpRevision;
  }
  return {
    bumpRevision,
    facts: {
      minimum,
      pinned: input.bumpRevision !== undefined,
      estimatedRevisionsSinceBackup: computed.estimatedRevisionsSinceBackup,
      ...(computed.revisionsPerSecond === undefined ? {} : { revisionsPerSecond: Math.round(computed.revisionsPerSecond * 1000) / 1000 }),
      ...(live === undefined ? {} : { liveRevision: live }),
      formula: `max(restore.minRevisionBump, ceil(2 × (max(rev(newest) + rate × age(newest), live revision) − rev(backup)))), rate over the newest ${RATE_WINDOW} backups`,
    },
  };
}
