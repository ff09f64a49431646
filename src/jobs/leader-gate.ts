import { NotLeaderError } from '../errors/errors.ts';
import type { Leadership } from '../leader/election.ts';
import type { Job, JobKind } from './job.ts';

/**
 * The kinds of work only the elected leader does: what the API answers 409 NOT_LEADER for on
 * any other instance (a backup, a verification or drill), and what the schedules submit on the
 * leader (backup, prune, drill) or the leader's backups do (the second copy). Two instances
 * doing them at once would make two backups of one tick, or prune what the other just made.
 * A store cleanup (every instance at start, only removing what is older than
 * backup.orphanMinAgeSeconds) and a restore (per node, leader or not) are not.
 */
export const LEADER_ONLY_KINDS: ReadonlySet<JobKind> = new Set<JobKind>(['backup', 'verify', 'drill', 'prune', 'replicate']);

export function isLeaderOnly(kind: JobKind): boolean {
  return LEADER_ONLY_KINDS.has(kind);
}

/** Throws NotLeaderError (409 NOT_LEADER) unless this instance leads right now. */
export function requireLeader(leadership: Leadership, identity: string, what: string): void {
  if (leadership.isLeader()) return;
  const leader = leadership.leader();
  throw new NotLeaderError(leader, `${what}: ${identity} is no longer the leader; ${leader === undefined ? 'no leader is elected right now' : `${leader} is`}`, {
    hint: 'the leader runs it on its next schedule; or ask the leader (GET /v1/status names it)',
  });
}

/**
 * The JobRunner's `mayStart`: a leader-only job starts only while this instance holds the
 * election key (its leadership confirmed within the last TTL/2, see election.ts); else it fails
 * NOT_LEADER without running.
 */
export function leaderGate(leadership: Leadership, identity: string): (job: Readonly<Job>) => void {
  return (job) => {
    if (isLeaderOnly(job.kind)) requireLeader(leadership, identity, `${job.kind} job ${job.id} was not started`);
  };
}
