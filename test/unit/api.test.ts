import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { createServers } from '../../src/api/server.ts';
import { tokenLine } from '../../src/api/tokens.ts';
import { resolveConfig } from '../../src/config/load.ts';
import type { Role } from '../../src/config/schema.ts';
import { ConfigError } from '../../src/errors/errors.ts';
import type { ApiPki } from '../support/api-pki.ts';
import { captureLog, fakeDeps, IDS, SECRET_IN_BUG } from '../support/api-fakes.ts';
import { apiTestbed, bearer, TOKENS, type ApiTestbed, type StartedApi } from '../support/api-testbed.ts';

let bed: ApiTestbed | undefined;
let dir: string;
let pki: ApiPki;

before(async () => {
  bed = await apiTestbed('lifeboat-api-unit-');
  ({ dir, pki } = bed);
});

after(async () => {
  await bed?.close();
});

interface Setup extends StartedApi {
  call(options: InjectOptions): Promise<LightMyRequestResponse>;
}

async function setup(api: Record<string, unknown> = {}): Promise<Setup> {
  const started = await bed!.start(api);
  return {
    ...started,
    call: async (options) => {
      const res = await started.servers.api.inject(options);
      assertNoLeak(res);
      return res;
    },
  };
}

/** No response ever carries a stack trace or the text of an unexpected error. */
function assertNoLeak(res: LightMyRequestResponse): void {
  assert.doesNotMatch(res.body, /\n\s+at |\.ts:\d+|node_modules/, `a response leaked a stack: ${res.body.slice(0, 300)}`);
  assert.ok(!res.body.includes(SECRET_IN_BUG), 'a response leaked the text of an unexpected error');
}

function json(res: LightMyRequestResponse): Record<string, unknown> {
  assert.match(String(res.headers['content-type']), /^application\/json/);
  return res.json();
}

/** An error response: problem details (RFC 9457) with the status, the code and its type URI; detail and message agree. */
function assertError(res: LightMyRequestResponse, status: number, code: string, field?: string): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json<Record<string, unknown>>();
  assert.equal(body.code, code, res.body);
  assert.equal(body.status, status, res.body);
  assert.equal(body.type, `https://lifeboat.dev/problems/${code.toLowerCase().replaceAll('_', '-')}`);
  assert.equal(typeof body.title, 'string');
  assert.equal(typeof body.message, 'string');
  assert.ok((body.message as string).length > 0);
  assert.equal(body.detail, body.message);
  if (field !== undefined) assert.equal(body.field, field, res.body);
  return body;
}

const postJson = (url: string, body: unknown, headers: Record<string, string> = {}): InjectOptions => ({
  method: 'POST',
  url,
  headers: { 'content-type': 'application/json', ...headers },
  payload: JSON.stringify(body),
});

test('health, readiness and the OpenAPI document need no credentials', async () => {
  const { call, fakes } = await setup();
  const health = await call({ method: 'GET', url: '/healthz' });
  assert.equal(health.statusCode, 200);
  assert.deepEqual(json(health), { status: 'ok' });
  const ready = await call({ method: 'GET', url: '/readyz' });
  assert.deepEqual([ready.statusCode, json(ready)], [200, { ready: true, reasons: [] }]);
  fakes.health.ready = false;
  fakes.health.reasons = ['the job journal cannot be read'];
  const notReady = await call({ method: 'GET', url: '/readyz' });
  assert.deepEqual([notReady.statusCode, json(notReady)], [503, { ready: false, reasons: ['the job journal cannot be read'] }]);

  const doc = json(await call({ method: 'GET', url: '/openapi.json' }));
  const paths = doc.paths as Record<string, Record<string, { parameters?: { name: string; in: string }[]; requestBody?: unknown }>>;
  for (const p of ['/healthz', '/readyz', '/v1/status', '/v1/backups', '/v1/backups/{id}', '/v1/backups/{id}/verify', '/v1/jobs', '/v1/jobs/{id}']) assert.ok(paths[p], `${p} is documented`);
  assert.ok(paths['/v1/backups']?.post?.parameters?.some((x) => x.in === 'header' && x.name === 'idempotency-key'));
  assert.ok(paths['/v1/backups']?.get?.parameters?.some((x) => x.in === 'query' && x.name === 'limit'));
  assert.deepEqual((paths['/v1/backups/{id}/verify']?.post?.requestBody as { required?: boolean } | undefined)?.required, false);
  assert.equal(paths['/openapi.json'], undefined);
});

test('no credentials, a bad token or a malformed header: 401 with WWW-Authenticate, on every /v1 route', async () => {
  const { call } = await setup();
  const routes: InjectOptions[] = [
    { method: 'GET', url: '/v1/status' },
    { method: 'GET', url: '/v1/backups' },
    { method: 'GET', url: `/v1/backups/${IDS.newest}` },
    { method: 'POST', url: '/v1/backups' },
    { method: 'POST', url: `/v1/backups/${IDS.newest}/verify` },
    { method: 'DELETE', url: `/v1/backups/${IDS.middle}` },
    { method: 'GET', url: '/v1/jobs' },
    { method: 'GET', url: '/v1/jobs/job-1' },
    { method: 'GET', url: '/v1/no-such-route' },
  ];
  for (const route of routes) {
    for (const authorization of [undefined, 'Bearer not-a-known-token', 'Basic dXNlcjpwYXNz', `Bearer${TOKENS.operator.token}`, 'Bearer ']) {
      const res = await call({ ...route, headers: authorization === undefined ? {} : { authorization }, remoteAddress: `10.0.0.${routes.indexOf(route) + 1}` });
      assertError(res, 401, 'UNAUTHENTICATED');
      assert.match(String(res.headers['www-authenticate']), /^Bearer/);
    }
  }
});

test('role matrix: viewer may GET, operator and restorer may also POST and DELETE; 403 is not 401', async () => {
  const expected: Record<Role, { get: number; post: number; del: number }> = {
    viewer: { get: 200, post: 403, del: 403 },
    operator: { get: 200, post: 202, del: 204 },
    restorer: { get: 200, post: 202, del: 204 },
  };
  for (const role of Object.keys(expected) as Role[]) {
    const { call, fakes } = await setup();
    const auth = bearer(role);
    const job = fakes.jobs.submit({ kind: 'backup', trigger: 'schedule', requestedBy: 'schedule' }).job;
    const gets = ['/v1/status', '/v1/backups', '/v1/backups/latest', `/v1/backups/${IDS.middle}`, '/v1/jobs', `/v1/jobs/${job.id}`];
    for (const url of gets) {
      const res = await call({ method: 'GET', url, headers: auth });
      assert.equal(res.statusCode, expected[role].get, `${role} GET ${url}: ${res.body}`);
    }
    const posts = [postJson('/v1/backups', {}, auth), postJson(`/v1/backups/${IDS.middle}/verify`, { deep: false }, auth), postJson('/v1/backups/latest/verify', { deep: true }, auth)];
    for (const post of posts) {
      const res = await call(post);
      assert.equal(res.statusCode, expected[role].post, `${role} POST ${post.url}: ${res.body}`);
      if (res.statusCode === 403) {
        const body = assertError(res, 403, 'FORBIDDEN');
        assert.match(body.message as string, /role viewer/);
        assert.match(body.message as string, /needs role operator/);
      }
    }
    const del = await call({ method: 'DELETE', url: `/v1/backups/${IDS.oldest}`, headers: auth });
    assert.equal(del.statusCode, expected[role].del, `${role} DELETE: ${del.body}`);
    if (del.statusCode === 204) {
      assert.equal(del.body, '');
      assert.deepEqual(fakes.backups.deleted, [{ id: IDS.oldest, by: TOKENS[role].name }]);
    } else {
      assertError(del, 403, 'FORBIDDEN');
      assert.deepEqual(fakes.backups.deleted, []);
      assert.equal(fakes.jobs.requests.length, 1, 'only the setup job; a forbidden POST submits nothing');
    }
  }
});

test('POST /v1/backups: 202 {job, created}, Location, the caller as requester', async () => {
  const { call, fakes } = await setup();
  const res = await call({ method: 'POST', url: '/v1/backups', headers: bearer('operator') });
  assert.equal(res.statusCode, 202, res.body);
  const body = json(res) as { job: { id: string; kind: string; requestedBy: string; trigger: string }; created: boolean };
  assert.equal(body.created, true);
  assert.equal(body.job.kind, 'backup');
  assert.equal(body.job.requestedBy, 'ci');
  assert.equal(body.job.trigger, 'api');
  assert.equal(res.headers.location, `/v1/jobs/${body.job.id}`);
  assert.deepEqual(fakes.jobs.requests.at(-1), { kind: 'backup', params: {}, trigger: 'api', requestedBy: 'ci' });
  const again = await call(postJson('/v1/backups', {}, bearer('operator')));
  assert.equal(again.statusCode, 202);
});

test('Idempotency-Key: the same key gets the same job (created: false), scoped to the caller; reused for another request is 409', async () => {
  const { call, fakes } = await setup();
  const key = { 'idempotency-key': 'nightly-2026-11-24' };
  const first = await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('operator'), ...key } });
  const second = await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('operator'), ...key } });
  assert.equal(first.statusCode, 202);
  assert.equal(second.statusCode, 202);
  const a = json(first) as { job: { id: string }; created: boolean };
  const b = json(second) as { job: { id: string }; created: boolean };
  assert.equal(a.created, true);
  assert.equal(b.created, false);
  assert.equal(b.job.id, a.job.id);
  assert.equal(second.headers.location, `/v1/jobs/${a.job.id}`);
  assert.equal(fakes.jobs.requests[0]?.idempotencyKey, 'token:ci:nightly-2026-11-24');

  // Another caller's same key is another key.
  const other = json(await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('restorer'), ...key } })) as { job: { id: string }; created: boolean };
  assert.equal(other.created, true);
  assert.notEqual(other.job.id, a.job.id);

  const conflict = await call(postJson(`/v1/backups/${IDS.middle}/verify`, {}, { ...bearer('operator'), ...key }));
  assertError(conflict, 409, 'CONFLICT');
});

test('POST verify: deep picks a drill, latest is resolved to an id now, an unknown backup is 404 and submits nothing', async () => {
  const { call, fakes } = await setup();
  const shallow = await call(postJson(`/v1/backups/${IDS.middle}/verify`, { deep: false }, bearer('operator')));
  assert.equal(shallow.statusCode, 202);
  assert.deepEqual(fakes.jobs.requests.at(-1), { kind: 'verify', params: { backupId: IDS.middle }, trigger: 'api', requestedBy: 'ci' });
  const noBody = await call({ method: 'POST', url: '/v1/backups/latest/verify', headers: bearer('operator') });
  assert.equal(noBody.statusCode, 202, noBody.body);
  assert.deepEqual(fakes.jobs.requests.at(-1)?.params, { backupId: IDS.newest });
  assert.equal(fakes.jobs.requests.at(-1)?.kind, 'verify');
  const deep = await call(postJson('/v1/backups/latest/verify', { deep: true }, bearer('operator')));
  assert.equal(deep.statusCode, 202);
  assert.deepEqual(fakes.jobs.requests.at(-1), { kind: 'drill', params: { backupId: IDS.newest }, trigger: 'api', requestedBy: 'ci' });
  const count = fakes.jobs.requests.length;
  assertError(await call(postJson('/v1/backups/20250101T000000.000Z-r1/verify', {}, bearer('operator'))), 404, 'NOT_FOUND');
  assert.equal(fakes.jobs.requests.length, count);
});

test('GET /v1/backups: limit and before reach the catalogue; a full page says where the next starts', async () => {
  const { call, fakes } = await setup();
  const all = json(await call({ method: 'GET', url: '/v1/backups', headers: bearer('viewer') })) as { backups: { manifest: { backupId: string } }[]; next?: string };
  assert.deepEqual(all.backups.map((b) => b.manifest.backupId), [IDS.newest, IDS.middle, IDS.locked, IDS.oldest]);
  assert.equal(all.next, undefined);
  assert.deepEqual(fakes.backups.listCalls.at(-1), { limit: 50 });

  const page = json(await call({ method: 'GET', url: '/v1/backups?limit=2', headers: bearer('viewer') })) as typeof all;
  assert.deepEqual(page.backups.map((b) => b.manifest.backupId), [IDS.newest, IDS.middle]);
  assert.equal(page.next, '2026-11-23T03:00:00.000Z');
  const rest = json(await call({ method: 'GET', url: `/v1/backups?limit=2&before=${encodeURIComponent(page.next!)}`, headers: bearer('viewer') })) as typeof all;
  assert.deepEqual(rest.backups.map((b) => b.manifest.backupId), [IDS.locked, IDS.oldest]);
  assert.deepEqual(fakes.backups.listCalls.at(-1), { limit: 2, before: new Date('2026-11-23T03:00:00.000Z') });

  const offset = await call({ method: 'GET', url: `/v1/backups?before=${encodeURIComponent('2026-11-23T05:00:00+02:00')}`, headers: bearer('viewer') });
  assert.deepEqual((json(offset) as typeof all).backups.map((b) => b.manifest.backupId), [IDS.locked, IDS.oldest]);

  const one = json(await call({ method: 'GET', url: '/v1/backups/latest', headers: bearer('viewer') })) as { manifest: { backupId: string; archive: { sha256: string } }; verification?: { result: string } };
  assert.equal(one.manifest.backupId, IDS.newest);
  assert.equal(one.manifest.archive.sha256, 'c'.repeat(64));
  assert.equal(one.verification?.result, 'passed');
  assertError(await call({ method: 'GET', url: '/v1/backups/20250101T000000.000Z-r1', headers: bearer('viewer') }), 404, 'NOT_FOUND');

  // A backup dated in the future is flagged in the listing.
  fakes.backups.entries[1] = { ...fakes.backups.entries[1]!, futureDated: true };
  const flagged = json(await call({ method: 'GET', url: '/v1/backups', headers: bearer('viewer') })) as { backups: { futureDated?: boolean }[] };
  assert.deepEqual(flagged.backups.map((b) => b.futureDated ?? false), [false, true, false, false]);
});

test('GET /v1/jobs and /v1/jobs/{id}: filters, one job, 404 for an unknown one', async () => {
  const { call, fakes } = await setup();
  const backup = fakes.jobs.submit({ kind: 'backup', trigger: 'schedule', requestedBy: 'schedule' }).job;
  fakes.jobs.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });
  const stored = fakes.jobs.jobs.find((j) => j.id === backup.id)!;
  Object.assign(stored, { state: 'failed', phase: 'done', error: { code: 'ETCD_UNAVAILABLE', message: 'no member answered', hint: 'check etcd' }, progress: { bytesDone: 10, bytesTotal: 100 } });
  const list = json(await call({ method: 'GET', url: '/v1/jobs', headers: bearer('viewer') })) as { jobs: { id: string }[] };
  assert.equal(list.jobs.length, 2);
  const failed = json(await call({ method: 'GET', url: '/v1/jobs?state=failed&kind=backup&limit=5', headers: bearer('viewer') })) as { jobs: { id: string; error: unknown; progress: unknown }[] };
  assert.deepEqual(failed.jobs.map((j) => j.id), [backup.id]);
  assert.deepEqual(failed.jobs[0]?.error, { code: 'ETCD_UNAVAILABLE', message: 'no member answered', hint: 'check etcd' });
  assert.deepEqual(failed.jobs[0]?.progress, { bytesDone: 10, bytesTotal: 100 });
  const one = json(await call({ method: 'GET', url: `/v1/jobs/${backup.id}`, headers: bearer('viewer') })) as { job: { id: string } };
  assert.equal(one.job.id, backup.id);
  const missing = assertError(await call({ method: 'GET', url: '/v1/jobs/job-20200101T000000.000Z-zzzzzz', headers: bearer('viewer') }), 404, 'NOT_FOUND');
  assert.match(missing.message as string, /job-20200101T000000\.000Z-zzzzzz/);
});

test('GET /v1/status: identity, leadership, readiness, the running job', async () => {
  const { call, fakes } = await setup();
  const running = fakes.jobs.submit({ kind: 'backup', trigger: 'schedule', requestedBy: 'schedule' }).job;
  fakes.jobs.jobs[0]!.state = 'running';
  fakes.jobs.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });
  const status = json(await call({ method: 'GET', url: '/v1/status', headers: bearer('viewer') })) as Record<string, unknown>;
  assert.deepEqual({ ...status, running: (status.running as { id: string }).id }, {
    cluster: 'test',
    node: 'node-a',
    version: '9.9.9-test',
    leader: { self: true, identity: 'node-a' },
    ready: true,
    reasons: [],
    running: running.id,
    queued: 1,
  });
  fakes.leadership.leader = false;
  fakes.leadership.name = undefined;
  const follower = json(await call({ method: 'GET', url: '/v1/status', headers: bearer('viewer') })) as { leader: unknown };
  assert.deepEqual(follower.leader, { self: false, identity: null });
});

test('a non-leader answers POST and DELETE with 409 NOT_LEADER and the leader, and still serves GETs', async () => {
  const { call, fakes } = await setup();
  fakes.leadership.leader = false;
  fakes.leadership.name = 'node-b';
  for (const req of [postJson('/v1/backups', {}, bearer('operator')), postJson('/v1/backups/latest/verify', { deep: true }, bearer('operator')), { method: 'DELETE' as const, url: `/v1/backups/${IDS.oldest}`, headers: bearer('operator') }]) {
    const body = assertError(await call(req), 409, 'NOT_LEADER');
    assert.equal(body.leader, 'node-b');
    assert.match(body.hint as string, /node-b/);
  }
  assert.equal(fakes.jobs.requests.length, 0);
  assert.deepEqual(fakes.backups.deleted, []);
  assert.equal((await call({ method: 'GET', url: '/v1/backups', headers: bearer('viewer') })).statusCode, 200);
  // A viewer is refused for its role before leadership matters.
  assertError(await call(postJson('/v1/backups', {}, bearer('viewer'))), 403, 'FORBIDDEN');
  fakes.leadership.name = undefined;
  const none = assertError(await call(postJson('/v1/backups', {}, bearer('operator'))), 409, 'NOT_LEADER');
  assert.equal(none.leader, undefined);
  assert.match(none.message as string, /no leader/);
});

test('DELETE: object-locked and protected backups are refused with 409, unknown ones 404, a malformed id 400', async () => {
  const { call, fakes } = await setup();
  const locked = assertError(await call({ method: 'DELETE', url: `/v1/backups/${IDS.locked}`, headers: bearer('operator') }), 409, 'OBJECT_LOCKED');
  assert.match(locked.message as string, /Object Lock/);
  assertError(await call({ method: 'DELETE', url: `/v1/backups/${IDS.newest}`, headers: bearer('operator') }), 409, 'BACKUP_PROTECTED');
  assertError(await call({ method: 'DELETE', url: '/v1/backups/20250101T000000.000Z-r1', headers: bearer('operator') }), 404, 'NOT_FOUND');
  assertError(await call({ method: 'DELETE', url: '/v1/backups/latest', headers: bearer('operator') }), 400, 'BAD_REQUEST', '/params/id');
  assert.deepEqual(fakes.backups.deleted, []);
});

test('validation errors are 400 BAD_REQUEST naming the field', async () => {
  const { call, fakes } = await setup();
  const op = bearer('operator');
  const cases: [InjectOptions, string, RegExp][] = [
    [postJson('/v1/backups/latest/verify', { deep: 'yes' }, op), '/body/deep', /^\/body\/deep must be boolean$/],
    [postJson('/v1/backups/latest/verify', { deep: 1 }, op), '/body/deep', /must be boolean/],
    [postJson('/v1/backups/latest/verify', { deeep: true }, op), '/body/deeep', /not a known field/],
    [postJson('/v1/backups/latest/verify', [true], op), '/body', /JSON object/],
    [postJson('/v1/backups', { now: true }, op), '/body/now', /not a known field/],
    [postJson('/v1/backups', 'a string', op), '/body', /JSON object/],
    [{ method: 'GET', url: '/v1/backups?limit=0', headers: op }, '/query/limit', /at least 1/],
    [{ method: 'GET', url: '/v1/backups?limit=1001', headers: op }, '/query/limit', /at most 1000/],
    [{ method: 'GET', url: '/v1/backups?limit=ten', headers: op }, '/query/limit', /integer/],
    [{ method: 'GET', url: '/v1/backups?limit=1&limit=2', headers: op }, '/query/limit', /integer/],
    [{ method: 'GET', url: '/v1/backups?before=yesterday', headers: op }, '/query/before', /RFC 3339/],
    [{ method: 'GET', url: '/v1/backups?before=2026-13-45T99:00:00Z', headers: op }, '/query/before', /not a valid time/],
    [{ method: 'GET', url: '/v1/backups?sort=asc', headers: op }, '/query/sort', /not a known field/],
    [{ method: 'GET', url: '/v1/jobs?state=done', headers: op }, '/query/state', /one of queued, running, succeeded, failed/],
    [{ method: 'GET', url: '/v1/jobs?kind=restores', headers: op }, '/query/kind', /one of backup, verify, drill, prune, cleanup, replicate, restore/],
    [{ method: 'GET', url: '/v1/backups/..%2F..%2Fetc', headers: op }, '/params/id', /backup id/],
    [{ method: 'GET', url: '/v1/jobs/not-a-job', headers: op }, '/params/id', /job id/],
    [{ method: 'POST', url: '/v1/backups', headers: { ...op, 'idempotency-key': 'k'.repeat(201) } }, '/headers/idempotency-key', /at most 200/],
    [{ method: 'POST', url: '/v1/backups', headers: { ...op, 'idempotency-key': 'tab\there' } }, '/headers/idempotency-key', /printable/],
  ];
  for (const [req, field, message] of cases) {
    const body = assertError(await call(req), 400, 'BAD_REQUEST', field);
    assert.match(body.message as string, message, `${req.method} ${req.url}`);
  }
  assert.equal(fakes.jobs.requests.length, 0);
});

test('malformed bodies: bad JSON 400, wrong media type 415, too large 413, all problem details', async () => {
  const { call } = await setup();
  const op = bearer('operator');
  assertError(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, 'content-type': 'application/json' }, payload: '{"deep": tru' }), 400, 'BAD_REQUEST');
  assertError(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, 'content-type': 'application/json' }, payload: '{"__proto__": {"x": 1}}' }), 400, 'BAD_REQUEST');
  const media = assertError(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, 'content-type': 'application/xml' }, payload: '<backup/>' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
  assert.match(media.message as string, /application\/json/);
  assertError(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, 'content-type': 'application/json' }, payload: JSON.stringify({ pad: 'x'.repeat(70 * 1024) }) }), 413, 'PAYLOAD_TOO_LARGE');
});

test('unknown routes are 404 and wrong methods 405 METHOD_NOT_ALLOWED with Allow, as problem details; /v1 paths need credentials first', async () => {
  const { call } = await setup();
  const root = assertError(await call({ method: 'GET', url: '/nothing/here' }), 404, 'NOT_FOUND');
  assert.match(root.hint as string, /openapi/);
  assertError(await call({ method: 'GET', url: '/v1/nothing' }), 401, 'UNAUTHENTICATED');
  assertError(await call({ method: 'GET', url: '/v1/nothing', headers: bearer('viewer') }), 404, 'NOT_FOUND');
  const wrong = assertError(await call({ method: 'PUT', url: '/v1/backups', headers: bearer('operator') }), 405, 'METHOD_NOT_ALLOWED');
  assert.equal(wrong.message, 'PUT is not allowed on /v1/backups; it takes GET, HEAD, POST');
  assert.equal((await call({ method: 'PATCH', url: `/v1/backups/${IDS.middle}`, headers: bearer('operator') })).headers.allow, 'DELETE, GET, HEAD');
});

test('errors map through one table: store failure 502; an unexpected error is a bare 500 and logged with its stack', async () => {
  const { call, capture } = await setup();
  const store = assertError(await call({ method: 'GET', url: `/v1/backups/${IDS.storeDown}`, headers: bearer('viewer') }), 502, 'STORE_FAILED');
  assert.equal(store.hint, 'check the S3 endpoint');
  const bug = await call({ method: 'GET', url: `/v1/backups/${IDS.bug}`, headers: bearer('viewer') });
  assert.equal(bug.statusCode, 500);
  assert.deepEqual(assertError(bug, 500, 'INTERNAL'), {
    type: 'https://lifeboat.dev/problems/internal',
    title: 'Internal error',
    status: 500,
    detail: 'internal error; see the daemon log',
    code: 'INTERNAL',
    message: 'internal error; see the daemon log',
  });
  const logged = capture.lines.find((l) => l.msg === 'unexpected error while answering an API request');
  assert.ok(logged, 'the bug is logged');
  const err = logged.err as { message: string; stack: string };
  assert.match(err.message, /hunter2/);
  assert.match(err.stack, /api-fakes\.ts/);
});

test('failed authentications are rate limited per address (429 with Retry-After for further invalid ones), and a valid credential is never refused', async () => {
  const { call, clock } = await setup();
  const nat = '192.0.2.7';
  for (let i = 0; i < 10; i++) {
    assertError(await call({ method: 'GET', url: '/v1/backups', headers: { authorization: `Bearer guess-${i}` }, remoteAddress: nat }), 401, 'UNAUTHENTICATED');
  }
  const limited = await call({ method: 'GET', url: '/v1/backups', headers: { authorization: 'Bearer guess-10' }, remoteAddress: nat });
  assertError(limited, 429, 'RATE_LIMITED');
  assert.equal(limited.headers['retry-after'], '60');
  assertError(await call({ method: 'GET', url: '/v1/backups', remoteAddress: nat }), 429, 'RATE_LIMITED');
  // A restorer behind the same address (a NAT, the node's own loopback) still gets in.
  assert.equal((await call({ method: 'GET', url: '/v1/backups', headers: bearer('viewer'), remoteAddress: nat })).statusCode, 200);
  clock.now += 45_000;
  const again = await call({ method: 'GET', url: '/v1/backups', headers: { authorization: 'Bearer guess-11' }, remoteAddress: nat });
  assertError(again, 429, 'RATE_LIMITED');
  assert.equal(again.headers['retry-after'], '15');
  assert.equal((await call({ method: 'GET', url: '/v1/backups', headers: bearer('viewer'), remoteAddress: nat })).statusCode, 200);
  // Others are not affected, and public routes stay open.
  assertError(await call({ method: 'GET', url: '/v1/backups', headers: { authorization: 'Bearer guess' }, remoteAddress: '192.0.2.8' }), 401, 'UNAUTHENTICATED');
  assert.equal((await call({ method: 'GET', url: '/healthz', remoteAddress: nat })).statusCode, 200);
  // 403s do not count as failed authentications.
  for (let i = 0; i < 12; i++) assert.equal((await call(postJson('/v1/backups', {}, { ...bearer('viewer') }))).statusCode, 403);
  // Once the minute is over, invalid attempts get 401 again.
  clock.now += 15_000;
  assertError(await call({ method: 'GET', url: '/v1/backups', headers: { authorization: 'Bearer guess-12' }, remoteAddress: nat }), 401, 'UNAUTHENTICATED');
});

test('every mutating request writes one audit line: who, role, via, route, params, status, job; never the token', async () => {
  const { call, capture, fakes } = await setup();
  const key = { 'idempotency-key': 'audit-key' };
  const made = json(await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('operator'), ...key } })) as { job: { id: string } };
  await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('operator'), ...key } });
  await call(postJson(`/v1/backups/${IDS.middle}/verify`, { deep: true }, bearer('restorer')));
  await call({ method: 'DELETE', url: `/v1/backups/${IDS.oldest}`, headers: bearer('operator') });
  await call({ method: 'DELETE', url: `/v1/backups/${IDS.newest}`, headers: bearer('operator') });
  await call(postJson('/v1/backups', {}, bearer('viewer')));
  await call({ method: 'POST', url: '/v1/backups', headers: { authorization: 'Bearer wrong-token-value' } });
  await call({ method: 'GET', url: '/v1/backups', headers: bearer('operator') });
  await call({ method: 'GET', url: '/v1/jobs', headers: bearer('operator') });

  const audit = capture.lines.filter((l) => l.audit === true);
  const pick = (l: Record<string, unknown>) => ({ who: l.who, role: l.role, via: l.via, method: l.method, route: l.route, params: l.params, status: l.status, jobId: l.jobId, created: l.created, code: l.code });
  const verifyJob = fakes.jobs.requests.find((r) => r.kind === 'drill') && fakes.jobs.jobs.find((j) => j.kind === 'drill')!.id;
  assert.deepEqual(audit.map(pick), [
    { who: 'ci', role: 'operator', via: 'token', method: 'POST', route: '/v1/backups', params: {}, status: 202, jobId: made.job.id, created: true, code: undefined },
    { who: 'ci', role: 'operator', via: 'token', method: 'POST', route: '/v1/backups', params: {}, status: 202, jobId: made.job.id, created: false, code: undefined },
    { who: 'dr-team', role: 'restorer', via: 'token', method: 'POST', route: '/v1/backups/:id/verify', params: { id: IDS.middle }, status: 202, jobId: verifyJob, created: true, code: undefined },
    { who: 'ci', role: 'operator', via: 'token', method: 'DELETE', route: '/v1/backups/:id', params: { id: IDS.oldest }, status: 204, jobId: undefined, created: undefined, code: undefined },
    { who: 'ci', role: 'operator', via: 'token', method: 'DELETE', route: '/v1/backups/:id', params: { id: IDS.newest }, status: 409, jobId: undefined, created: undefined, code: 'BACKUP_PROTECTED' },
    { who: 'grafana', role: 'viewer', via: 'token', method: 'POST', route: '/v1/backups', params: {}, status: 403, jobId: undefined, created: undefined, code: 'FORBIDDEN' },
    { who: null, role: null, via: null, method: 'POST', route: '/v1/backups', params: {}, status: 401, jobId: undefined, created: undefined, code: 'UNAUTHENTICATED' },
  ]);
  for (const line of audit) assert.equal(line.ip, '127.0.0.1');
  const everything = capture.text();
  for (const { token } of Object.values(TOKENS)) assert.ok(!everything.includes(token), 'a token reached the log');
  assert.ok(!everything.includes('wrong-token-value'));
});

test('the metrics listener serves /metrics, /healthz and /readyz without auth, and nothing else', async () => {
  const { servers, fakes } = await setup();
  const metrics = await servers.metrics.inject({ method: 'GET', url: '/metrics' });
  assert.equal(metrics.statusCode, 200);
  assert.equal(metrics.headers['content-type'], fakes.deps.metrics.contentType);
  assert.match(metrics.body, /^lifeboat_up 1$/m);
  assert.equal((await servers.metrics.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  assert.equal((await servers.metrics.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  for (const url of ['/v1/backups', '/openapi.json']) {
    const res = await servers.metrics.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().code, 'NOT_FOUND');
  }
  // And the API listener does not serve /metrics.
  assert.equal((await servers.api.inject({ method: 'GET', url: '/metrics' })).statusCode, 404);
});

test('tokens are re-read when the file changes: a new token works, a revoked one stops, a broken file fails closed until fixed', async () => {
  const file = path.join(dir, 'tokens-reload');
  await writeFile(file, `${tokenLine('first-token', 'viewer', 'first')}\n`);
  const { call, capture } = await setup({ tokensFile: file });
  const get = (token: string) => call({ method: 'GET', url: '/v1/jobs', headers: { authorization: `Bearer ${token}` }, remoteAddress: '198.51.100.1' });
  assert.equal((await get('first-token')).statusCode, 200);
  assert.equal((await get('second-token')).statusCode, 401);
  await writeFile(file, `${tokenLine('second-token', 'operator', 'second')}\n# first revoked\n`);
  assert.equal((await get('second-token')).statusCode, 200);
  assert.equal((await get('first-token')).statusCode, 401);
  // A file that turns invalid: no token authenticates (a revocation in it must not fail open), loudly.
  await writeFile(file, `${tokenLine('second-token', 'operator', 'second')}\nthis line is broken, and longer\n`);
  assert.equal((await get('second-token')).statusCode, 401);
  assert.equal((await get('first-token')).statusCode, 401);
  const complaints = capture.lines.filter((l) => l.msg === 'the API tokens file is invalid; no token is accepted until it is fixed');
  assert.equal(complaints.length, 1, 'logged once per change of the file');
  assert.equal(complaints[0]!.level, 50, 'at error level');
  assert.match(String(complaints[0]!.err), /tokens-reload line 2/);
  // Fixed: its tokens work again.
  await writeFile(file, `${tokenLine('second-token', 'operator', 'second')}\n`);
  assert.equal((await get('second-token')).statusCode, 200);
});

test('bad TLS or token files stop the start with a ConfigError naming the field', async () => {
  const config = (api: Record<string, unknown>) => resolveConfig({ api: { listen: { port: 0 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, ...api } }).api;
  const capture = captureLog();
  const bad = path.join(dir, 'tokens-bad');
  await writeFile(bad, `# ok\n${tokenLine('t', 'viewer', 'v')}\nsha256:${'0'.repeat(64)} admin root\n`);
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ tokensFile: bad }, '/api/tokensFile', /tokens-bad line 3: role "admin"/],
    [{ tokensFile: path.join(dir, 'nope') }, '/api/tokensFile', /cannot read/],
    [{ tls: { certFile: path.join(dir, 'missing.crt'), keyFile: pki.server.key } }, '/api/tls/certFile', /ENOENT/],
    [{ tls: { certFile: pki.server.cert, keyFile: pki.viewerClient.key } }, '/api/tls', /not usable/],
    [{ tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: path.join(dir, 'no-ca.crt') } }, '/api/tls/clientCaFile', /cannot read/],
  ];
  for (const [api, field, message] of cases) {
    await assert.rejects(createServers(fakeDeps(config(api), capture.log).deps), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.field, field);
      assert.match(err.message, message);
      return true;
    });
  }
});
