import type { Static, TSchema } from '@sinclair/typebox';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, FastifyTypeProvider, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import type { Principal } from '../auth.ts';
import type { ApiDeps } from '../deps.ts';
import type { LeaderRoute } from '../forward.ts';

/** Request and reply types from the routes' TypeBox schemas. */
export interface TypeBoxProvider extends FastifyTypeProvider {
  readonly validator: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
  readonly serializer: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
}

export type App = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxProvider>;

/** What the route modules get from the server. */
export interface RouteContext {
  deps: ApiDeps;
  /** The authenticated caller of a route that is not public. */
  principal(request: FastifyRequest): Principal;
  /** Adds facts (the job or the restore a request made) to the request's audit line. */
  audit(request: FastifyRequest, facts: { jobId?: string; created?: boolean; restoreId?: string }): void;
  /** Whether this request is served here, forwarded to the leader, or refused (forward.ts). */
  leaderRoute(request: FastifyRequest): LeaderRoute;
  /** Forwards the request to the leader and answers with the leader's answer; 502 DAEMON_UNREACHABLE when it cannot. */
  relay(request: FastifyRequest, reply: FastifyReply, route: Extract<LeaderRoute, { kind: 'forward' }>): Promise<FastifyReply>;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route: `public`, or at least this role (the default is viewer). */
    access?: import('../auth.ts').Access;
    /** Only the elected leader serves it; other instances forward it to the leader, or answer 409 NOT_LEADER. */
    leaderOnly?: boolean;
  }
}
