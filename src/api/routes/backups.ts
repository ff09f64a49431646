import { BadRequestError } from '../../errors/errors.ts';
import {
  BackupBody,
  createdAt,
  BackupEntrySchema,
  BackupIdParams,
  BackupListQuery,
  BackupListResponse,
  BackupRefParams,
  errorResponses,
  IdempotencyHeaders,
  SubmittedResponse,
  VerifyBody,
} from '../schemas.ts';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { JobRequest, Submitted } from '../../jobs/job.ts';
import type { BackupJobParams } from '../../jobs/params.ts';
import type { App, RouteContext } from './context.ts';
import { accepted } from './jobs.ts';

const tags = ['backups'];

/** The catalogue (read from the shared store by every instance) and the work on it (leader only). */
export function registerBackupRoutes(app: App, ctx: RouteContext): void {
  const { deps } = ctx;

  app.get('/v1/backups', {
    config: { access: 'viewer' },
    schema: {
      operationId: 'listBackups',
      summary: 'The committed backups, newest first',
      tags,
      querystring: BackupListQuery,
      response: { 200: BackupListResponse, ...errorResponses },
    },
  }, async (request) => {
    const { limit, before } = request.query;
    const options: { limit: number; before?: Date } = { limit };
    if (before !== undefined) {
      const at = new Date(before);
      if (Number.isNaN(at.getTime())) throw new BadRequestError('/query/before', `/query/before "${before}" is not a valid time`);
      options.before = at;
    }
    const backups = await deps.backups.list(options);
    const last = backups.at(-1);
    return backups.length === limit && last ? { backups, next: last.manifest.createdAt } : { backups };
  });

  app.get('/v1/backups/:id', {
    config: { access: 'viewer' },
    schema: {
      operationId: 'getBackup',
      summary: "One backup's stored manifest and its newest verification",
      tags,
      params: BackupRefParams,
      response: { 200: BackupEntrySchema, ...errorResponses },
    },
  }, async (request) => deps.backups.get(request.params.id));

  app.post('/v1/backups', {
    config: { access: 'operator', leaderOnly: true },
    schema: {
      operationId: 'startBackup',
      summary: 'Start a backup (202, then poll the job)',
      tags,
      headers: IdempotencyHeaders,
      body: BackupBody,
      response: { 202: createdAt(SubmittedResponse, 'The backup job, queued or running', '/v1/jobs/{id} of the job: poll it'), ...errorResponses },
    },
  }, async (request, reply) => submit(ctx, request, reply, { kind: 'backup', params: {} }));

  app.post('/v1/backups/:id/verify', {
    config: { access: 'operator', leaderOnly: true },
    schema: {
      operationId: 'verifyBackup',
      summary: 'Start a verification of a backup (202, then poll the job); deep: true is a restore drill',
      tags,
      params: BackupRefParams,
      headers: IdempotencyHeaders,
      body: VerifyBody,
      response: { 202: createdAt(SubmittedResponse, 'The verify or drill job, queued or running', '/v1/jobs/{id} of the job: poll it'), ...errorResponses },
    },
  }, async (request, reply) => {
    // `latest` is resolved now, so the job checks the backup that was newest when asked, and an
    // unknown id is a 404 here rather than a failed job later.
    const entry = await deps.backups.get(request.params.id);
    const backupId = entry.manifest.backupId;
    return submit(ctx, request, reply, { kind: request.body.deep === true ? 'drill' : 'verify', params: { backupId } satisfies BackupJobParams });
  });

  app.delete('/v1/backups/:id', {
    config: { access: 'operator', leaderOnly: true },
    schema: {
      operationId: 'deleteBackup',
      summary: 'Delete a backup; refused for object-locked backups and the newest verified one',
      tags,
      params: BackupIdParams,
      response: { 204: { type: 'null', description: 'deleted' }, ...errorResponses },
    },
  }, async (request, reply) => {
    await deps.backups.delete(request.params.id, ctx.principal(request).name);
    return reply.code(204).send();
  });
}

/**
 * Submits a job for the caller. The Idempotency-Key is scoped to the caller, so two callers
 * cannot collide on (or learn of) each other's keys.
 */
function submit(ctx: RouteContext, request: FastifyRequest, reply: FastifyReply, job: Pick<JobRequest, 'kind' | 'params'>): Submitted {
  const principal = ctx.principal(request);
  const key = request.headers['idempotency-key'];
  const submitted = ctx.deps.jobs.submit({
    ...job,
    trigger: 'api',
    requestedBy: principal.name,
    ...(typeof key === 'string' ? { idempotencyKey: `${principal.via}:${principal.name}:${key}` } : {}),
  });
  return accepted(ctx, request, reply, submitted);
}
