import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DirectoryJobJournal } from '../../src/jobs/journal.ts';
import { leaderGate } from '../../src/jobs/leader-gate.ts';
import { JobRunner, type JobHandler } from '../../src/jobs/runner.ts';
import { EtcdLeaderElection } from '../../src/leader/election.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { until } from '../support/daemon.ts';
import { configDoc, configOf, quietLog } from '../support/lifeboat.ts';

let work: string;
let cluster: EtcdCluster;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-fence-'));
  ({ etcd: cluster } = await startEtcdHost(work, { members: 3, hosts: ['m1', 'm2', 'm3'], version: '3.6' }));
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const TTL_SECONDS = 2;

test('a leader whose etcd stops answering steps down within TTL/2 and a poll, before the next one takes over; its queued prune never runs', async () => {
  const etcd = configOf(configDoc(cluster, work, work, [])).etcd;
  const events: { who: string; leading: boolean; at: number; otherLeading: boolean }[] = [];
  const candidates = new Map<string, EtcdLeaderElection>();
  const make = (identity: string, other: string, endpoint: string) => {
    const election = new EtcdLeaderElection({
      etcd: { ...etcd, endpoints: [endpoint], dialTimeoutMs: 1000 },
      identity,
      key: '/lifeboat/election/fence',
      ttlSeconds: TTL_SECONDS,
      log: quietLog,
      onChange: (leading) => events.push({ who: identity, leading, at: performance.now(), otherLeading: candidates.get(other)?.isLeader() ?? false }),
    });
    candidates.set(identity, election);
    return election;
  };
  const a = make('cp-1', 'cp-2', cluster.endpoints[0]!);
  const b = make('cp-2', 'cp-1', cluster.endpoints[1]!);

  // a's runner: a cleanup holds the runner while a prune waits in the queue.
  const ran: string[] = [];
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const record: JobHandler = async (ctx) => {
    ran.push(ctx.job.kind);
    if (ctx.job.kind === 'cleanup') await held;
  };
  const runner = new JobRunner({
    handlers: { backup: record, verify: record, drill: record, prune: record, cleanup: record, replicate: record, restore: record },
    journal: new DirectoryJobJournal(path.join(work, 'state'), quietLog),
    log: quietLog,
    history: 50,
    mayStart: leaderGate(a, 'cp-1'),
  });

  try {
    a.start();
    await until('a leads', () => a.isLeader());
    b.start();
    await until('b sees a lead', () => b.leader() === 'cp-1');
    assert.equal(b.isLeader(), false);

    runner.submit({ kind: 'cleanup', trigger: 'startup', requestedBy: 'startup' });
    const prune = runner.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });

    const stoppedAt = performance.now();
    cluster.kill(cluster.members[0]!.name, 'SIGSTOP'); // a's only member: its keepalives and polls hang
    await until('b takes over', () => b.isLeader(), 20_000);

    const aDown = events.find((e) => e.who === 'cp-1' && !e.leading);
    const bUp = events.find((e) => e.who === 'cp-2' && e.leading);
    assert.ok(aDown && bUp, JSON.stringify(events));
    assert.ok(aDown.at < bUp.at, `a stepped down ${Math.round(aDown.at - stoppedAt)} ms after its etcd stopped, b took over after ${Math.round(bUp.at - stoppedAt)} ms`);
    assert.equal(aDown.otherLeading, false, 'when a stepped down, nobody else led yet');
    assert.equal(bUp.otherLeading, false, 'when b took over, a no longer led');
    // a's last confirmation is at most one poll old when its etcd stops; its term ends TTL/2
    // after that confirmation's request was sent. 500 ms covers the timer firing late.
    const pollMs = Math.min(1000, (TTL_SECONDS * 1000) / 4);
    assert.ok(aDown.at - stoppedAt <= (TTL_SECONDS * 1000) / 2 + pollMs + 500, `a stepped down ${Math.round(aDown.at - stoppedAt)} ms after its etcd stopped`);

    release();
    await runner.settled();
    assert.deepEqual(ran, ['cleanup'], 'the prune queued while a led did not run');
    assert.equal(runner.get(prune.job.id)!.error?.code, 'NOT_LEADER');
  } finally {
    release();
    cluster.kill(cluster.members[0]!.name, 'SIGCONT');
    await Promise.all([a.stop(), b.stop()]);
  }
});
