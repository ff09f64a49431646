import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import type { ChangeEvent } from '../../src/changes/format.ts';
import type { SegmentManifest } from '../../src/changes/manifest.ts';
import { planReplay } from '../../src/changes/replay-plan.ts';
import { replayEvents, type ReplayEtcd, type ReplayOp } from '../../src/changes/replay.ts';
import { BadRequestError } from '../../src/errors/errors.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const put = (rev: number, key: string, value: string, time: string, lease?: string): ChangeEvent => ({ rev: String(rev), time, op: 'put', key: b64(key), value: b64(value), ...(lease ? { lease } : {}) });
const del = (rev: number, key: string, time: string): ChangeEvent => ({ rev: String(rev), time, op: 'delete', key: b64(key) });

/** A segment manifest with just what planning reads. */
function segment(id: string, events: ChangeEvent[], gap?: { from: string; to: string }): { manifest: SegmentManifest; events: ChangeEvent[] } {
  const manifest = { segmentId: id, firstRevision: events[0]!.rev, lastRevision: events.at(-1)!.rev, firstTime: events[0]!.time, lastTime: events.at(-1)!.time, ...(gap ? { gap } : {}) } as unknown as SegmentManifest;
  return { manifest, events };
}
const backup = (id: string, revision: number, createdAt: string) => ({ backupId: id, createdAt, etcd: { revision: String(revision) } }) as unknown as StoredManifest;

const s1 = segment('s1', [put(11, '/a', '1', '2026-12-06T10:00:01Z'), put(12, '/b', '1', '2026-12-06T10:00:02Z'), del(13, '/ns/x', '2026-12-06T10:00:03Z')]);
const s2 = segment('s2', [put(14, '/ns/x', '2', '2026-12-06T10:00:10Z'), del(15, '/ns/x', '2026-12-06T10:00:11Z'), put(16, '/c', '1', '2026-12-06T10:00:12Z')]);
const segments = [s1, s2];
const read = async (m: SegmentManifest) => segments.find((s) => s.manifest.segmentId === m.segmentId)!.events;
const backups = [backup('b10', 10, '2026-12-06T10:00:00Z'), backup('b14', 14, '2026-12-06T10:00:10.5Z')];
const plan = (target: Parameters<typeof planReplay>[0]) => planReplay(target, segments.map((s) => s.manifest), backups, read);

test('a revision, a time and "before the deletion of K" each name one revision; the newest backup at or before it, and only the segments after that backup', async () => {
  assert.deepEqual(
    { ...(await plan({ revision: '12' })), target: undefined },
    { target: undefined, backupId: 'b10', backupRevision: '10', targetRevision: '12', targetTime: '2026-12-06T10:00:02Z', segments: [{ segmentId: 's1', firstRevision: '11', lastRevision: '13' }] },
  );
  const byTime = await plan({ time: '2026-12-06T10:00:11.500Z' });
  assert.equal(byTime.targetRevision, '15', 'the last revision received at or before the time');
  assert.equal(byTime.backupId, 'b14');
  assert.deepEqual(byTime.segments.map((s) => s.segmentId), ['s2']);
  const deletion = await plan({ beforeDeletionOf: '/ns/x' });
  assert.equal(deletion.targetRevision, '14', 'just before the newest delete of the key');
  assert.equal(deletion.backupId, 'b14');
  assert.deepEqual(deletion.segments, [], 'the backup itself is the point: nothing to replay');
  assert.equal(deletion.targetTime, '2026-12-06T10:00:10.5Z');
});

test('a point the log cannot reach is refused naming the field: past the end, before every backup, inside a gap, a key never deleted, not a revision or a time', async () => {
  const refused = async (target: Parameters<typeof planReplay>[0], field: string, message: RegExp, list = segments.map((s) => s.manifest), from = backups) =>
    assert.rejects(planReplay(target, list, from, read), (err: unknown) => err instanceof BadRequestError && err.field === field && message.test(err.message));
  await refused({ revision: '17' }, '/target/revision', /past the end of the change log \(revision 16/);
  await refused({ revision: 'x' }, '/target/revision', /not an etcd revision/);
  await refused({ time: 'yesterday' }, '/target/time', /not an RFC 3339 time/);
  await refused({ time: '2026-12-06T09:00:00Z' }, '/target/time', /before the change log starts/);
  await refused({ beforeDeletionOf: '/a' }, '/target/beforeDeletionOf', /holds no delete of \/a/);
  await assert.rejects(planReplay({ revision: '12' }, segments.map((s) => s.manifest), [backup('b12', 12, 'x')].slice(0, 0), read), (err: unknown) => err instanceof BadRequestError && /before the oldest full backup \(there is none\)/.test(err.message));
  const gapped = [s1.manifest, segment('s2', s2.events.slice(1), { from: '14', to: '14' }).manifest];
  await refused({ revision: '16' }, '/target/revision', /revisions 14-14 after backup b10 .* are not in the change log/, gapped, [backups[0]!]);
  // The backup taken after the gap covers it.
  assert.equal((await planReplay({ revision: '16' }, gapped, backups, read)).backupId, 'b14');
});

/** A ReplayEtcd that records each transaction. */
function recorder(): ReplayEtcd & { txns: ReplayOp[][]; granted: string[] } {
  const txns: ReplayOp[][] = [];
  const granted: string[] = [];
  return {
    txns,
    granted,
    async apply(ops) {
      assert.equal(new Set(ops.map((o) => o.key.toString())).size, ops.length, 'no key twice in one transaction');
      txns.push([...ops]);
    },
    async grantLease(id, ttl) {
      granted.push(`${id}/${ttl}`);
    },
  };
}

test('replay applies exactly the events after the backup up to the target: one op per key per transaction, the last one winning, in order, at most maxOps each', async () => {
  const etcd = recorder();
  const events = [put(11, '/a', '1', 't'), put(12, '/a', '2', 't'), del(12, '/b', 't'), put(13, '/c', '1', 't'), del(14, '/a', 't'), put(15, '/d', '1', 't'), put(16, '/e', '1', 't')];
  const stats = await replayEvents(etcd, [events.slice(0, 3), events.slice(3)], { from: '11', to: '15', maxOps: 2, leaseTtlSeconds: 60 });
  const shown = etcd.txns.map((t) => t.map((o) => `${o.op} ${o.key.toString()}${o.value ? `=${o.value.toString()}` : ''}`));
  assert.deepEqual(shown, [['put /a=2', 'delete /b'], ['put /c=1', 'delete /a'], ['put /d=1']]);
  assert.deepEqual({ ...stats, seconds: 0, etcdSeconds: 0, eventsPerSecond: 0 }, { events: 5, revisions: 4, transactions: 3, leases: 0, lastRevision: '15', seconds: 0, etcdSeconds: 0, eventsPerSecond: 0 });

  // Keeping the last op per key: a delete then a put in one batch is the put.
  const again = recorder();
  await replayEvents(again, [[del(20, '/k', 't'), put(21, '/k', 'back', 't')]], { from: '19', to: '21', maxOps: 10, leaseTtlSeconds: 60 });
  assert.deepEqual(again.txns.map((t) => t.map((o) => `${o.op} ${o.key.toString()}`)), [['put /k']]);
});

test('a key put with a lease keeps that lease id, granted once with the given TTL; a key without one gets none', async () => {
  const etcd = recorder();
  const stats = await replayEvents(etcd, [[put(2, '/ev/1', 'x', 't', '777'), put(3, '/ev/2', 'x', 't', '777'), put(4, '/lease/m', 'x', 't', '888'), put(5, '/plain', 'x', 't')]], { from: '1', to: '5', maxOps: 128, leaseTtlSeconds: 3600 });
  assert.deepEqual(etcd.granted, ['777/3600', '888/3600']);
  assert.deepEqual(etcd.txns[0]!.map((o) => [o.key.toString(), o.lease]), [['/ev/1', '777'], ['/ev/2', '777'], ['/lease/m', '888'], ['/plain', undefined]]);
  assert.equal(stats.leases, 2);
});
