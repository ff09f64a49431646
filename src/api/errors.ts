import { Type, type Static } from '@sinclair/typebox';
import type { FastifyError } from 'fastify';
import {
  BadRequestError,
  ConfigError,
  LifeboatError,
  MethodNotAllowedError,
  NotFoundError,
  NotLeaderError,
  publicErrorInfo,
  RateLimitedError,
  ShuttingDownError,
  type ErrorCode,
} from '../errors/errors.ts';

/**
 * The one place where errors become HTTP responses: RFC 9457 problem details
 * (application/problem+json). Every typed error's code has a status and a title here (a new
 * code fails to compile until it gets them); framework errors for malformed requests keep their
 * 4xx status; anything else is a bug: logged with its stack, answered with a generic 500.
 */
export const PROBLEMS: Readonly<Record<ErrorCode, { status: number; title: string }>> = {
  BAD_REQUEST: { status: 400, title: 'The request is not valid' },
  UNSAFE_PATH: { status: 400, title: 'A path would escape its destination' },
  CONFIG_INVALID: { status: 400, title: 'A setting is not valid' },
  UNAUTHENTICATED: { status: 401, title: 'No valid credentials' },
  FORBIDDEN: { status: 403, title: 'The role does not allow this' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'The path does not take this method' },
  CONFLICT: { status: 409, title: 'The request conflicts with the current state' },
  NOT_LEADER: { status: 409, title: 'This instance is not the leader' },
  OBJECT_LOCKED: { status: 409, title: 'The backup is under Object Lock' },
  BACKUP_PROTECTED: { status: 409, title: 'Retention must keep this backup' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'The request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'The request body is not JSON' },
  RATE_LIMITED: { status: 429, title: 'Too many failed authentications' },
  INTERNAL: { status: 500, title: 'Internal error' },
  KEY_INVALID: { status: 500, title: 'A key is not valid' },
  KIT_FILE_MISSING: { status: 500, title: 'A recovery-kit file is missing' },
  KUBE_OBJECT_UNREADABLE: { status: 500, title: 'A Kubernetes object cannot be read' },
  SNAPSHOT_INVALID: { status: 500, title: 'The etcd snapshot is not valid' },
  ARCHIVE_INVALID: { status: 500, title: 'The archive is not valid' },
  INTEGRITY_MISMATCH: { status: 500, title: 'The bytes do not match the manifest' },
  SIGNATURE_INVALID: { status: 500, title: 'The manifest signature is not valid' },
  DECRYPT_FAILED: { status: 500, title: 'The archive cannot be decrypted' },
  NO_MATCHING_IDENTITY: { status: 500, title: 'No identity matches the archive' },
  DESTINATION_NOT_EMPTY: { status: 500, title: 'The destination is not empty' },
  TOOL_FAILED: { status: 500, title: 'An external tool failed' },
  CANCELLED: { status: 500, title: 'Cancelled' },
  CLOCK_SKEW: { status: 500, title: 'The clock is off' },
  DAEMON_UNREACHABLE: { status: 502, title: 'Another daemon cannot be reached' },
  STORE_FAILED: { status: 502, title: 'The backup store failed' },
  ETCD_UNAVAILABLE: { status: 503, title: 'etcd is unavailable' },
  SHUTTING_DOWN: { status: 503, title: 'The daemon is shutting down' },
};

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
/** Problem types are `https://lifeboat.dev/problems/<code in kebab case>`, e.g. .../not-leader. */
export const PROBLEM_TYPE_BASE = 'https://lifeboat.dev/problems/';

export function problemType(code: ErrorCode): string {
  return `${PROBLEM_TYPE_BASE}${code.toLowerCase().replaceAll('_', '-')}`;
}

/** Every error response's body: RFC 9457 members, then Lifeboat's. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: `the problem type, ${PROBLEM_TYPE_BASE}<code in kebab case>, e.g. ${PROBLEM_TYPE_BASE}not-leader` }),
    title: Type.String({ description: "the problem type's summary, the same for every occurrence" }),
    status: Type.Integer({ description: 'the HTTP status code' }),
    detail: Type.String({ description: 'what went wrong this time' }),
    code: Type.String({ description: 'stable error code, e.g. NOT_FOUND, NOT_LEADER, BAD_REQUEST, METHOD_NOT_ALLOWED' }),
    message: Type.String({ description: 'the same as detail, for clients written before problem details' }),
    hint: Type.Optional(Type.String({ description: 'what to do next' })),
    field: Type.Optional(Type.String({ description: 'the offending part of the request, e.g. /body/deep' })),
    leader: Type.Optional(Type.String({ description: 'with NOT_LEADER: the instance that leads, when known' })),
    leaderUrl: Type.Optional(Type.String({ description: "with NOT_LEADER: the leader's API, https://host:port, when known" })),
  },
  { $id: 'Problem', additionalProperties: false, description: 'An error, as RFC 9457 problem details (application/problem+json)' },
);
export type ProblemBody = Static<typeof ProblemSchema>;

type Extensions = Pick<ProblemBody, 'hint' | 'field' | 'leader' | 'leaderUrl'>;

/** The body of a problem of `code`; `status` only where a framework error has its own. */
export function problem(code: ErrorCode, detail: string, extensions: Extensions = {}, status = PROBLEMS[code].status): ProblemBody {
  const body: ProblemBody = { type: problemType(code), title: PROBLEMS[code].title, status, detail, code, message: detail };
  for (const key of ['hint', 'field', 'leader', 'leaderUrl'] as const) {
    const value = extensions[key];
    if (value !== undefined) body[key] = value;
  }
  return body;
}

export interface ErrorResponse {
  status: number;
  body: ProblemBody;
  /** With content-type application/problem+json. */
  headers: Record<string, string>;
  /** Not the client's fault: log it (with the stack when `unexpected`). */
  serverSide: boolean;
  unexpected: boolean;
}

/** Turns anything thrown while handling a request into the response the client sees. */
export function errorResponse(err: unknown): ErrorResponse {
  const headers: Record<string, string> = { 'content-type': PROBLEM_CONTENT_TYPE };
  if (err instanceof LifeboatError) {
    const { status } = PROBLEMS[err.code];
    const extensions: Extensions = err.hint === undefined ? {} : { hint: err.hint };
    if (err instanceof BadRequestError || err instanceof ConfigError) extensions.field = err.field;
    if (err instanceof NotLeaderError) {
      extensions.leader = err.leader;
      extensions.leaderUrl = err.leaderUrl;
    }
    if (err.code === 'UNAUTHENTICATED') headers['www-authenticate'] = 'Bearer realm="lifeboat"';
    if (err instanceof RateLimitedError) headers['retry-after'] = String(err.retryAfterSeconds);
    if (err instanceof MethodNotAllowedError) headers.allow = err.allowed.join(', ');
    if (err instanceof ShuttingDownError) headers.connection = 'close';
    return { status, body: problem(err.code, err.message, extensions), headers, serverSide: status >= 500, unexpected: false };
  }
  const framework = frameworkClientError(err);
  if (framework) {
    return { status: framework.status, body: problem(framework.code, framework.message, {}, framework.status), headers, serverSide: false, unexpected: false };
  }
  const info = publicErrorInfo(err);
  return { status: 500, body: problem('INTERNAL', info.message), headers, serverSide: true, unexpected: true };
}

/**
 * Fastify's own errors for a malformed request (bad JSON, empty body, unsupported media type,
 * body too large) carry a 4xx status and a message written for the client.
 */
function frameworkClientError(err: unknown): { status: number; code: ErrorCode; message: string } | undefined {
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
  const ofStatus: ErrorCode = statusCode === 413 ? 'PAYLOAD_TOO_LARGE' : statusCode === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'BAD_REQUEST';
  return { status: statusCode, code: ofStatus, message: oneLine(message) };
}

function oneLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}...` : line;
}

/** What a request no route takes is: 405 when the path takes other methods, else 404. */
export function noRouteError(method: string, url: string, allowed: string[]): LifeboatError {
  const path = oneLine(url.split('?')[0] ?? '').slice(0, 200);
  if (allowed.length > 0) return new MethodNotAllowedError(allowed, `${method} is not allowed on ${path}; it takes ${allowed.join(', ')}`);
  return new NotFoundError(`no route ${method} ${path}`, { hint: 'the API is described at /openapi.json' });
}

/**
 * The raw HTTP response for a request the HTTP parser rejects (malformed, headers too large, too
 * slow), written on the socket before it is closed.
 */
export function rawProblemResponse(status: number, reason: string, detail: string): string {
  const body = JSON.stringify(problem('BAD_REQUEST', detail, {}, status));
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
