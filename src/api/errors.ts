import { Type, type Static } from '@sinclair/typebox';
import type { FastifyError } from 'fastify';
import {
  BadRequestError,
  ConfigError,
  LifeboatError,
  NotLeaderError,
  publicErrorInfo,
  RateLimitedError,
  type ErrorCode,
} from '../errors/errors.ts';

/**
 * The one place where errors become HTTP responses. Every typed error's code has a status here
 * (a new code fails to compile until it gets one); framework errors for malformed requests keep
 * their 4xx status; anything else is a bug: logged with its stack, answered with a generic 500.
 */
export const STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400,
  UNSAFE_PATH: 400,
  CONFIG_INVALID: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  NOT_LEADER: 409,
  OBJECT_LOCKED: 409,
  BACKUP_PROTECTED: 409,
  RATE_LIMITED: 429,
  DAEMON_UNREACHABLE: 502,
  INTERNAL: 500,
  STORE_FAILED: 502,
  ETCD_UNAVAILABLE: 503,
  KEY_INVALID: 500,
  KIT_FILE_MISSING: 500,
  KUBE_OBJECT_UNREADABLE: 500,
  SNAPSHOT_INVALID: 500,
  ARCHIVE_INVALID: 500,
  INTEGRITY_MISMATCH: 500,
  SIGNATURE_INVALID: 500,
  DECRYPT_FAILED: 500,
  NO_MATCHING_IDENTITY: 500,
  DESTINATION_NOT_EMPTY: 500,
  TOOL_FAILED: 500,
  CANCELLED: 500,
  CLOCK_SKEW: 500,
};

/** Every error response's body. */
export const ErrorSchema = Type.Object(
  {
    code: Type.String({ description: 'stable error code, e.g. NOT_FOUND, NOT_LEADER, BAD_REQUEST' }),
    message: Type.String(),
    hint: Type.Optional(Type.String({ description: 'what to do next' })),
    field: Type.Optional(Type.String({ description: 'the offending part of the request, e.g. /body/deep' })),
    leader: Type.Optional(Type.String({ description: 'with NOT_LEADER: the instance that leads, when known' })),
    leaderUrl: Type.Optional(Type.String({ description: "with NOT_LEADER: the leader's API, https://host:port, when known" })),
  },
  { additionalProperties: false },
);
export type ErrorBody = Static<typeof ErrorSchema>;

export interface ErrorResponse {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** Not the client's fault: log it (with the stack when `unexpected`). */
  serverSide: boolean;
  unexpected: boolean;
}

/** Turns anything thrown while handling a request into the response the client sees. */
export function errorResponse(err: unknown): ErrorResponse {
  if (err instanceof LifeboatError) {
    const status = STATUS_BY_CODE[err.code] ?? 500;
    const body: ErrorBody = publicErrorInfo(err);
    if (err instanceof BadRequestError || err instanceof ConfigError) body.field = err.field;
    if (err instanceof NotLeaderError && err.leader !== undefined) body.leader = err.leader;
    if (err instanceof NotLeaderError && err.leaderUrl !== undefined) body.leaderUrl = err.leaderUrl;
    const headers: Record<string, string> = {};
    if (err.code === 'UNAUTHENTICATED') headers['www-authenticate'] = 'Bearer realm="lifeboat"';
    if (err instanceof RateLimitedError) headers['retry-after'] = String(err.retryAfterSeconds);
    return { status, body, headers, serverSide: status >= 500, unexpected: false };
  }
  const framework = frameworkClientError(err);
  if (framework) {
    return { status: framework.status, body: { code: 'BAD_REQUEST', message: framework.message }, headers: {}, serverSide: false, unexpected: false };
  }
  return { status: 500, body: publicErrorInfo(err), headers: {}, serverSide: true, unexpected: true };
}

/**
 * Fastify's own errors for a malformed request (bad JSON, empty body, unsupported media type,
 * body too large) carry a 4xx status and a message written for the client.
 */
function frameworkClientError(err: unknown): { status: number; message: string } | undefined {
  if (!(err instanceof Error)) return undefined;
  const { statusCode, code } = err as Partial<FastifyError>;
  if (typeof statusCode !== 'number' || statusCode < 400 || statusCode > 499) return undefined;
  const ours = typeof code === 'string' && code.startsWith('FST_');
  // The JSON body parser rethrows JSON.parse's SyntaxError with statusCode 400.
  if (!ours && !(err instanceof SyntaxError)) return undefined;
  const message =
    err instanceof SyntaxError ? `the body is not valid JSON: ${err.message}`
      : code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'Unsupported Media Type: send a JSON body with Content-Type: application/json, or no body'
        : err.message;
  return { status: statusCode, message: oneLine(message) };
}

function oneLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/** The body of a 404 or 405 in the same JSON shape as every other error. */
export function noRouteBody(method: string, url: string, allowed: string[]): { status: number; body: ErrorBody; headers: Record<string, string> } {
  const path = oneLine(url.split('?')[0] ?? '').slice(0, 200);
  if (allowed.length > 0) {
    return {
      status: 405,
      body: { code: 'BAD_REQUEST', message: `${method} is not allowed on ${path}; it takes ${allowed.join(', ')}` },
      headers: { allow: allowed.join(', ') },
    };
  }
  return {
    status: 404,
    body: { code: 'NOT_FOUND', message: `no route ${method} ${path}`, hint: 'the API is described at /openapi.json' },
    headers: {},
  };
}
