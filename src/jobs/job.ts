import { Type, type Static } from '@sinclair/typebox';

/**
 * A job is one unit of work the daemon does for a schedule tick or an API call: a backup, a
 * verification, a restore drill, a prune, a store cleanup, a replication to the second store,
 * a restore's apply or rollback on this node.
 * One owner (the JobRunner) runs them one at a time, in the order they were submitted.
 *
 * States: queued → running → succeeded | failed. A job's `phase` says where a running job is
 * (kind-specific: `member-chosen`, `streaming`, `committing`, `replicating`, `pruning`, ...).
 * Records are journaled in the state directory, so a job left `queued` or `running` by a crash
 * is found, and marked failed, when the daemon starts again.
 */
export const JOB_KINDS = ['backup', 'verify', 'drill', 'prune', 'cleanup', 'replicate', 'restore'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

export const JobStateSchema = Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')]);
export type JobState = Static<typeof JobStateSchema>;

/** `change-log`: the change log lost revisions to compaction (a gap) and asked for a full backup. */
export const JobTriggerSchema = Type.Union([Type.Literal('schedule'), Type.Literal('api'), Type.Literal('startup'), Type.Literal('change-log')]);
export type JobTrigger = Static<typeof JobTriggerSchema>;

const Timestamp = Type.String({ description: 'RFC 3339, UTC' });

export const JobSchema = Type.Object(
  {
    id: Type.String({ description: 'job-<time>-<random>' }),
    kind: Type.Union(JOB_KINDS.map((k) => Type.Literal(k))),
    state: JobStateSchema,
    /** Where the job is now; `queued` before it starts and `done` after it ends. */
    phase: Type.String(),
    trigger: JobTriggerSchema,
    /** `schedule`, `startup`, `change-log`, or the authenticated API caller's name. */
    requestedBy: Type.String(),
    /** What was asked for, e.g. `{ backupId, deep }` for a verification. */
    params: Type.Record(Type.String(), Type.Unknown()),
    /** The backup the job works on, or made (a backup job learns it once the snapshot starts). */
    backupId: Type.Optional(Type.String()),
    progress: Type.Object({
      bytesDone: Type.Integer({ minimum: 0 }),
      bytesTotal: Type.Optional(Type.Integer({ minimum: 0 })),
    }),
    createdAt: Timestamp,
    startedAt: Type.Optional(Timestamp),
    finishedAt: Type.Optional(Timestamp),
    durationSeconds: Type.Optional(Type.Number({ minimum: 0 })),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) })),
    /** What a finished job produced, kind-specific (a backup's id and sizes, a prune report, ...). */
    result: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
export type Job = Static<typeof JobSchema>;

/** What a caller asks the runner for. */
export interface JobRequest {
  kind: JobKind;
  params?: Record<string, unknown>;
  trigger: JobTrigger;
  requestedBy: string;
  /**
   * The same key returns the job it first made (for as long as that job is remembered), so a
   * retried POST does not start a second backup. The same key for a different request is a
   * ConflictError.
   */
  idempotencyKey?: string;
}

export interface Submitted {
  job: Job;
  /** false when an equal job was already queued or running, or the idempotency key was known. */
  created: boolean;
}
