import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { generateIdentity } from '../../src/crypto/age.ts';
import { ConfigError, KeyError } from '../../src/errors/errors.ts';
import { IN_PLACE_STEPS, type RestorePlan } from '../../src/restore/plan.ts';
import { IDS, type Fakes, type LogCapture } from '../support/api-fakes.ts';
import { apiTestbed, bearer, type ApiTestbed } from '../support/api-testbed.ts';

/**
 * The restore routes over the real server and the daemon's real restore checks
 * (src/daemon/restores.ts), with the engine's records and the job runner in memory.
 */
let bed: ApiTestbed | undefined;

before(async () => {
  bed = await apiTestbed('lifeboat-api-restores-');
});

after(async () => {
  await bed?.close();
});

interface Setup {
  fakes: Fakes;
  capture: LogCapture;
  call(options: InjectOptions): Promise<LightMyRequestResponse>;
}

async function setup(): Promise<Setup> {
  const { servers, fakes, capture } = await bed!.start();
  return { fakes, capture, call: (options) => servers.api.inject(options) };
}

const post = (url: string, body: unknown, headers: Record<string, string>): InjectOptions => ({
  method: 'POST',
  url,
  headers: { 'content-type': 'application/json', ...headers },
  payload: JSON.stringify(body),
});

function assertError(res: LightMyRequestResponse, status: number, code: string, field?: string): Record<string, unknown> {
  assert.equal(res.statusCode, status, res.body);
  const body = res.json() as Record<string, unknown>;
  assert.equal(body.code, code, res.body);
  if (field !== undefined) assert.equal(body.field, field, res.body);
  return body;
}

async function planned(call: Setup['call'], body: Record<string, unknown> = {}): Promise<RestorePlan> {
  const res = await call(post('/v1/restores', { backup: IDS.middle, mode: 'in-place', ...body }, bearer('restorer')));
  assert.equal(res.statusCode, 201, res.body);
  return (res.json() as { plan: RestorePlan }).plan;
}

test('every restore route needs the restorer role: viewer and operator get 403 and change nothing', async () => {
  const { call, fakes } = await setup();
  const plan = await planned(call);
  const routes = (auth: Record<string, string>): InjectOptions[] => [
    post('/v1/restores', { backup: IDS.middle, mode: 'in-place' }, auth),
    { method: 'GET', url: '/v1/restores', headers: auth },
    { method: 'GET', url: `/v1/restores/${plan.id}`, headers: auth },
    post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, auth),
    post(`/v1/restores/${plan.id}/rollback`, { confirmationToken: plan.confirmationToken }, auth),
  ];
  for (const role of ['viewer', 'operator'] as const) {
    for (const req of routes(bearer(role))) {
      const body = assertError(await call(req), 403, 'FORBIDDEN');
      assert.match(body.message as string, new RegExp(`role ${role}.*needs role restorer`), `${role} ${req.method} ${req.url}`);
      assert.ok(!JSON.stringify(body).includes(plan.confirmationToken));
    }
  }
  assert.equal(fakes.restores.records.size, 1, 'no plan was made');
  assert.equal(fakes.jobs.requests.length, 0, 'no job was submitted');
  // Without credentials: 401.
  assertError(await call({ method: 'GET', url: '/v1/restores' }), 401, 'UNAUTHENTICATED');

  const [create, list, show, apply, rollback] = routes(bearer('restorer'));
  const made = await call(create!);
  assert.equal(made.statusCode, 201, made.body);
  const second = (made.json() as { plan: RestorePlan }).plan;
  assert.equal(made.headers.location, `/v1/restores/${second.id}`);
  assert.equal((await call(list!)).statusCode, 200);
  const view = (await call(show!)).json() as { plan: RestorePlan; state: string; journal: { steps: Record<string, { state: string }> } };
  assert.equal(view.plan.confirmationToken, plan.confirmationToken);
  assert.equal(view.state, 'planned');
  assert.deepEqual(Object.keys(view.journal.steps), [...IN_PLACE_STEPS]);
  const applied = await call(apply!);
  assert.equal(applied.statusCode, 202, applied.body);
  const job = (applied.json() as { job: { id: string; kind: string; params: Record<string, unknown> } }).job;
  assert.equal(applied.headers.location, `/v1/jobs/${job.id}`);
  assert.equal(job.kind, 'restore');
  assert.deepEqual(job.params, { restoreId: plan.id, action: 'apply' });
  assert.equal((await call(rollback!)).statusCode, 202);
  assert.deepEqual(fakes.jobs.requests.map((r) => [r.kind, r.params, r.requestedBy]), [
    ['restore', { restoreId: plan.id, action: 'apply' }, 'dr-team'],
    ['restore', { restoreId: plan.id, action: 'rollback' }, 'dr-team'],
  ]);
});

test('restores are per node: a non-leader, and an instance with no leader elected, serve every restore route', async () => {
  const { call, fakes } = await setup();
  for (const leader of ['node-b', undefined]) {
    fakes.leadership.leader = false;
    fakes.leadership.name = leader;
    const plan = await planned(call);
    assert.equal((await call({ method: 'GET', url: `/v1/restores/${plan.id}`, headers: bearer('restorer') })).statusCode, 200);
    const applied = await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken, through: 'stop-etcd' }, bearer('restorer')));
    assert.equal(applied.statusCode, 202, applied.body);
    assert.deepEqual(fakes.jobs.requests.at(-1)?.params, { restoreId: plan.id, action: 'apply', through: 'stop-etcd' });
    assert.equal((await call(post(`/v1/restores/${plan.id}/rollback`, { confirmationToken: plan.confirmationToken }, bearer('restorer')))).statusCode, 202);
  }
  // Backups stay leader-only.
  assertError(await call(post('/v1/backups', {}, bearer('restorer'))), 409, 'NOT_LEADER');
});

test('the confirmation token is checked before any job exists, and never reaches a job, a log line or an audit line', async () => {
  const { call, fakes, capture } = await setup();
  const plan = await planned(call);
  for (const wrong of ['f'.repeat(32), plan.confirmationToken.slice(0, -1), `${plan.confirmationToken}0`, plan.confirmationToken.toUpperCase()]) {
    const body = assertError(await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: wrong }, bearer('restorer'))), 400, 'BAD_REQUEST', '/body/confirmationToken');
    assert.match(body.message as string, new RegExp(`does not match restore ${plan.id}`));
    assert.match(body.hint as string, /GET \/v1\/restores\//);
    assertError(await call(post(`/v1/restores/${plan.id}/rollback`, { confirmationToken: wrong }, bearer('restorer'))), 400, 'BAD_REQUEST', '/body/confirmationToken');
  }
  assert.equal(fakes.jobs.requests.length, 0);
  assert.equal((await fakes.restores.get(plan.id)).state, 'planned');

  const ok = await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, bearer('restorer')));
  assert.equal(ok.statusCode, 202);
  const dry = await call(post('/v1/restores', { backup: IDS.middle, mode: 'in-place', dryRun: true }, bearer('restorer')));
  assert.equal(dry.statusCode, 201, dry.body);
  const dryBody = dry.json() as { plan: RestorePlan; job: { id: string; params: Record<string, unknown> } };
  assert.deepEqual(dryBody.job.params, { restoreId: dryBody.plan.id, action: 'apply' });

  for (const r of fakes.jobs.requests) assert.ok(!JSON.stringify(r).includes(plan.confirmationToken) && !JSON.stringify(r).includes(dryBody.plan.confirmationToken), 'a job holds a token');
  const audit = capture.lines.filter((l) => l.audit === true);
  assert.ok(audit.length >= 10);
  const everything = capture.text();
  assert.ok(!everything.includes(plan.confirmationToken) && !everything.includes(dryBody.plan.confirmationToken), 'a confirmation token reached the log');
  const pick = (l: Record<string, unknown>) => ({ route: l.route, status: l.status, restoreId: l.restoreId, jobId: l.jobId, who: l.who });
  assert.deepEqual(pick(audit.find((l) => l.route === '/v1/restores' && l.status === 201 && l.jobId !== undefined)!), { route: '/v1/restores', status: 201, restoreId: dryBody.plan.id, jobId: dryBody.job.id, who: 'dr-team' });
  assert.deepEqual(audit.filter((l) => l.route === '/v1/restores/:id/apply').map((l) => [l.status, l.code, (l.params as { id: string }).id]), [
    [400, 'BAD_REQUEST', plan.id], [400, 'BAD_REQUEST', plan.id], [400, 'BAD_REQUEST', plan.id], [400, 'BAD_REQUEST', plan.id], [202, undefined, plan.id],
  ]);
});

test('validation errors are 400 and name the field; an unknown restore is 404', async () => {
  const { call, fakes } = await setup();
  const plan = await planned(call);
  const r = bearer('restorer');
  const cases: [InjectOptions, string, RegExp][] = [
    [post('/v1/restores', { mode: 'in-place' }, r), '/body/backup', /required/],
    [post('/v1/restores', { backup: IDS.middle }, r), '/body/mode', /required/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'sideways' }, r), '/body/mode', /one of in-place, fresh-control-plane/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', dryRun: 'yes' }, r), '/body/dryRun', /boolean/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', members: [{ name: 'cp-1', peerURL: 'https://10.0.0.1:2380/path' }] }, r), '/body/members/0/peerURL', /not valid/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', members: [{ name: 'cp=1', peerURL: 'https://10.0.0.1:2380' }] }, r), '/body/members/0/name', /not valid/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', members: [] }, r), '/body/members', /.+/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', bumpRevision: 0 }, r), '/body/bumpRevision', /at least 1/],
    [post('/v1/restores', { backup: IDS.middle, mode: 'in-place', confirm: true }, r), '/body/confirm', /not a known field/],
    [post('/v1/restores', { backup: 'not-an-id', mode: 'in-place' }, r), '/body/backup', /not a backup id/],
    [post('/v1/restores', { backup: { after: '2026-11-24T00:00:00Z' }, mode: 'in-place' }, r), '/body/backup', /.+/],
    [post(`/v1/restores/${plan.id}/apply`, {}, r), '/body/confirmationToken', /required/],
    [post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken, through: 'everything' }, r), '/body/through', /one of fetch, stop-apiserver/],
    [post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken, through: 'kubeadm-init' }, r), '/body/through', /not a step of a in-place restore/],
    [post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken, dryRun: true }, r), '/body/dryRun', /not a known field/],
    [post(`/v1/restores/${plan.id}/rollback`, { confirmationToken: 42 }, r), '/body/confirmationToken', /string/],
    [{ method: 'GET', url: '/v1/restores/..%2F..%2Fetc', headers: r }, '/params/id', /restore id/],
    [post('/v1/restores/restore-1/apply', { confirmationToken: 'x' }, r), '/params/id', /restore id/],
  ];
  for (const [req, field, message] of cases) {
    const body = assertError(await call(req), 400, 'BAD_REQUEST', field);
    assert.match(body.message as string, message, `${req.method} ${req.url} ${String(req.payload)}`);
  }
  assertError(await call(post('/v1/restores', { backup: '20250101T000000.000Z-r1', mode: 'in-place' }, r)), 404, 'NOT_FOUND');
  assertError(await call({ method: 'GET', url: '/v1/restores/restore-20200101T000000.000Z-abcdef', headers: r }), 404, 'NOT_FOUND');
  assertError(await call(post('/v1/restores/restore-20200101T000000.000Z-abcdef/apply', { confirmationToken: plan.confirmationToken }, r)), 404, 'NOT_FOUND');
  assert.equal(fakes.restores.records.size, 1);
  assert.equal(fakes.jobs.requests.length, 0);
});

test('a missing, unreadable or wrong identity is a 400 on encryption.identityFile before any job, for apply and for a dry run', async () => {
  const { call, fakes } = await setup();
  const plan = await planned(call);
  const r = bearer('restorer');
  fakes.identity.identities = undefined;
  const none = assertError(await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, r)), 400, 'CONFIG_INVALID', '/encryption/identityFile');
  assert.match(none.message as string, /no age identity is configured/);
  assert.match(none.hint as string, /encryption\.identityFile/);
  const dry = assertError(await call(post('/v1/restores', { backup: IDS.middle, mode: 'in-place', dryRun: true }, r)), 400, 'CONFIG_INVALID', '/encryption/identityFile');
  assert.match(dry.message as string, /no age identity/);
  assert.equal(fakes.restores.records.size, 1, 'the dry run was refused before it was planned');

  fakes.identity.error = new ConfigError('/encryption/identityFile', 'cannot read identity file /keys/lifeboat.txt: ENOENT');
  const unreadable = assertError(await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, r)), 400, 'CONFIG_INVALID', '/encryption/identityFile');
  assert.match(unreadable.message as string, /^config \/encryption\/identityFile: cannot read identity file \/keys\/lifeboat.txt: ENOENT$/);
  fakes.identity.error = new KeyError('identity file /keys/lifeboat.txt holds no AGE-SECRET-KEY-1 line');
  assertError(await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, r)), 400, 'CONFIG_INVALID', '/encryption/identityFile');
  delete fakes.identity.error;

  fakes.identity.identities = [(await generateIdentity()).identity];
  const wrong = assertError(await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, r)), 400, 'CONFIG_INVALID', '/encryption/identityFile');
  assert.match(wrong.message as string, new RegExp(`opens backup ${IDS.middle}`));
  assert.equal(fakes.jobs.requests.length, 0);

  // Once the backup is fetched, the key is not needed any more.
  fakes.identity.identities = undefined;
  fakes.restores.mark(plan.id, ['fetch']);
  assert.equal((await call(post(`/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken }, r))).statusCode, 202);
  // A plan without a dry run needs no key.
  assert.equal((await call(post('/v1/restores', { backup: IDS.middle, mode: 'in-place' }, r))).statusCode, 201);
});

test('a restore that is done or rolled back is not applied again (409); a dry run, a rolled-back restore and a fresh control plane after kubeadm init are not rolled back', async () => {
  const { call, fakes } = await setup();
  const r = bearer('restorer');
  const done = await planned(call);
  fakes.restores.mark(done.id, IN_PLACE_STEPS);
  const conflict = assertError(await call(post(`/v1/restores/${done.id}/apply`, { confirmationToken: done.confirmationToken }, r)), 409, 'CONFLICT');
  assert.match(conflict.message as string, /already done/);
  // A done restore may still be rolled back (the old data comes back).
  assert.equal((await call(post(`/v1/restores/${done.id}/rollback`, { confirmationToken: done.confirmationToken }, r))).statusCode, 202);

  const rolled = await planned(call);
  fakes.restores.mark(rolled.id, ['fetch', 'stop-apiserver'], true);
  assert.match(assertError(await call(post(`/v1/restores/${rolled.id}/apply`, { confirmationToken: rolled.confirmationToken }, r)), 409, 'CONFLICT').message as string, /rolled back/);
  assert.match(assertError(await call(post(`/v1/restores/${rolled.id}/rollback`, { confirmationToken: rolled.confirmationToken }, r)), 409, 'CONFLICT').message as string, /already rolled back/);

  const dry = (await call(post('/v1/restores', { backup: IDS.middle, mode: 'in-place', dryRun: true }, r))).json() as { plan: RestorePlan };
  assert.match(assertError(await call(post(`/v1/restores/${dry.plan.id}/rollback`, { confirmationToken: dry.plan.confirmationToken }, r)), 409, 'CONFLICT').message as string, /dry run/);

  const fresh = await planned(call, { mode: 'fresh-control-plane' });
  fakes.restores.mark(fresh.id, ['fetch', 'place-files', 'restore-snapshot', 'swap-data-dir', 'cleanup-leases', 'kubeadm-config', 'kubeadm-init']);
  assert.match(assertError(await call(post(`/v1/restores/${fresh.id}/rollback`, { confirmationToken: fresh.confirmationToken }, r)), 409, 'CONFLICT').hint as string, /kubeadm reset/);

});

test('the restore routes are in /openapi.json with their schemas', async () => {
  const { call } = await setup();
  const doc = (await call({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, unknown>; required?: string[] } }> }; responses: Record<string, unknown> }>> };
  assert.ok(doc.paths['/v1/restores']?.post?.responses['201']);
  assert.ok(doc.paths['/v1/restores']?.get?.responses['200']);
  assert.ok(doc.paths['/v1/restores/{id}']?.get?.responses['200']);
  const apply = doc.paths['/v1/restores/{id}/apply']?.post;
  assert.ok(apply?.responses['202']);
  const schema = apply.requestBody!.content['application/json']!.schema;
  assert.deepEqual(Object.keys(schema.properties).sort(), ['confirmationToken', 'through']);
  assert.deepEqual(schema.required, ['confirmationToken']);
  assert.ok(doc.paths['/v1/restores/{id}/rollback']?.post?.responses['202']);
  const create = doc.paths['/v1/restores']!.post!.requestBody!.content['application/json']!.schema;
  for (const f of ['backup', 'mode', 'members', 'dryRun', 'clusterToken', 'bumpRevision', 'leaseCleanupBy']) assert.ok(f in create.properties, f);
});
