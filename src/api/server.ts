import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import swagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { readField } from '../config/load.ts';
import { ConfigError, NotLeaderError, ShuttingDownError, UnauthenticatedError } from '../errors/errors.ts';
import { allows, Authenticator, FailureLimiter, forbidden, type Access, type Principal } from './auth.ts';
import type { ApiDeps } from './deps.ts';
import { errorResponse, noRouteError, ProblemSchema, rawProblemResponse } from './errors.ts';
import { FORWARDED_BY, forwardToLeader, NODE_HEADER, peerTrust, routeToLeader, type LeaderRoute } from './forward.ts';
import { registerBackupRoutes } from './routes/backups.ts';
import { registerChangeRoutes } from './routes/changes.ts';
import type { App, RouteContext, TypeBoxProvider } from './routes/context.ts';
import { registerHealthRoutes, registerStatusRoute } from './routes/health.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { registerRestoreRoutes } from './routes/restores.ts';
import { TlsReloader } from './tls-reload.ts';
import { TokenFile } from './tokens.ts';
import { validatorCompiler } from './validation.ts';

/** Requests carry small JSON bodies at most. */
const BODY_LIMIT = 64 * 1024;
const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface Servers {
  /** The API, HTTPS only: /v1 (authenticated), /healthz, /readyz, /openapi.json. */
  api: App;
  /** Plain HTTP, no auth: /metrics, /healthz, /readyz. */
  metrics: App;
  /** Listens on api.listen and metrics.listen; resolves with the ports bound (for port 0). */
  listen(): Promise<{ apiPort: number; metricsPort: number }>;
  close(): Promise<void>;
}

export interface ServerOptions {
  /** The clock of the authentication rate limit (milliseconds). */
  now?: () => number;
  /** How often the TLS files are checked for a renewal; default api.tls.reloadIntervalSeconds. */
  tlsReloadIntervalMs?: number;
}

/** What one request accumulates for its audit line. */
interface RequestFacts {
  principal?: Principal;
  jobId?: string;
  created?: boolean;
  restoreId?: string;
  code?: string;
  /** The leader this instance forwarded the request to. */
  forwardedTo?: string;
}

/**
 * Builds both listeners. Throws ConfigError (naming the field) when the TLS files or the tokens
 * file cannot be read or are invalid, so a bad setup stops the daemon at start.
 */
export async function createServers(deps: ApiDeps, options: ServerOptions = {}): Promise<Servers> {
  const log = deps.log.child({ component: 'api' });
  const frameworkLog = atLeastWarn(log);
  const { tls } = deps.api;
  const clientCa = tls.clientCaFile === undefined ? undefined : readField(tls.clientCaFile, '/api/tls/clientCaFile');
  const https = {
    cert: readField(tls.certFile, '/api/tls/certFile'),
    key: readField(tls.keyFile, '/api/tls/keyFile'),
    minVersion: 'TLSv1.2' as const,
    // Token clients have no certificate, so the handshake must not require one: the CA check
    // result (socket.authorized) decides instead, per request.
    ...(clientCa ? { ca: clientCa, requestCert: true, rejectUnauthorized: false } : {}),
  };
  const tokens = deps.api.tokensFile === undefined ? undefined : new TokenFile(deps.api.tokensFile, log);
  const authenticator = new Authenticator({ tokens, clientCerts: clientCa !== undefined, certRoles: deps.api.clientCertRoles });
  const limiter = new FailureLimiter(deps.api.authFailuresPerMinute, options.now);
  // How a follower checks the leader's certificate when it forwards a request (forward.ts).
  const trust = peerTrust(tls);
  const facts = new WeakMap<FastifyRequest, RequestFacts>();
  const factsOf = (request: FastifyRequest): RequestFacts => {
    let f = facts.get(request);
    if (!f) {
      f = {};
      facts.set(request, f);
    }
    return f;
  };

  let api: App;
  try {
    api = Fastify({
      https,
      ...common(frameworkLog),
    }).withTypeProvider<TypeBoxProvider>();
  } catch (err) {
    throw new ConfigError('/api/tls', `the certificate or key is not usable: ${(err as Error).message}`, { hint: 'check api.tls.certFile and api.tls.keyFile (PEM, matching pair)' });
  }
  // cert-manager renews the certificate (and may rotate the client CA) by replacing the files.
  const reloader = new TlsReloader({
    files: tls,
    apply: (context) => (api.server as HttpsServer).setSecureContext(context),
    log,
    intervalMs: options.tlsReloadIntervalMs ?? tls.reloadIntervalSeconds * 1000,
    base: { minVersion: https.minVersion },
  });
  const ctx: RouteContext = {
    deps,
    principal: (request) => {
      const principal = facts.get(request)?.principal;
      // The onRequest hook authenticates every non-public route before its handler runs.
      if (!principal) throw new UnauthenticatedError('no credentials');
      return principal;
    },
    audit: (request, more) => Object.assign(factsOf(request), more),
    leaderRoute: (request) =>
      routeToLeader({
        node: deps.identity.node,
        isLeader: deps.leadership.isLeader(),
        leader: deps.leadership.leader(),
        leaderUrl: deps.leadership.leaderApiUrl?.(),
        via: ctx.principal(request).via,
        forwarded: request.headers[FORWARDED_BY] !== undefined,
        canForward: trust !== undefined,
        method: request.method,
      }),
    relay: async (request, reply, route) => {
      // routeToLeader forwards only when there is a trust.
      if (!trust) throw new NotLeaderError(route.leader, `${deps.identity.node} is not the leader; ${route.leader} is`, { leaderUrl: route.url });
      const answer = await forwardToLeader({
        leader: route.leader,
        url: route.url,
        method: request.method,
        path: request.url,
        headers: request.headers,
        body: request.body,
        from: deps.identity.node,
        clientIp: request.ip,
        trust,
        timeoutMs: deps.api.forwardTimeoutSeconds * 1000,
      });
      factsOf(request).forwardedTo = route.leader;
      return reply.code(answer.status).headers({ ...answer.headers, [FORWARDED_BY]: deps.identity.node }).send(answer.body);
    },
  };

  prepare(api, log, factsOf);
  await api.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Lifeboat API',
        version: deps.identity.version,
        description:
          'etcd backup and disaster recovery. /v1 needs a client certificate (mTLS) or `Authorization: Bearer <token>`. ' +
          'Roles: viewer (GET, except restores), operator (+ backup, verify, delete), restorer (+ every /v1/restores route: a plan holds its confirmation token). ' +
          'Errors are problem details (RFC 9457, Content-Type: application/problem+json): {type, title, status, detail, code, message, hint?, field?, leader?, leaderUrl?}; ' +
          'type is https://lifeboat.dev/problems/<code in kebab case> (e.g. .../not-leader), code the stable error code, message the same as detail. POST and DELETE of leader-only work on an instance that is not the leader are forwarded to the leader ' +
          'when they carry a bearer token (the answer is the leader\'s; 502 DAEMON_UNREACHABLE if it cannot be reached), and answered 409 NOT_LEADER naming the leader and its URL otherwise ' +
          '(a client certificate cannot be forwarded). GET /v1/jobs/{id} of a job this instance does not know is forwarded the same way. ' +
          '/v1/restores are per node: every instance serves them whether a leader is elected or not. Every response names the node that answered in the Lifeboat-Node header.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    // Shared schemas (Problem) are named by their $id in components.schemas.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    // Every body of this API is optional (no body is the empty object), which the generator
    // cannot tell from the schema.
    transformObject: (documents) => {
      const doc = 'openapiObject' in documents ? documents.openapiObject : documents.swaggerObject;
      for (const item of Object.values(doc.paths ?? {}) as Record<string, { requestBody?: { required?: boolean } }>[]) {
        for (const operation of Object.values(item)) if (operation?.requestBody) operation.requestBody.required = false;
      }
      return doc;
    },
  });

  api.addHook('onRequest', async (request) => {
    const access = accessOf(request);
    if (access === 'public') return;
    let principal: Principal;
    try {
      principal = await authenticator.authenticate(request);
    } catch (err) {
      // Valid credentials always pass; only failures are limited (429 once an address has too many).
      if (err instanceof UnauthenticatedError) limiter.fail(request.ip);
      throw err;
    }
    factsOf(request).principal = principal;
    const route = request.routeOptions.url ?? 'this route';
    if (!allows(principal.role, access)) throw forbidden(principal, request.method, route, access);
  });

  // Leader-only work on a follower goes to the leader, once the body is parsed (forward.ts).
  api.addHook('preValidation', async (request, reply) => {
    if (request.routeOptions.config.leaderOnly !== true) return;
    const to: LeaderRoute = ctx.leaderRoute(request);
    if (to.kind === 'local') return;
    if (to.kind === 'forward') return ctx.relay(request, reply, to);
    throw new NotLeaderError(to.leader, `${deps.identity.node} is not the leader; ${to.reason}`, { hint: to.hint, leaderUrl: to.url });
  });

  // Which instance answered: behind a Service, the client cannot tell otherwise.
  api.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader(NODE_HEADER)) void reply.header(NODE_HEADER, deps.identity.node);
  });

  api.addHook('onResponse', async (request, reply) => {
    if (!MUTATING.has(request.method)) return;
    const f = facts.get(request) ?? {};
    const route = routeOf(request);
    log.info(
      {
        audit: true,
        who: f.principal?.name ?? null,
        role: f.principal?.role ?? null,
        via: f.principal?.via ?? null,
        ip: request.ip,
        method: request.method,
        route,
        params: request.is404 ? {} : request.params,
        status: reply.statusCode,
        ...(f.restoreId !== undefined ? { restoreId: f.restoreId } : {}),
        ...(f.jobId !== undefined ? { jobId: f.jobId, created: f.created } : {}),
        ...(f.code !== undefined ? { code: f.code } : {}),
        ...(f.forwardedTo !== undefined ? { forwardedTo: f.forwardedTo } : {}),
        ...(typeof request.headers[FORWARDED_BY] === 'string' ? { forwardedBy: request.headers[FORWARDED_BY] } : {}),
      },
      `${request.method} ${route} ${reply.statusCode}`,
    );
  });

  registerHealthRoutes(api, deps);
  registerStatusRoute(api, ctx);
  registerBackupRoutes(api, ctx);
  registerJobRoutes(api, ctx);
  registerRestoreRoutes(api, ctx);
  registerChangeRoutes(api, ctx);
  api.get('/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, async () => api.swagger());

  const metrics = Fastify({ ...common(frameworkLog), bodyLimit: 1024 }).withTypeProvider<TypeBoxProvider>();
  prepare(metrics, log, factsOf);
  registerHealthRoutes(metrics, deps);
  metrics.get('/metrics', { config: { access: 'public' } }, async (_request, reply) => {
    const body = await deps.metrics.render();
    return reply.header('content-type', deps.metrics.contentType).send(body);
  });

  return {
    api,
    metrics,
    async listen() {
      await api.listen({ host: deps.api.listen.host, port: deps.api.listen.port });
      await reloader.start();
      try {
        await metrics.listen({ host: deps.metricsListen.host, port: deps.metricsListen.port });
      } catch (err) {
        reloader.stop();
        await api.close();
        throw err;
      }
      const apiPort = (api.server.address() as AddressInfo).port;
      const metricsPort = (metrics.server.address() as AddressInfo).port;
      log.info({ phase: 'listening', api: `https://${deps.api.listen.host}:${apiPort}`, metrics: `http://${deps.metricsListen.host}:${metricsPort}`, tokens: tokens?.size ?? 0, clientCerts: clientCa !== undefined, forwardToLeader: trust?.source ?? false }, 'API listening');
      if (!trust) log.warn({ phase: 'listening' }, 'leader-only requests that reach this instance while it follows are not forwarded (answered 409 NOT_LEADER): set api.tls.peerCaFile, or put the CA chain in api.tls.certFile');
      return { apiPort, metricsPort };
    },
    async close() {
      reloader.stop();
      await Promise.all([api.close(), metrics.close()]);
    },
  };
}

function common(logger: FastifyBaseLogger) {
  return {
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // A request (headers and body) must arrive within this, so slow clients cannot hold sockets.
    requestTimeout: 30_000,
    // Fastify's own 503 while closing is not problem details: prepare() answers it instead.
    return503OnClosing: false,
    clientErrorHandler,
    // Errors the router raises before any route or hook runs (a path parameter too long: 414, a
    // malformed URL: 400) are problem details too.
    frameworkErrors: (err: FastifyError, _request: FastifyRequest, reply: FastifyReply) => {
      const response = errorResponse(err);
      void reply.code(response.status).headers(response.headers).send(response.body);
    },
  };
}

/** Validation, the error handler, the not-found handler and the 503 while closing; the same on both listeners. */
function prepare(app: App, log: Logger, factsOf: (request: FastifyRequest) => RequestFacts): void {
  const routes = new Map<string, Set<string>>();
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // The first hook: a request that arrives (say, on a kept-alive connection) while the server closes.
  app.addHook('onRequest', async () => {
    if (closing) throw new ShuttingDownError('the daemon is shutting down', { hint: 'retry; another instance behind the Service answers' });
  });
  // Every route's error responses refer to it (schemas.ts), and /openapi.json names it Problem.
  app.addSchema(ProblemSchema);
  app.setValidatorCompiler(validatorCompiler);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const set = routes.get(route.url) ?? new Set<string>();
    for (const m of methods) set.add(m);
    routes.set(route.url, set);
  });
  app.setErrorHandler((err, request, reply) => {
    const response = errorResponse(err);
    factsOf(request).code = response.body.code;
    if (response.unexpected) {
      log.error({ err, method: request.method, route: routeOf(request) }, 'unexpected error while answering an API request');
    } else if (response.serverSide) {
      log.error({ code: response.body.code, err: response.body.message, method: request.method, route: routeOf(request) }, 'an API request failed');
    }
    return reply.code(response.status).headers(response.headers).send(response.body);
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = new Set<string>();
    for (const [pattern, methods] of routes) {
      if (matches(pattern, path)) for (const m of methods) allowed.add(m);
    }
    const response = errorResponse(noRouteError(request.method, request.url, [...allowed].sort()));
    factsOf(request).code = response.body.code;
    return reply.code(response.status).headers(response.headers).send(response.body);
  });
}

/** `/v1/backups/:id/verify` against a concrete path. */
function matches(pattern: string, path: string): boolean {
  const a = pattern.split('/');
  const b = path.split('/');
  return a.length === b.length && a.every((part, i) => part.startsWith(':') ? (b[i] ?? '') !== '' : part === b[i]);
}

function accessOf(request: FastifyRequest): Access {
  if (request.is404) {
    // Unknown paths under /v1 are not revealed to anonymous clients.
    const path = request.url.split('?')[0] ?? '';
    return path === '/v1' || path.startsWith('/v1/') ? 'viewer' : 'public';
  }
  return request.routeOptions.config.access ?? 'viewer';
}

/** The route's pattern; for a request no route matched, its path (clipped). */
function routeOf(request: FastifyRequest): string {
  if (request.routeOptions.url !== undefined) return request.routeOptions.url;
  const path = request.url.split('?')[0] ?? '';
  return path.length > 200 ? `${path.slice(0, 200)}...` : path;
}

/** Fastify's own log lines at warn and above only: audit lines are written separately. */
function atLeastWarn(log: Logger): FastifyBaseLogger {
  const warn = log.levels.values.warn ?? 40;
  return log.levelVal > warn ? log : log.child({}, { level: 'warn' });
}

/**
 * An HTTP request the parser rejects (malformed, headers too large, too slow) gets an answer as
 * problem details, like every other error, then the connection is closed.
 */
function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'the request did not arrive in time']
      : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large', 'the request headers are too large']
        : [400, 'Bad Request', 'the request is not valid HTTP'];
  if (socket.writable) {
    socket.end(rawProblemResponse(status, reason, message), () => socket.destroy());
  } else {
    socket.destroy();
  }
}
