import { errorResponses, HealthResponse, ReadyResponse, StatusResponse } from '../schemas.ts';
import type { App, RouteContext } from './context.ts';

/** Liveness and readiness, without authentication: on the API and on the metrics listener. */
export function registerHealthRoutes(app: App, deps: RouteContext['deps']): void {
  app.get('/healthz', {
    config: { access: 'public' },
    schema: { operationId: 'getHealth', summary: 'Liveness: the process answers', tags: ['health'], security: [], response: { 200: HealthResponse } },
  }, async () => ({ status: 'ok' as const }));

  app.get('/readyz', {
    config: { access: 'public' },
    schema: { operationId: 'getReadiness', summary: 'Readiness: 200 when ready, 503 with the reasons when not', tags: ['health'], security: [], response: { 200: ReadyResponse, 503: ReadyResponse } },
  }, async (_request, reply) => {
    const { ready, reasons } = deps.health.ready();
    return reply.code(ready ? 200 : 503).send({ ready, reasons });
  });
}

/** Who this instance is, who leads, and what runs: one request for `lifeboat status`. */
export function registerStatusRoute(app: App, ctx: RouteContext): void {
  const { deps } = ctx;
  app.get('/v1/status', {
    config: { access: 'viewer' },
    schema: { operationId: 'getStatus', summary: 'This instance: identity, leadership, readiness, the running job', tags: ['health'], response: { 200: StatusResponse, ...errorResponses } },
  }, async () => {
    const { ready, reasons } = deps.health.ready();
    const [running] = deps.jobs.list({ limit: 1, state: 'running' });
    return {
      ...deps.identity,
      leader: { self: deps.leadership.isLeader(), identity: deps.leadership.leader() ?? null },
      ready,
      reasons,
      running: running ?? null,
      queued: deps.jobs.list({ limit: 1000, state: 'queued' }).length,
    };
  });
}
