import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { keyOf, type ChangeEvent } from '../../src/changes/format.ts';
import type { SegmentManifest } from '../../src/changes/manifest.ts';
import { planReplay } from '../../src/changes/replay-plan.ts';
import { canonicalBase64, replayEvents, type ReplayEtcd, type ReplayOp, type ReplayOptions } from '../../src/changes/replay.ts';
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

/** A ReplayEtcd that records each transaction and grant, in order, and that no two calls overlap. */
function recorder(): ReplayEtcd & { txns: ReplayOp[][]; granted: string[]; calls: string[] } {
  const txns: ReplayOp[][] = [];
  const granted: string[] = [];
  const calls: string[] = [];
  let inTxn = false;
  return {
    txns,
    granted,
    calls,
    async apply(ops) {
      assert.equal(new Set(ops.map((o) => o.key.toString())).size, ops.length, 'no key twice in one transaction');
      assert.ok(!inTxn, 'one transaction at a time');
      inTxn = true;
      await new Promise((resolve) => setImmediate(resolve)); // a gap in which a second call would show
      inTxn = false;
      txns.push([...ops]);
      calls.push(`txn ${ops.map((o) => o.key.toString()).join(' ')}`);
    },
    async grantLease(id, ttl) {
      assert.ok(!inTxn, 'no grant while a transaction is in flight');
      granted.push(`${id}/${ttl}`);
      calls.push(`grant ${id}`);
    },
  };
}

const options = (from: string, to: string, more: Partial<ReplayOptions> = {}): ReplayOptions => ({ from, to, maxOps: 128, maxTxnBytes: 1 << 20, windowBytes: 1 << 20, leaseTtlSeconds: 60, ...more });
const shown = (txns: ReplayOp[][]) => txns.map((t) => t.map((o) => `${o.op} ${o.key.toString()}${o.value ? `=${o.value.toString()}` : ''}`));

test('replay applies exactly the events after the backup up to the target: each key its last operation, in the order of those, at most maxOps per transaction', async () => {
  const etcd = recorder();
  const events = [put(11, '/a', '1', 't'), put(12, '/a', '2', 't'), del(12, '/b', 't'), put(13, '/c', '1', 't'), del(14, '/a', 't'), put(15, '/d', '1', 't'), put(16, '/e', '1', 't')];
  const stats = await replayEvents(etcd, [events.slice(0, 3), events.slice(3)], options('11', '15', { maxOps: 2 }));
  assert.deepEqual(shown(etcd.txns), [['delete /b', 'put /c=1'], ['delete /a', 'put /d=1']]);
  assert.deepEqual({ ...stats, seconds: 0, etcdSeconds: 0, eventsPerSecond: 0 }, { events: 5, revisions: 4, operations: 4, transactions: 2, leases: 0, lastRevision: '15', seconds: 0, etcdSeconds: 0, eventsPerSecond: 0 });

  // Keeping the last op per key: a delete then a put is the put.
  const again = recorder();
  await replayEvents(again, [[del(20, '/k', 't'), put(21, '/k', 'back', 't')]], options('19', '21', { maxOps: 10 }));
  assert.deepEqual(shown(again.txns), [['put /k=back']]);
});

test('a window is applied when an event would take it past windowBytes, while the next is gathered; transactions keep to maxTxnBytes, a larger operation alone', async () => {
  const etcd = recorder();
  // Keys of 4 base64 characters (2 bytes), values of 4 (3 bytes): 8 bytes held per key, 5 sent.
  const events = [put(2, '/a', 'aaa', 't'), put(3, '/b', 'bbb', 't'), put(4, '/a', 'AAA', 't'), put(5, '/c', 'ccc', 't'), del(6, '/a', 't'), put(7, '/b', 'BBB', 't')];
  const stats = await replayEvents(etcd, [events], options('1', '7', { windowBytes: 16, maxTxnBytes: 5 }));
  // Window 1: /b and /a (16 bytes; /a rewritten in it, so last); /c would pass 16, so it starts window 2.
  assert.deepEqual(shown(etcd.txns), [['put /b=bbb'], ['put /a=AAA'], ['put /c=ccc'], ['delete /a'], ['put /b=BBB']]);
  assert.equal(stats.operations, 5);

  const wide = recorder();
  await replayEvents(wide, [events], options('1', '7', { windowBytes: 16, maxTxnBytes: 10 }));
  assert.deepEqual(shown(wide.txns), [['put /b=bbb', 'put /a=AAA'], ['put /c=ccc', 'delete /a'], ['put /b=BBB']]);

  // A key rewritten larger that would take the window past its size starts the next one; its older put is never sent.
  const grown = recorder();
  await replayEvents(grown, [[put(2, '/a', 'a', 't'), put(3, '/b', 'b', 't'), put(4, '/a', 'aaaaaa', 't')]], options('1', '4', { windowBytes: 16 }));
  assert.deepEqual(shown(grown.txns), [['put /b=b'], ['put /a=aaaaaa']]);

  const big = recorder();
  await replayEvents(big, [[put(2, '/a', 'x', 't'), put(3, '/big', 'y'.repeat(50), 't'), put(4, '/b', 'z', 't')]], options('1', '4', { maxTxnBytes: 10 }));
  assert.deepEqual(big.txns.map((t) => t.map((o) => o.key.toString())), [['/a'], ['/big'], ['/b']]);
});

test('the transactions depend on the events alone, not on how segments split them; the end state is that of every event applied one by one', async () => {
  // A pseudo-random history over few keys, so that windows and transactions cut often.
  let seed = 7;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const history: ChangeEvent[] = [];
  for (let rev = 2; rev < 400; rev++) {
    for (let i = 0, n = 1 + rand(3); i < n; i++) {
      const k = `/k${rand(12)}`;
      if (history.some((e) => e.rev === String(rev) && e.key === b64(k))) continue; // one event per key per revision, as etcd's
      history.push(rand(4) === 0 ? del(rev, k, 't') : put(rev, k, 'v'.repeat(rand(20)) + rev, 't'));
    }
  }
  const expected = new Map<string, string>();
  for (const e of history.filter((h) => Number(h.rev) <= 300)) {
    if (e.op === 'put') expected.set(keyOf(e), Buffer.from(e.value!, 'base64').toString());
    else expected.delete(keyOf(e));
  }
  const o = options('1', '300', { maxOps: 3, maxTxnBytes: 40, windowBytes: 60 });
  const whole = recorder();
  await replayEvents(whole, [history], o);
  const split = recorder();
  await replayEvents(split, (function* () {
    for (let i = 0; i < history.length; i += 7) yield history.slice(i, i + 7);
  })(), o);
  assert.deepEqual(shown(split.txns), shown(whole.txns));
  const state = new Map<string, string>();
  for (const op of whole.txns.flat()) {
    if (op.op === 'put') state.set(op.key.toString(), op.value!.toString());
    else state.delete(op.key.toString());
  }
  assert.deepEqual([...state].sort(), [...expected].sort());
  assert.ok(whole.txns.length > 10, `${whole.txns.length} transactions`);
});

test('a key put with a lease keeps that lease id, granted once with the given TTL before the transactions of its window; a key without one gets none', async () => {
  const etcd = recorder();
  const stats = await replayEvents(etcd, [[put(2, '/ev/1', 'x', 't', '777'), put(3, '/ev/2', 'x', 't', '777'), put(4, '/lease/m', 'x', 't', '888'), put(5, '/plain', 'x', 't')]], options('1', '5', { leaseTtlSeconds: 3600 }));
  assert.deepEqual(etcd.granted, ['777/3600', '888/3600']);
  assert.deepEqual(etcd.calls, ['grant 777', 'grant 888', 'txn /ev/1 /ev/2 /lease/m /plain']);
  assert.deepEqual(etcd.txns[0]!.map((o) => [o.key.toString(), o.lease]), [['/ev/1', '777'], ['/ev/2', '777'], ['/lease/m', '888'], ['/plain', undefined]]);
  assert.equal(stats.leases, 2);
});

test('a failing transaction fails the replay, and so does a segment that cannot be read, with no transaction left in flight', async () => {
  const failing: ReplayEtcd = {
    async apply() {
      throw new Error('etcdserver: request is too large');
    },
    async grantLease() {},
  };
  await assert.rejects(replayEvents(failing, [[put(2, '/a', 'x', 't')], [put(3, '/b', 'x', 't')]], options('1', '3', { windowBytes: 1 })), /request is too large/);
  const etcd = recorder();
  async function* broken() {
    yield [put(2, '/a', 'x', 't')];
    yield [put(3, '/b', 'x', 't')];
    throw new Error('segment s3 is missing');
  }
  await assert.rejects(replayEvents(etcd, broken(), options('1', '9', { windowBytes: 1 })), /s3 is missing/);
  assert.deepEqual(etcd.calls, ['txn /a'], 'the window handed over was applied before the replay rejected');
});

test('a key is one key whatever the padding of its base64: one operation per key in a window', async () => {
  for (const bytes of [[], [0x41], [0x41, 0x42], [0x41, 0x42, 0x43], [0xff, 0xfe, 0xfd, 0xfc], [0x2f, 0x61]]) {
    const b = Buffer.from(bytes);
    const canonical = b.toString('base64');
    const variants = [canonical, canonical.replace(/=+$/, ''), b.toString('base64url').replace(/-/g, '+').replace(/_/g, '/')];
    // Bits past the last byte, which decoders ignore: "QR==" is "QQ==".
    if (canonical.endsWith('==')) variants.push(`${canonical.slice(0, -3)}${String.fromCharCode(canonical.charCodeAt(canonical.length - 3) + 1)}==`);
    for (const v of variants) {
      assert.deepEqual(Buffer.from(v, 'base64'), b, v);
      assert.equal(canonicalBase64(v), canonical, v);
    }
  }
  const etcd = recorder();
  const e = (rev: number, key: string, value: string): ChangeEvent => ({ rev: String(rev), time: 't', op: 'put', key, value: b64(value) });
  await replayEvents(etcd, [[e(2, 'L2E=', 'one'), e(3, 'L2E', 'two'), e(4, 'L2I=', 'b')]], options('1', '4'));
  assert.deepEqual(shown(etcd.txns), [['put /a=two', 'put /b=b']]);
});
