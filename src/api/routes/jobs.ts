import { NotFoundError } from '../../errors/errors.ts';
import { errorResponses, JobIdParams, JobListQuery, JobListResponse, JobResponse } from '../schemas.ts';
import type { App, RouteContext } from './context.ts';

const tags = ['jobs'];

/** This instance's jobs: phase, bytes done and total, timings, error. */
export function registerJobRoutes(app: App, ctx: RouteContext): void {
  const { deps } = ctx;

  app.get('/v1/jobs', {
    config: { access: 'viewer' },
    schema: {
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
      summary: 'One job',
      tags,
      params: JobIdParams,
      response: { 200: JobResponse, ...errorResponses },
    },
  }, async (request) => {
    const job = deps.jobs.get(request.params.id);
    if (!job) {
      throw new NotFoundError(`no job ${request.params.id} on ${deps.identity.node}`, {
        hint: 'jobs are kept by the instance that ran them (the leader), for daemon.jobHistory jobs',
      });
    }
    return { job };
  });
}
