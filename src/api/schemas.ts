import { Type, type Static } from '@sinclair/typebox';
import { StoredManifestSchema } from '../archive/manifest.ts';
import { JOB_KINDS, JobSchema, JobStateSchema } from '../jobs/job.ts';
import { VerificationRecordSchema } from '../verify/record.ts';
import { ErrorSchema } from './errors.ts';

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
export type BackupListQuery = Static<typeof BackupListQuery>;

export const JobListQuery = Type.Object(
  {
    limit: Limit,
    kind: Type.Optional(Type.Union(JOB_KINDS.map((k) => Type.Literal(k)))),
    state: Type.Optional(JobStateSchema),
  },
  { additionalProperties: false },
);
export type JobListQuery = Static<typeof JobListQuery>;

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
export type VerifyBody = Static<typeof VerifyBody>;

export const BackupEntrySchema = Type.Object({
  manifest: StoredManifestSchema,
  verification: Type.Optional(VerificationRecordSchema),
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

/** Error responses every authenticated route can give. */
export const errorResponses = {
  '4xx': ErrorSchema,
  '5xx': ErrorSchema,
} as const;
