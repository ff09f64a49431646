import { BadRequestError } from '../errors/errors.ts';
import type { StoredManifest } from '../archive/manifest.ts';
import type { ChangeEvent } from './format.ts';
import { keyOf } from './format.ts';
import type { SegmentManifest } from './manifest.ts';

/**
 * A point to restore to, one of:
 * - `revision`: the cluster as it was at that etcd revision;
 * - `time`: as it was at that moment (RFC 3339): the last revision received at or before it;
 * - `beforeDeletionOf`: just before the newest delete of that key (its revision minus one), the
 *   way back from `kubectl delete` when the time is not known.
 */
export type ReplayTarget = { revision: string } | { time: string } | { beforeDeletionOf: string };

/** What a replay to a point restores: the full backup it starts from, and the segments after it. */
export interface ReplayPlan {
  target: ReplayTarget;
  /** The newest full backup at or before the target revision. */
  backupId: string;
  backupRevision: string;
  /** The exact revision the replayed etcd holds the keys of. */
  targetRevision: string;
  /** When the leader received that revision (the backup's time when no event is replayed). */
  targetTime: string;
  /** The segments whose events are replayed (some of their events may lie past the target). */
  segments: { segmentId: string; firstRevision: string; lastRevision: string }[];
}

/** The events of a segment, read and checked (./commit.ts readSegmentEvents). */
export type ReadEvents = (manifest: SegmentManifest) => Promise<ChangeEvent[]>;

/** Whether two targets name the same point (a time however written: 14:31:00Z is 14:31:00.000+00:00). */
export function samePoint(a: ReplayTarget, b: ReplayTarget): boolean {
  const digits = /^[0-9]{1,20}$/;
  if ('revision' in a) return 'revision' in b && (a.revision === b.revision || (digits.test(a.revision) && digits.test(b.revision) && BigInt(a.revision) === BigInt(b.revision)));
  if ('time' in a) return 'time' in b && Date.parse(a.time) === Date.parse(b.time);
  return 'beforeDeletionOf' in b && a.beforeDeletionOf === b.beforeDeletionOf;
}

export const describe = (t: ReplayTarget): string => ('revision' in t ? `revision ${t.revision}` : 'time' in t ? `time ${t.time}` : `just before ${t.beforeDeletionOf} was deleted`);

/**
 * The plan of a replay to `target`. `segments` are the committed segments, oldest first, their
 * chain already checked (./manifest.ts checkChain); `backups` the trusted full backups. A target
 * the log cannot reach is a BadRequestError naming the field (`/target/...`): before the oldest
 * backup, past the last captured revision, inside a gap that etcd compacted before it was
 * captured, or a key that was never deleted within the log.
 */
export async function planReplay(target: ReplayTarget, segments: readonly SegmentManifest[], backups: readonly StoredManifest[], readEvents: ReadEvents, at = '/target'): Promise<ReplayPlan> {
  try {
    return await plan(target, segments, backups, readEvents);
  } catch (err) {
    // The same field, under where the caller took the target from (`/backup` in a restore request).
    if (err instanceof BadRequestError && at !== '/target' && err.field.startsWith('/target/')) throw new BadRequestError(at + err.field.slice('/target'.length), err.message, { cause: err, ...(err.hint ? { hint: err.hint } : {}) });
    throw err;
  }
}

async function plan(target: ReplayTarget, segments: readonly SegmentManifest[], backups: readonly StoredManifest[], readEvents: ReadEvents): Promise<ReplayPlan> {
  const point = await resolvePoint(target, segments, readEvents);
  const revision = BigInt(point.revision);
  const backup = [...backups].filter((b) => BigInt(b.etcd.revision) <= revision).sort((a, b) => (BigInt(b.etcd.revision) > BigInt(a.etcd.revision) ? 1 : -1))[0];
  const field = `/target/${Object.keys(target)[0]}`;
  if (!backup) {
    const oldest = [...backups].sort((a, b) => (BigInt(a.etcd.revision) > BigInt(b.etcd.revision) ? 1 : -1))[0];
    throw new BadRequestError(field, `${describe(target)} is revision ${point.revision}, before the oldest full backup (${oldest ? `${oldest.backupId} at revision ${oldest.etcd.revision}` : 'there is none'})`, {
      hint: 'choose a later point; retention keeps the change log only from the oldest backup it keeps',
    });
  }
  const from = BigInt(backup.etcd.revision);
  // The segments holding events after the backup, up to the target.
  const needed = revision > from ? segments.filter((s) => BigInt(s.lastRevision) > from && BigInt(s.firstRevision) <= revision) : [];
  for (const s of segments) {
    if (s.gap && BigInt(s.gap.from) <= revision && BigInt(s.gap.to) > from) {
      throw new BadRequestError(field, `${describe(target)} is revision ${point.revision}; revisions ${s.gap.from}-${s.gap.to} after backup ${backup.backupId} (revision ${backup.etcd.revision}) are not in the change log: etcd had compacted them before they were captured`, {
        hint: `restore to a point before revision ${s.gap.from}, or to the full backup taken after the gap`,
      });
    }
  }
  if (revision > from) {
    const first = needed[0];
    if (!first || BigInt(first.firstRevision) > from + 1n) {
      throw new BadRequestError(field, `the change log does not hold revisions ${from + 1n}-${first ? BigInt(first.firstRevision) - 1n : revision} after backup ${backup.backupId}: they were not captured`, {
        hint: 'restore to the full backup itself, or to a point the log covers (lifeboat changes log)',
      });
    }
  }
  return {
    target,
    backupId: backup.backupId,
    backupRevision: backup.etcd.revision,
    targetRevision: point.revision,
    targetTime: revision === from ? backup.createdAt : point.time,
    segments: needed.map((s) => ({ segmentId: s.segmentId, firstRevision: s.firstRevision, lastRevision: s.lastRevision })),
  };
}

/** The revision (and its time) that `target` names. */
async function resolvePoint(target: ReplayTarget, segments: readonly SegmentManifest[], readEvents: ReadEvents): Promise<{ revision: string; time: string }> {
  const last = segments.at(-1);
  if ('revision' in target) {
    if (!/^[0-9]{1,20}$/.test(target.revision) || BigInt(target.revision) < 1n) throw new BadRequestError('/target/revision', `"${target.revision}" is not an etcd revision (a positive integer)`);
    if (!last || BigInt(target.revision) > BigInt(last.lastRevision)) throw pastTheEnd('/target/revision', describe(target), last);
    const segment = segments.find((s) => BigInt(s.lastRevision) >= BigInt(target.revision));
    const event = segment && (await readEvents(segment)).filter((e) => BigInt(e.rev) <= BigInt(target.revision)).at(-1);
    return { revision: target.revision, time: event?.time ?? segment?.firstTime ?? '' };
  }
  if ('time' in target) {
    const at = Date.parse(target.time);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(target.time) || Number.isNaN(at)) throw new BadRequestError('/target/time', `"${target.time}" is not an RFC 3339 time (e.g. 2026-11-24T14:32:00Z)`);
    if (!last || at > Date.parse(last.lastTime)) throw pastTheEnd('/target/time', describe(target), last);
    // The newest segment that starts at or before the time holds the last revision received by then.
    const segment = [...segments].reverse().find((s) => Date.parse(s.firstTime) <= at);
    if (!segment) {
      throw new BadRequestError('/target/time', `${target.time} is before the change log starts (${segments[0]!.firstTime}, revision ${segments[0]!.firstRevision})`, { hint: 'restore the full backup made before that time instead' });
    }
    const event = (await readEvents(segment)).filter((e) => Date.parse(e.time) <= at).at(-1)!;
    return { revision: event.rev, time: event.time };
  }
  const key = target.beforeDeletionOf;
  if (key === '') throw new BadRequestError('/target/beforeDeletionOf', 'the key is empty');
  for (const segment of [...segments].reverse()) {
    const deletion = (await readEvents(segment)).filter((e) => e.op === 'delete' && keyOf(e) === key).at(-1);
    if (deletion) {
      const revision = BigInt(deletion.rev) - 1n;
      const before = (await eventsAt(segments, revision, readEvents)) ?? deletion;
      return { revision: revision.toString(), time: before.time };
    }
  }
  throw new BadRequestError('/target/beforeDeletionOf', `the change log holds no delete of ${key}`, {
    hint: 'find the key with `lifeboat changes log --deleted --prefix <part of it>`; keys are etcd keys, e.g. /registry/namespaces/shop',
  });
}

/** The last event at or before `revision`, if the log holds one. */
async function eventsAt(segments: readonly SegmentManifest[], revision: bigint, readEvents: ReadEvents): Promise<ChangeEvent | undefined> {
  const segment = [...segments].reverse().find((s) => BigInt(s.firstRevision) <= revision);
  return segment && (await readEvents(segment)).filter((e) => BigInt(e.rev) <= revision).at(-1);
}

function pastTheEnd(field: string, what: string, last: SegmentManifest | undefined): BadRequestError {
  return new BadRequestError(field, `${what} is past the end of the change log (${last ? `revision ${last.lastRevision}, received ${last.lastTime}` : 'no segment is committed yet'})`, {
    hint: 'the newest changes are committed within changes.segmentSeconds; wait and plan again, or choose an earlier point',
  });
}
