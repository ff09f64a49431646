import { Type, type TSchema } from '@sinclair/typebox';
import { KitRole, StoredManifestSchema } from '../archive/manifest.ts';
import { JOB_KINDS, JobSchema, JobStateSchema } from '../jobs/job.ts';
import { RestoreJournalSchema, type RestoreState } from '../restore/journal.ts';
import { RestorePlanSchema, STEP_NAMES } from '../restore/plan.ts';
import { VerificationRecordSchema } from '../verify/record.ts';
import { PROBLEM_CONTENT_TYPE, type ProblemBody } from './errors.ts';

/** Request and response schemas of the API: validated on the way in, documented at /openapi.json. */

const BACKUP_ID = '\\d{8}T\\d{6}\\.\\d{3}Z-r\\d{1,20}';
const RFC3339 = '^\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$';

export const BackupRefParams = Type.Object(
  { id: Type.String({ pattern: `^(latest|${BACKUP_ID})$`, maxLength: 64, description: 'a backup id like 20261124T033000.123Z-r12345, or latest' }) },
  { additionalProperties: false },
);

export const BackupIdParams = Type.Object(
  { id: Type.String({ pattern: `^${BACKUP_ID}$`, maxLength: 64, description: 'a backup id like 20261124T033000.123Z-r12345' }) },
  { additionalProperties: false },
);

export const JobIdParams = Type.Object(
  { id: Type.String({ pattern: '^job-[0-9A-Za-z.-]{1,80}$', description: 'a job id like job-20261124T033000.123Z-a1b2c3' }) },
  { additionalProperties: false },
);

const Limit = Type.Integer({ minimum: 1, maximum: 1000, default: 50, description: 'at most this many, 1 to 1000' });

export const BackupListQuery = Type.Object(
  {
    limit: Limit,
    before: Type.Optional(Type.String({ pattern: RFC3339, description: 'an RFC 3339 time, e.g. 2026-11-24T03:30:00Z: only backups created before it' })),
  },
  { additionalProperties: false },
);

export const JobListQuery = Type.Object(
  {
    limit: Limit,
    kind: Type.Optional(Type.Union(JOB_KINDS.map((k) => Type.Literal(k)))),
    state: Type.Optional(JobStateSchema),
  },
  { additionalProperties: false },
);

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({ minLength: 1, maxLength: 200, pattern: '^[\\x20-\\x7e]+$', description: '1 to 200 printable characters; a retried request with the same key gets the same job' }),
  ),
});

/** POST /v1/backups takes no options yet; an empty object or no body. */
export const BackupBody = Type.Object({}, { additionalProperties: false });

export const VerifyBody = Type.Object(
  { deep: Type.Optional(Type.Boolean({ description: 'false (default): check the stored archive against its manifest; true: a restore drill into a throwaway etcd' })) },
  { additionalProperties: false },
);

export const BackupEntrySchema = Type.Object({
  manifest: StoredManifestSchema,
  verification: Type.Optional(VerificationRecordSchema),
  kitMissing: Type.Optional(Type.Array(KitRole, { description: 'the recovery-kit roles this backup lacks, e.g. cluster-configuration (manifest.kit.missing says why); [] when its kit is complete' })),
  futureDated: Type.Optional(Type.Boolean({ description: 'true: dated further in the future than backup.maxClockSkewSeconds; never taken as latest' })),
});

export const BackupListResponse = Type.Object({
  backups: Type.Array(BackupEntrySchema),
  next: Type.Optional(Type.String({ description: 'pass as `before` for the next page' })),
});

export const SubmittedResponse = Type.Object({
  job: JobSchema,
  created: Type.Boolean({ description: 'false when an equal job was already queued or running, or the Idempotency-Key was known' }),
});

export const JobResponse = Type.Object({ job: JobSchema });
export const JobListResponse = Type.Object({ jobs: Type.Array(JobSchema) });

export const HealthResponse = Type.Object({ status: Type.Literal('ok') });
export const ReadyResponse = Type.Object({ ready: Type.Boolean(), reasons: Type.Array(Type.String()) });

export const StatusResponse = Type.Object({
  cluster: Type.String(),
  node: Type.String(),
  version: Type.String(),
  leader: Type.Object({
    self: Type.Boolean({ description: 'this instance leads and runs the work' }),
    identity: Type.Union([Type.String(), Type.Null()], { description: 'the leader, when known' }),
  }),
  ready: Type.Boolean(),
  reasons: Type.Array(Type.String()),
  running: Type.Union([JobSchema, Type.Null()]),
  queued: Type.Integer({ minimum: 0 }),
});

export const RestoreIdParams = Type.Object(
  { id: Type.String({ pattern: '^restore-\\d{8}T\\d{6}\\.\\d{3}Z-[0-9a-f]{6}$', description: 'a restore id like restore-20261124T033000.123Z-1a2b3c' }) },
  { additionalProperties: false },
);

const ConfirmationToken = Type.String({ minLength: 1, maxLength: 256, description: "the plan's confirmationToken: proves the caller applies the plan it reviewed" });

export const ApplyRestoreBody = Type.Object(
  {
    confirmationToken: ConfirmationToken,
    through: Type.Optional(Type.Union(STEP_NAMES.map((s) => Type.Literal(s)), { description: "stop after this step (one of the plan's steps); default: run every step" })),
  },
  { additionalProperties: false },
);

export const RollbackRestoreBody = Type.Object({ confirmationToken: ConfirmationToken }, { additionalProperties: false });

const RESTORE_STATES = ['planned', 'applying', 'interrupted', 'failed', 'partly-applied', 'done', 'rolling-back', 'rolled-back', 'rollback-failed'] as const satisfies readonly RestoreState[];
/** Fails to compile when journal.ts gains a state this list lacks. */
const everyState: Exclude<RestoreState, (typeof RESTORE_STATES)[number]> extends never ? true : never = true;
void everyState;

export const RestoreViewSchema = Type.Object({
  plan: RestorePlanSchema,
  journal: RestoreJournalSchema,
  state: Type.Union(RESTORE_STATES.map((s) => Type.Literal(s)), { description: 'planned, applying, interrupted (the daemon died mid-step: apply again), failed, partly-applied, done, rolling-back, rolled-back, rollback-failed' }),
});

export const RestoreListResponse = Type.Object({ restores: Type.Array(RestoreViewSchema) });

export const PlannedResponse = Type.Object({
  plan: RestorePlanSchema,
  /** For a dry run: the job that runs it; poll it at /v1/jobs/{id}. */
  job: Type.Optional(JobSchema),
});

/** The shared Problem schema (errors.ts, added to each server), by reference. */
const ProblemRef = Type.Unsafe<ProblemBody>(Type.Ref('Problem'));

/** Error responses every authenticated route can give: problem details, one schema. */
export const errorResponses = {
  '4xx': {
    description: 'The request cannot be served: a problem (RFC 9457); `code` says which, e.g. BAD_REQUEST, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, NOT_LEADER, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, RATE_LIMITED',
    content: { [PROBLEM_CONTENT_TYPE]: { schema: ProblemRef } },
  },
  '5xx': {
    description: 'The daemon failed: a problem (RFC 9457), e.g. STORE_FAILED, ETCD_UNAVAILABLE, DAEMON_UNREACHABLE, INTERNAL',
    content: { [PROBLEM_CONTENT_TYPE]: { schema: ProblemRef } },
  },
} as const;

/** A 201 or 202 whose Location header names what was made: the job to poll, the restore to read. */
export function createdAt<T extends TSchema>(schema: T, description: string, location: string) {
  return {
    description,
    headers: { Location: { type: 'string', description: location } },
    content: { 'application/json': { schema } },
  } as const;
}
