import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BadRequestError, ConflictError, LifeboatError, NotFoundError } from '../../src/errors/errors.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import { findStarted, memberUrl, planMembers, resolveBackupId, rollbackTargets, type MemberDaemon } from '../../src/restore/fleet.ts';
import { freshJournal } from '../../src/restore/journal.ts';
import type { RestorePlan, RestoreRequest } from '../../src/restore/plan.ts';
import { samplePlan } from '../support/plans.ts';

const members = [
  { name: 'cp-1', peerURL: 'https://10.0.0.1:2380' },
  { name: 'cp-2', peerURL: 'https://10.0.0.2:2380' },
  { name: 'cp-3', peerURL: 'https://10.0.0.3:2380' },
];

function view(plan: RestorePlan, started: boolean, rolledBack = false): RestoreView {
  const journal = freshJournal(plan);
  if (started) journal.steps.fetch = { state: 'done', attempts: 1 };
  if (rolledBack) journal.rollback = { state: 'done', startedAt: '2026-11-24T05:00:00.000Z', actions: [] };
  return { plan, journal, state: started ? 'applying' : 'planned' } as RestoreView;
}

/** Daemons by URL, each with its restores; records the plans asked of it. */
class Daemons {
  readonly restores = new Map<string, RestoreView[]>();
  readonly planned: { url: string; body: RestoreRequest }[] = [];
  readonly failing = new Set<string>();
  daemon = (url: string): MemberDaemon => {
    return {
      url,
      withUrl: (u) => this.daemon(u),
      backup: async (ref) => ({ manifest: { backupId: ref === 'latest' ? '20261124T030000.000Z-r100' : ref } }),
      backups: async ({ before }) => (before === '2026-11-24T03:30:00.001Z' ? [{ manifest: { backupId: '20261124T030000.000Z-r100' } }] : []),
      restores: async () => this.restores.get(url) ?? [],
      restore: async (id) => (this.restores.get(url) ?? []).find((v) => v.plan.id === id)!,
      planRestore: async (body) => {
        if (this.failing.has(url)) throw new BadRequestError('/node', 'this node is not among the members');
        this.planned.push({ url, body });
        const name = url.includes('cp3.example') ? 'cp-3' : `cp-${/10\.0\.0\.(\d)/.exec(url)?.[1] ?? '?'}`;
        return { plan: samplePlan({ node: name, members, clusterToken: body.clusterToken ?? 'new', id: `restore-20261124T040000.000Z-00000${name.slice(-1)}` }) };
      },
    };
  };
}

const urlOf = memberUrl(new Map([['cp-3', 'https://cp3.example:9443']]), '8443');

test('memberUrl: a given URL by name, else the peer host at the API port', () => {
  assert.equal(urlOf(members[1]!), 'https://10.0.0.2:8443');
  assert.equal(urlOf(members[2]!), 'https://cp3.example:9443');
});

test('planMembers resumes the restore with the first plan\'s cluster token and plans the others with its choices pinned; an error names the member', async () => {
  const d = new Daemons();
  const first = { name: 'cp-1', api: d.daemon('https://10.0.0.1:8443'), plan: samplePlan({ members, clusterToken: 'shared', bumpRevision: 5000, leaseCleanupBy: 'cp-2' }) };
  const resumed = samplePlan({ node: 'cp-2', members, clusterToken: 'shared', id: 'restore-20261124T040000.000Z-000002' });
  d.restores.set('https://10.0.0.2:8443', [view(samplePlan({ node: 'cp-2', clusterToken: 'other' }), true), view(resumed, true)]);
  const said: string[] = [];
  const nodes = await planMembers(first, urlOf, (l) => said.push(l));
  assert.deepEqual(nodes.map((n) => [n.name, n.api.url, n.plan.id]), [
    ['cp-1', 'https://10.0.0.1:8443', first.plan.id],
    ['cp-2', 'https://10.0.0.2:8443', resumed.id],
    ['cp-3', 'https://cp3.example:9443', 'restore-20261124T040000.000Z-000003'],
  ]);
  assert.deepEqual(d.planned.map((p) => p.url), ['https://cp3.example:9443'], 'only cp-3 is planned anew');
  assert.deepEqual(d.planned[0]!.body, { backup: first.plan.backupId, mode: 'in-place', members, clusterToken: 'shared', bumpRevision: 5000, leaseCleanupBy: 'cp-2' });
  assert.ok(said.includes(`cp-2: resuming ${resumed.id} (applying) on https://10.0.0.2:8443`));

  d.failing.add('https://cp3.example:9443');
  await assert.rejects(planMembers(first, urlOf, () => undefined), (err: unknown) => err instanceof LifeboatError && err.code === 'BAD_REQUEST' && err.message === 'cp-3: this node is not among the members');
});

test('findStarted takes the newest started in-place restore of the backup; dry runs, rolled-back and never-started ones are leftovers', async () => {
  const d = new Daemons();
  const api = d.daemon('https://10.0.0.1:8443');
  const backupId = '20261124T030000.000Z-r100';
  const id = (n: number) => `restore-20261124T04000${n}.000Z-abcdef`;
  d.restores.set(api.url, [
    view(samplePlan({ id: id(1) }), true),
    view(samplePlan({ id: id(2) }), true, true),
    view(samplePlan({ id: id(3), dryRun: true }), true),
    view(samplePlan({ id: id(4), backupId: '20261124T020000.000Z-r90' }), true),
    view(samplePlan({ id: id(5) }), false),
  ]);
  assert.equal((await findStarted(api, { backupId }))?.plan.id, id(1));
  d.restores.set(api.url, [view(samplePlan({ id: id(5) }), false)]);
  assert.equal(await findStarted(api, { backupId }), undefined);
});

test('findStarted of a point in time takes the started restore to the same point (a time however written); of the backup itself it leaves restores to a point alone', async () => {
  const d = new Daemons();
  const api = d.daemon('https://10.0.0.1:8443');
  const backupId = '20261124T030000.000Z-r100';
  const id = (n: number) => `restore-20261124T04000${n}.000Z-abcdef`;
  const at = (target: { time: string } | { revision: string } | { beforeDeletionOf: string }) => ({ target, targetRevision: '150', targetTime: '2026-11-24T14:31:00.000Z', segments: [], leaseTtlSeconds: 3600 });
  d.restores.set(api.url, [
    view(samplePlan({ id: id(1), pointInTime: at({ time: '2026-11-24T14:31:00Z' }) }), true),
    view(samplePlan({ id: id(2), pointInTime: at({ revision: '150' }) }), true),
    view(samplePlan({ id: id(3), pointInTime: at({ beforeDeletionOf: '/registry/namespaces/shop' }) }), true),
    view(samplePlan({ id: id(4), pointInTime: at({ time: '2026-11-24T14:31:00Z' }) }), false),
  ]);
  assert.equal((await findStarted(api, { point: { time: '2026-11-24T14:31:00.000+00:00' } }))?.plan.id, id(1));
  assert.equal((await findStarted(api, { point: { revision: '150' } }))?.plan.id, id(2));
  assert.equal((await findStarted(api, { point: { beforeDeletionOf: '/registry/namespaces/shop' } }))?.plan.id, id(3));
  assert.equal(await findStarted(api, { point: { time: '2026-11-24T14:32:00Z' } }), undefined, 'another time');
  assert.equal(await findStarted(api, { point: { revision: '151' } }), undefined);
  assert.equal(await findStarted(api, { backupId, pointInTime: false }), undefined, 'apply --all --backup does not resume a restore to a point');
  assert.equal((await findStarted(api, { backupId }))?.plan.id, id(3), 'rollback --all --backup covers a restore to a point after that backup');
});

test('resolveBackupId: an id or latest as the daemon names it; {before} is at or before that time; none is NOT_FOUND; a bad time names --before', async () => {
  const api = new Daemons().daemon('https://10.0.0.1:8443');
  assert.equal(await resolveBackupId(api, 'latest'), '20261124T030000.000Z-r100');
  assert.equal(await resolveBackupId(api, { before: '2026-11-24T03:30:00Z' }), '20261124T030000.000Z-r100');
  await assert.rejects(resolveBackupId(api, { before: '2026-11-24T01:00:00Z' }), NotFoundError);
  await assert.rejects(resolveBackupId(api, { before: 'yesterday' }), (err: unknown) => err instanceof BadRequestError && err.field === '--before');
});

test('rollbackTargets: the started restore and each member\'s with its token; a member without one is said and left out; nothing started is a conflict', async () => {
  const d = new Daemons();
  const first = d.daemon('https://10.0.0.1:8443');
  const backupId = '20261124T030000.000Z-r100';
  await assert.rejects(rollbackTargets(first, { backupId }, urlOf, () => undefined), ConflictError);
  d.restores.set(first.url, [view(samplePlan({ members, clusterToken: 'shared' }), true)]);
  d.restores.set('https://10.0.0.2:8443', [view(samplePlan({ node: 'cp-2', members, clusterToken: 'shared', id: 'restore-20261124T040000.000Z-000002' }), true)]);
  const said: string[] = [];
  const checked: string[][] = [];
  const nodes = await rollbackTargets(first, { backupId }, urlOf, (l) => said.push(l), (m) => checked.push(m.map((x) => x.name)));
  assert.deepEqual(nodes.map((n) => n.name), ['cp-1', 'cp-2']);
  assert.deepEqual(checked, [['cp-1', 'cp-2', 'cp-3']]);
  assert.deepEqual(said, ['cp-3: no restore with cluster token shared on https://cp3.example:9443; nothing to roll back there']);
});
