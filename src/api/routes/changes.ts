import { Type } from '@sinclair/typebox';
import { BadRequestError } from '../../errors/errors.ts';
import type { ChangeLogFilter } from '../../changes/log.ts';
import { errorResponses } from '../schemas.ts';
import type { App, RouteContext } from './context.ts';

const RFC3339 = '^\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$';
const REVISION = '^[0-9]{1,20}$';

export const ChangeListQuery = Type.Object(
  {
    prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'only keys that start with this, e.g. /registry/namespaces/' })),
    since: Type.Optional(Type.String({ pattern: RFC3339, description: 'an RFC 3339 time: only changes received at or after it' })),
    until: Type.Optional(Type.String({ pattern: RFC3339, description: 'an RFC 3339 time: only changes received before it' })),
    deleted: Type.Optional(Type.Boolean({ description: 'only deletes' })),
    after: Type.Optional(Type.String({ pattern: REVISION, description: "an etcd revision: only changes after it (the previous page's next)" })),
    limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 1000, description: 'at most this many events, 1 to 10000; a transaction is never split, so a page may hold a few more' }),
  },
  { additionalProperties: false },
);

const ChangeEntry = Type.Object(
  {
    time: Type.String({ description: "RFC 3339, UTC: when the leader's watch received the revision" }),
    revision: Type.String({ pattern: REVISION }),
    op: Type.Union([Type.Literal('put'), Type.Literal('delete')]),
    key: Type.String({ description: 'the key as UTF-8 text' }),
    valueBytes: Type.Optional(Type.Integer({ minimum: 0, description: 'the size of the value put' })),
    lease: Type.Optional(Type.String({ description: 'the lease the key was put with' })),
    segmentId: Type.String(),
  },
  { additionalProperties: false },
);

export const ChangeListResponse = Type.Object(
  {
    events: Type.Array(ChangeEntry, { description: 'oldest first' }),
    gaps: Type.Array(Type.Object({ from: Type.String(), to: Type.String(), before: Type.String() }, { additionalProperties: false }), {
      description: 'revisions etcd compacted before they were captured (a full backup was taken after each), and the segment after them',
    }),
    segments: Type.Object({ read: Type.Integer({ minimum: 0 }), total: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
    next: Type.Optional(Type.String({ pattern: REVISION, description: 'more events match: pass it as after for the next page' })),
  },
  { additionalProperties: false },
);

/**
 * The change log (../../changes/log.ts) as `lifeboat changes log` shows it, with the same filters:
 * every segment manifest's signature and the chain are checked first, and only the segments
 * the page needs are decrypted, with this node's encryption.identityFile.
 */
export function registerChangeRoutes(app: App, ctx: RouteContext): void {
  const { deps } = ctx;

  app.get('/v1/changes', {
    config: { access: 'viewer' },
    schema: {
      operationId: 'listChanges',
      summary: 'The captured etcd changes between full backups, oldest first, by key prefix, time and operation',
      tags: ['changes'],
      querystring: ChangeListQuery,
      response: { 200: ChangeListResponse, ...errorResponses },
    },
  }, async (request) => {
    const { prefix, since, until, deleted, after, limit } = request.query;
    const filter: ChangeLogFilter = {
      ...(prefix === undefined ? {} : { prefix }),
      ...(since === undefined ? {} : { since: time('since', since) }),
      ...(until === undefined ? {} : { until: time('until', until) }),
      ...(deleted ? { deletedOnly: true } : {}),
      ...(after === undefined ? {} : { afterRevision: after }),
    };
    const log = await deps.changes.log(filter, limit);
    return { events: log.entries, gaps: log.gaps, segments: { read: log.segmentsRead, total: log.segments }, ...(log.next === undefined ? {} : { next: log.next }) };
  });
}

function time(field: string, value: string): Date {
  const at = new Date(value);
  if (Number.isNaN(at.getTime())) throw new BadRequestError(`/query/${field}`, `/query/${field} "${value}" is not a valid time`);
  return at;
}
