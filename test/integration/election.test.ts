import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdLeaderElection } from '../../src/leader/election.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { until } from '../support/daemon.ts';
import { configDoc, configOf, quietLog } from '../support/lifeboat.ts';

let work: string;
let cluster: EtcdCluster;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-election-'));
  ({ etcd: cluster } = await startEtcdHost(work, { members: 3, hosts: ['m1', 'm2', 'm3'] }));
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('three candidates elect exactly one leader; a resigning leader hands over; everyone sees the leader', async () => {
  const etcd = configOf(configDoc(cluster, work, work, [])).etcd;
  const changes: string[] = [];
  const make = (identity: string, endpoint: string) =>
    new EtcdLeaderElection({
      etcd: { ...etcd, endpoints: [endpoint] },
      identity,
      key: '/lifeboat/election/it',
      ttlSeconds: 3,
      log: quietLog,
      onChange: (leading) => changes.push(`${identity}:${leading}`),
    });
  const candidates = ['cp-1', 'cp-2', 'cp-3'].map((id, i) => make(id, cluster.endpoints[i]!));
  try {
    for (const c of candidates) c.start();
    await until('one leader', () => candidates.some((c) => c.isLeader()));
    await new Promise((r) => setTimeout(r, 1500)); // time for a second leader to appear, if the election were broken
    const leaders = candidates.filter((c) => c.isLeader());
    assert.equal(leaders.length, 1);
    const first = leaders[0]!;
    const name = first.leader()!;
    await until('all see the leader', () => candidates.every((c) => c.leader() === name));

    await first.stop();
    assert.equal(first.isLeader(), false);
    const rest = candidates.filter((c) => c !== first);
    await until('a new leader', () => rest.some((c) => c.isLeader()), 5000);
    assert.equal(rest.filter((c) => c.isLeader()).length, 1);
    const second = rest.find((c) => c.isLeader())!;
    await until('the others see it', () => rest.every((c) => c.leader() === second.leader()));
    assert.notEqual(second.leader(), name);
    assert.deepEqual(changes.filter((c) => c.endsWith(':true')).length, 2);
  } finally {
    await Promise.all(candidates.map((c) => c.stop()));
  }
});

test('a leader whose etcd member is gone for longer than the TTL steps down, and leadership moves on', async () => {
  const etcd = configOf(configDoc(cluster, work, work, [])).etcd;
  const make = (identity: string, endpoint: string) =>
    new EtcdLeaderElection({ etcd: { ...etcd, endpoints: [endpoint], dialTimeoutMs: 1000 }, identity, key: '/lifeboat/election/partition', ttlSeconds: 2, log: quietLog });
  const a = make('cp-1', cluster.endpoints[0]!);
  const b = make('cp-2', cluster.endpoints[1]!);
  try {
    a.start();
    await until('a leads', () => a.isLeader());
    b.start();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(b.isLeader(), false);
    cluster.kill(cluster.members[0]!.name, 'SIGSTOP'); // a's only member stops answering
    await until('b takes over', () => b.isLeader(), 15_000);
    await until('a steps down', () => !a.isLeader(), 15_000);
  } finally {
    cluster.kill(cluster.members[0]!.name, 'SIGCONT');
    await Promise.all([a.stop(), b.stop()]);
  }
});
