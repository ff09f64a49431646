import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { BadRequestError } from '../errors/errors.ts';
import type { JobKind } from './job.ts';

/**
 * The parameters of a job on one backup (verify, drill): the backup, an id or `latest`. `deep`
 * is read on verify jobs recorded before a drill was a kind of its own (a deep verify is one).
 */
export const BackupJobParamsSchema = Type.Object(
  {
    backupId: Type.String({ minLength: 1 }),
    deep: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type BackupJobParams = Static<typeof BackupJobParamsSchema>;

/**
 * A job's parameters, checked against the schema of its kind as the handler reads them (they
 * come back from the job journal on disk too). A BadRequestError names the first wrong field.
 */
export function readJobParams<T extends TSchema>(kind: JobKind, schema: T, params: Record<string, unknown>): Static<T> {
  if (Value.Check(schema, params)) return params;
  const first = Value.Errors(schema, params).First();
  throw new BadRequestError(`/params${first?.path ?? ''}`, `the parameters of a ${kind} job are not what it takes: ${first?.message ?? 'invalid'} (${JSON.stringify(params).slice(0, 200)})`);
}
