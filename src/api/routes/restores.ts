import { RestoreRequestSchema } from '../../restore/plan.ts';
import {
  ApplyRestoreBody,
  createdAt,
  errorResponses,
  PlannedResponse,
  RestoreIdParams,
  RestoreListResponse,
  RestoreViewSchema,
  RollbackRestoreBody,
  SubmittedResponse,
} from '../schemas.ts';
import type { App, RouteContext } from './context.ts';
import { accepted } from './jobs.ts';

const tags = ['restores'];

/**
 * Restores of this node: plan (and dry-run), show, apply with the plan's confirmation token,
 * roll back. Every route needs the restorer role: a plan holds its confirmation token, and a
 * fresh control plane's result holds the join command's secrets. Every instance serves them,
 * leader or not (no `leaderOnly`): during a restore etcd is down, so there may be no leader.
 * Request bodies never reach a log line (the audit line has the route, its params and the job).
 */
export function registerRestoreRoutes(app: App, ctx: RouteContext): void {
  const { deps } = ctx;

  app.post('/v1/restores', {
    config: { access: 'restorer' },
    schema: {
      operationId: 'planRestore',
      summary: 'Plan a restore of this node (201 with the plan and its confirmation token); dryRun: true also starts the dry run (its job)',
      description:
        'backup: an id, "latest", or {"before": "<RFC 3339>"}; mode: in-place or fresh-control-plane; members: [{name, peerURL}] (default: the backup\'s); dryRun. ' +
        'Pin clusterToken, bumpRevision and leaseCleanupBy to plan the other members of the same in-place restore. Nothing on the host changes.',
      tags,
      body: RestoreRequestSchema,
      response: { 201: createdAt(PlannedResponse, 'The plan (and the dry run\'s job)', '/v1/restores/{id} of the restore: read it, apply it'), ...errorResponses },
    },
  }, async (request, reply) => {
    const principal = ctx.principal(request);
    const planned = await deps.restores.plan(request.body, principal.name);
    ctx.audit(request, { restoreId: planned.plan.id, ...(planned.job ? { jobId: planned.job.id, created: true } : {}) });
    void reply.code(201).header('location', `/v1/restores/${planned.plan.id}`);
    return planned.job ? { plan: planned.plan, job: planned.job } : { plan: planned.plan };
  });

  app.get('/v1/restores', {
    config: { access: 'restorer' },
    schema: {
      operationId: 'listRestores',
      summary: "This node's restores, oldest first: plan, journal, state",
      tags,
      response: { 200: RestoreListResponse, ...errorResponses },
    },
  }, async () => ({ restores: await deps.restores.list() }));

  app.get('/v1/restores/:id', {
    config: { access: 'restorer' },
    schema: {
      operationId: 'getRestore',
      summary: 'One restore: its plan (with the confirmation token), its journal (each step, what it did, errors) and its state',
      tags,
      params: RestoreIdParams,
      response: { 200: RestoreViewSchema, ...errorResponses },
    },
  }, async (request) => deps.restores.get(request.params.id));

  app.post('/v1/restores/:id/apply', {
    config: { access: 'restorer' },
    schema: {
      operationId: 'applyRestore',
      summary: "Apply a restore's plan on this node (202, then poll the job; its phases are the steps); applying again resumes it",
      tags,
      params: RestoreIdParams,
      body: ApplyRestoreBody,
      response: { 202: createdAt(SubmittedResponse, 'The restore job, queued or running', '/v1/jobs/{id} of the job: poll it'), ...errorResponses },
    },
  }, async (request, reply) => {
    const { confirmationToken, through } = request.body;
    const submitted = await deps.restores.apply(request.params.id, { confirmationToken, ...(through === undefined ? {} : { through }) }, ctx.principal(request).name);
    return accepted(ctx, request, reply, submitted);
  });

  app.post('/v1/restores/:id/rollback', {
    config: { access: 'restorer' },
    schema: {
      operationId: 'rollbackRestore',
      summary: 'Roll a restore back on this node: the old data dir and manifests back, the restored data set aside (202, then poll the job)',
      tags,
      params: RestoreIdParams,
      body: RollbackRestoreBody,
      response: { 202: createdAt(SubmittedResponse, 'The rollback job, queued or running', '/v1/jobs/{id} of the job: poll it'), ...errorResponses },
    },
  }, async (request, reply) => {
    const submitted = await deps.restores.rollback(request.params.id, { confirmationToken: request.body.confirmationToken }, ctx.principal(request).name);
    return accepted(ctx, request, reply, submitted);
  });
}
