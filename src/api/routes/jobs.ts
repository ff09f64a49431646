import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../errors/errors.ts';
import type { Submitted } from '../../jobs/job.ts';
import { errorResponses, JobIdParams, JobListQuery, JobListResponse, JobResponse } from '../schemas.ts';
import type { App, RouteContext } from './context.ts';

const tags = ['jobs'];

/** This instance's jobs: phase, bytes done and total, timings, error. */
export function registerJobRoutes(app: App, ctx: RouteContext): void {
  const { deps } = ctx;

  app.get('/v1/jobs', {
    config: { access: 'viewer' },
    schema: {
      operationId: 'listJobs',
      summary: "This instance's jobs, newest first",
      tags,
      querystring: JobListQuery,
      response: { 200: JobListResponse, ...errorResponses },
    },
  }, async (request) => {
    const { limit, kind, state } = request.query;
    return { jobs: deps.jobs.list({ limit, ...(kind ? { kind } : {}), ...(state ? { state } : {}) }) };
  });

  app.get('/v1/jobs/:id', {
    config: { access: 'viewer' },
    schema: {
      operationId: 'getJob',
      summary: 'One job; one this instance does not know is asked of the leader (with a bearer token)',
      tags,
      params: JobIdParams,
      response: { 200: JobResponse, ...errorResponses },
    },
  }, async (request, reply) => {
    const job = deps.jobs.get(request.params.id);
    if (job) return { job };
    // Behind a Service the job may be the leader's: ask it (forward.ts).
    const to = ctx.leaderRoute(request);
    if (to.kind === 'forward') return ctx.relay(request, reply, to);
    const kept = 'jobs are kept by the instance that ran them (backups and checks: the leader), for daemon.jobHistory jobs';
    throw new NotFoundError(`no job ${request.params.id} on ${deps.identity.node}`, {
      hint: to.kind === 'refuse' && to.leader !== undefined ? `${kept}; ${to.hint}` : kept,
    });
  });
}

/** The answer to a request that submitted a job: 202, where to poll it, and the job on the audit line. */
export function accepted(ctx: RouteContext, request: FastifyRequest, reply: FastifyReply, submitted: Submitted): Submitted {
  ctx.audit(request, { jobId: submitted.job.id, created: submitted.created });
  void reply.code(202).header('location', `/v1/jobs/${submitted.job.id}`);
  return { job: submitted.job, created: submitted.created };
}
