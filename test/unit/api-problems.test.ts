import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { connect } from 'node:tls';
import { setImmediate as tick } from 'node:timers/promises';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { PROBLEMS, problemType, rawProblemResponse } from '../../src/api/errors.ts';
import { ERROR_CODES } from '../../src/errors/errors.ts';
import { IDS } from '../support/api-fakes.ts';
import { apiTestbed, bearer, type ApiTestbed, type StartedApi } from '../support/api-testbed.ts';

/** Errors as RFC 9457 problem details, and the OpenAPI document that describes them. */

let bed: ApiTestbed | undefined;

before(async () => {
  bed = await apiTestbed('lifeboat-api-problems-');
});

after(async () => {
  await bed?.close();
});

interface Operation {
  operationId?: string;
  parameters?: { name: string; in: string }[];
  responses: Record<string, { headers?: Record<string, unknown>; content?: Record<string, { schema?: { $ref?: string } }> }>;
}
interface OpenApi {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { properties: Record<string, unknown>; required: string[] }> };
}

const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options']);

/** Every operation of the document, whatever routes are registered. */
function operations(doc: OpenApi): { where: string; method: string; path: string; op: Operation }[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item).filter(([method]) => METHODS.has(method)).map(([method, op]) => ({ where: `${method.toUpperCase()} ${path}`, method, path, op })));
}

async function openapi(api: StartedApi): Promise<OpenApi> {
  const res = await api.servers.api.inject({ method: 'GET', url: '/openapi.json' });
  assert.equal(res.statusCode, 200);
  return res.json<OpenApi>();
}

function assertProblem(res: LightMyRequestResponse, status: number, code: string): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json(;|$)/, `${status} ${code}`);
  const body = res.json<Record<string, unknown>>();
  assert.equal(body.type, problemType(code as keyof typeof PROBLEMS));
  assert.equal(body.title, PROBLEMS[code as keyof typeof PROBLEMS].title);
  assert.equal(body.status, status);
  assert.equal(body.code, code);
  assert.ok(typeof body.detail === 'string' && body.detail.length > 0, res.body);
  assert.equal(body.message, body.detail, 'message is kept for older clients');
  return body;
}

test('every error code has a status, a title and its own problem type URI', () => {
  const types = new Set<string>();
  for (const code of ERROR_CODES) {
    const { status, title } = PROBLEMS[code];
    assert.ok(status >= 400 && status <= 599, code);
    assert.ok(title.length > 0, code);
    const type = problemType(code);
    assert.match(type, /^https:\/\/lifeboat\.dev\/problems\/[a-z]+(-[a-z]+)*$/, code);
    types.add(type);
  }
  assert.equal(types.size, ERROR_CODES.length);
  assert.equal(problemType('NOT_LEADER'), 'https://lifeboat.dev/problems/not-leader');
  assert.equal(PROBLEMS.METHOD_NOT_ALLOWED.status, 405);
});

test('every error path answers application/problem+json with type, title, status, detail, code and hint', async () => {
  const api = await bed!.start({ authFailuresPerMinute: 2 });
  const call = (options: InjectOptions) => api.servers.api.inject(options);
  const op = bearer('operator');
  const json = { 'content-type': 'application/json' };

  const invalid = assertProblem(await call({ method: 'GET', url: '/v1/backups?limit=0', headers: op }), 400, 'BAD_REQUEST');
  assert.equal(invalid.field, '/query/limit');
  assertProblem(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, ...json }, payload: '{"x": ' }), 400, 'BAD_REQUEST');
  const unknown = assertProblem(await call({ method: 'GET', url: '/no/such/route' }), 404, 'NOT_FOUND');
  assert.match(unknown.hint as string, /openapi\.json/);
  assertProblem(await call({ method: 'GET', url: `/v1/backups/${IDS.newest.replace('r300', 'r301')}`, headers: op }), 404, 'NOT_FOUND');
  const wrongMethod = await call({ method: 'PUT', url: `/v1/backups/${IDS.middle}`, headers: op });
  const notAllowed = assertProblem(wrongMethod, 405, 'METHOD_NOT_ALLOWED');
  assert.equal(wrongMethod.headers.allow, 'DELETE, GET, HEAD');
  assert.match(notAllowed.detail as string, /PUT is not allowed on \/v1\/backups\/\S+; it takes DELETE, GET, HEAD/);
  const anonymous = await call({ method: 'GET', url: '/v1/status' });
  assert.match(String(assertProblem(anonymous, 401, 'UNAUTHENTICATED').hint), /token/);
  assert.match(String(anonymous.headers['www-authenticate']), /^Bearer/);
  assertProblem(await call({ method: 'POST', url: '/v1/backups', headers: { ...bearer('viewer'), ...json }, payload: '{}' }), 403, 'FORBIDDEN');
  assertProblem(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, 'content-type': 'application/xml' }, payload: '<backup/>' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
  assertProblem(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, ...json }, payload: JSON.stringify({ pad: 'x'.repeat(70 * 1024) }) }), 413, 'PAYLOAD_TOO_LARGE');
  assertProblem(await call({ method: 'GET', url: `/v1/backups/${IDS.storeDown}`, headers: op }), 502, 'STORE_FAILED');
  assertProblem(await call({ method: 'GET', url: `/v1/backups/${IDS.bug}`, headers: op }), 500, 'INTERNAL');
  // The router's own errors, before any route runs: a path parameter longer than it takes.
  assertProblem(await call({ method: 'GET', url: `/v1/backups/${'a'.repeat(600)}/verify`, headers: op }), 414, 'BAD_REQUEST');

  api.fakes.leadership.leader = false;
  api.fakes.leadership.name = 'node-b';
  const follower = assertProblem(await call({ method: 'POST', url: '/v1/backups', headers: { ...op, ...json }, payload: '{}' }), 409, 'NOT_LEADER');
  assert.equal(follower.leader, 'node-b');

  for (let i = 0; i < 2; i++) assertProblem(await call({ method: 'GET', url: '/v1/status', headers: { authorization: `Bearer guess-${i}` }, remoteAddress: '192.0.2.9' }), 401, 'UNAUTHENTICATED');
  const limited = await call({ method: 'GET', url: '/v1/status', headers: { authorization: 'Bearer guess-2' }, remoteAddress: '192.0.2.9' });
  assertProblem(limited, 429, 'RATE_LIMITED');
  assert.ok(Number(limited.headers['retry-after']) > 0);
});

test('a request the HTTP parser rejects is answered with problem details on the socket', () => {
  const raw = rawProblemResponse(431, 'Request Header Fields Too Large', 'the request headers are too large');
  const [head, body] = raw.split('\r\n\r\n') as [string, string];
  const [statusLine, ...headerLines] = head.split('\r\n');
  assert.equal(statusLine, 'HTTP/1.1 431 Request Header Fields Too Large');
  const headers = Object.fromEntries(headerLines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  assert.equal(headers['content-type'], 'application/problem+json; charset=utf-8');
  assert.equal(Number(headers['content-length']), Buffer.byteLength(body));
  assert.deepEqual(JSON.parse(body), {
    type: 'https://lifeboat.dev/problems/bad-request',
    title: PROBLEMS.BAD_REQUEST.title,
    status: 431,
    detail: 'the request headers are too large',
    code: 'BAD_REQUEST',
    message: 'the request headers are too large',
  });
});

test('a request that arrives while the server closes is answered 503 SHUTTING_DOWN as problem details', async () => {
  const { servers, fakes } = await bed!.start();
  await servers.api.listen({ host: '127.0.0.1', port: 0 });
  const { port } = servers.api.server.address() as { port: number };
  // The first request waits in its handler, so its connection stays busy while the server closes.
  let entered!: () => void;
  let release!: () => void;
  const inHandler = new Promise<void>((resolve) => (entered = resolve));
  const gate = new Promise<void>((resolve) => (release = resolve));
  const list = fakes.restores.list;
  fakes.restores.list = async () => {
    entered();
    await gate;
    return list();
  };
  const socket = connect({ host: '127.0.0.1', port, ca: await readFile(bed!.pki.ca.cert), servername: 'localhost' });
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
  socket.on('error', () => undefined);
  const ended = new Promise((resolve) => socket.on('close', resolve));
  const auth = `Authorization: ${bearer('restorer').authorization}\r\n`;
  socket.write(`GET /v1/restores HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`);
  await inHandler;
  const closed = servers.api.close();
  // Fastify stops listening after its preClose hooks ran.
  while (servers.api.server.listening) await tick();
  servers.api.server.on('request', (req: IncomingMessage) => {
    if (req.url === '/v1/status') release();
  });
  socket.write(`GET /v1/status HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`);
  await closed;
  await ended;
  const [, second] = text.split(/(?=HTTP\/1\.1 )/);
  assert.ok(text.startsWith('HTTP/1.1 200 OK'), text);
  assert.match(second ?? '', /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.match(second ?? '', /\r\ncontent-type: application\/problem\+json; charset=utf-8\r\n/i);
  const body = JSON.parse(second!.slice(second!.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
  assert.deepEqual([body.status, body.code, body.type], [503, 'SHUTTING_DOWN', 'https://lifeboat.dev/problems/shutting-down']);
});

test('OpenAPI: every operation has its own operationId', async () => {
  const doc = await openapi(await bed!.start());
  const ops = operations(doc);
  assert.ok(ops.length >= 15, `only ${ops.length} operations documented`);
  const seen = new Map<string, string>();
  for (const { where, op } of ops) {
    assert.ok(typeof op.operationId === 'string' && /^[a-z][A-Za-z]+$/.test(op.operationId), `${where} has no operationId`);
    assert.equal(seen.get(op.operationId), undefined, `${where} reuses the operationId of ${seen.get(op.operationId)}`);
    seen.set(op.operationId, where);
  }
});

test('OpenAPI: every error response is the one Problem schema, as application/problem+json', async () => {
  const doc = await openapi(await bed!.start());
  const problem = doc.components.schemas.Problem;
  assert.ok(problem, 'components.schemas.Problem');
  for (const member of ['type', 'title', 'status', 'detail', 'code']) assert.ok(problem.required.includes(member), member);
  for (const member of ['hint', 'field', 'leader', 'leaderUrl', 'message']) assert.ok(member in problem.properties, member);
  let errors = 0;
  for (const { where, path, op } of operations(doc)) {
    const statuses = Object.keys(op.responses).filter((s) => /^[45]/.test(s));
    // Everything under /v1 needs credentials, so it can at least be refused.
    if (path.startsWith('/v1/')) assert.ok(statuses.includes('4XX') && statuses.includes('5XX'), `${where} documents no 4XX and 5XX`);
    for (const status of statuses) {
      if (path === '/readyz' && status === '503') continue; // readiness, not an error
      const content = op.responses[status]!.content ?? {};
      assert.deepEqual(Object.keys(content), ['application/problem+json'], `${where} ${status}`);
      assert.equal(content['application/problem+json']!.schema?.$ref, '#/components/schemas/Problem', `${where} ${status}`);
      errors += 1;
    }
  }
  assert.ok(errors > 0);
});

test('OpenAPI: 201 and 202 answers document Location; the POSTs that honour Idempotency-Key document it', async () => {
  const doc = await openapi(await bed!.start());
  let made = 0;
  for (const { where, op } of operations(doc)) {
    for (const status of ['201', '202']) {
      const response = op.responses[status];
      if (!response) continue;
      made += 1;
      assert.ok(response.headers?.Location, `${where} ${status} documents no Location header`);
    }
  }
  assert.ok(made >= 5, `${made} operations answer 201 or 202`);
  const idempotent = operations(doc).filter(({ op }) => op.parameters?.some((p) => p.in === 'header' && p.name.toLowerCase() === 'idempotency-key')).map((o) => o.where);
  assert.deepEqual(idempotent.sort(), ['POST /v1/backups', 'POST /v1/backups/{id}/verify']);
});
