import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PausableElection, type StartableElection } from '../../src/daemon/pausable-election.ts';
import { RestoreHold } from '../../src/daemon/restore-hold.ts';
import { unfinishedLiveRestore } from '../../src/daemon/restores.ts';
import type { JobKind } from '../../src/jobs/job.ts';
import { DirectoryJobJournal } from '../../src/jobs/journal.ts';
import { leaderGate } from '../../src/jobs/leader-gate.ts';
import { JobRunner, type JobHandler } from '../../src/jobs/runner.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import { quietLog } from '../support/lifeboat.ts';

const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-hold-'));
test.after(() => rm(dir, { recursive: true, force: true }));
let n = 0;

/** An election that leads as soon as it starts; counts how many were made. */
function election() {
  let made = 0;
  const make = (): StartableElection => {
    made += 1;
    let on = false;
    return { start: () => void (on = true), stop: async () => void (on = false), isLeader: () => on, leader: () => (on ? 'cp-1' : undefined) };
  };
  return { election: new PausableElection(make), made: () => made };
}

/**
 * One daemon's runner during `restore apply --all`: each phase is a restore job that marks how
 * far the restore on this node went; `open` is what the restore journal says.
 */
function daemon(initiallyOpen: string | undefined = undefined) {
  const { election: e, made } = election();
  const journal = { open: initiallyOpen, failRead: false };
  const hold = new RestoreHold({
    election: e,
    openRestore: async () => {
      if (journal.failRead) throw new Error('cannot read the restore journal');
      return journal.open;
    },
    log: quietLog,
  });
  const ran: JobKind[] = [];
  const record: JobHandler = async (ctx) => void ran.push(ctx.job.kind);
  const restore: JobHandler = async (ctx, params) =>
    hold.during('r1', async () => {
      ran.push('restore');
      assert.equal(e.isLeader(), false, 'out of the election while the step runs');
      journal.open = params.through === 'fetch' ? undefined : params.through === 'done' ? undefined : 'r1';
    });
  const runner = new JobRunner({
    handlers: { backup: record, verify: record, drill: record, prune: record, cleanup: record, replicate: record, restore },
    journal: new DirectoryJobJournal(path.join(dir, `state-${n++}`), quietLog),
    log: quietLog,
    history: 50,
    mayStart: leaderGate(e, 'cp-1'),
  });
  const phase = async (through: string) => {
    const { job } = runner.submit({ kind: 'restore', params: { restoreId: 'r1', action: 'apply', through }, trigger: 'api', requestedBy: 'alice' });
    await runner.settled();
    assert.equal(runner.get(job.id)!.state, 'succeeded');
  };
  const prune = async () => {
    const { job } = runner.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });
    const backup = runner.submit({ kind: 'backup', trigger: 'schedule', requestedBy: 'schedule' });
    await runner.settled();
    return [runner.get(job.id)!, runner.get(backup.job.id)!];
  };
  return { election: e, made, hold, journal, runner, ran, phase, prune };
}

test('between the phases of apply --all this daemon stays out of the election: no backup, no prune', async () => {
  const d = daemon();
  await d.hold.recover();
  d.election.start();
  assert.equal(d.election.isLeader(), true);

  await d.phase('fetch');
  assert.equal(d.election.isLeader(), true, 'a fetch touches nothing live: the election is joined again');
  for (const through of ['stop-apiserver', 'stop-etcd', 'swap-data-dir', 'start-etcd']) {
    await d.phase(through);
    assert.equal(d.election.isLeader(), false, `still out after ${through}`);
    assert.equal(d.hold.held(), 'r1');
    const jobs = await d.prune();
    assert.deepEqual(jobs.map((j) => j.error?.code), ['NOT_LEADER', 'NOT_LEADER'], `between phases (after ${through}) a prune and a backup are refused`);
  }
  assert.deepEqual(d.ran.filter((k) => k !== 'restore'), [], 'no prune or backup handler ran');
  const madeBefore = d.made();
  await d.phase('done');
  assert.equal(d.hold.held(), undefined);
  assert.equal(d.election.isLeader(), true, 'the finished restore lets it lead again');
  assert.equal(d.made(), madeBefore + 1, 'once, with a new client');
  const jobs = await d.prune();
  assert.deepEqual(jobs.map((j) => j.state), ['succeeded', 'succeeded']);
});

test('a daemon that starts while a restore on its node is unfinished stays out until it is finished', async () => {
  const d = daemon('r1');
  await d.hold.recover();
  d.election.start();
  assert.equal(d.election.isLeader(), false);
  assert.equal(d.made(), 0, 'it never joined');
  const jobs = await d.prune();
  assert.deepEqual(jobs.map((j) => j.error?.code), ['NOT_LEADER', 'NOT_LEADER']);
  await d.phase('done');
  assert.equal(d.election.isLeader(), true);
});

test('when the restore journal cannot be read after a step, the daemon stays out (fails closed)', async () => {
  const d = daemon();
  await d.hold.recover();
  d.election.start();
  d.journal.failRead = true;
  await d.phase('stop-etcd');
  assert.equal(d.election.isLeader(), false);
  assert.equal(d.hold.held(), 'r1');
  d.journal.failRead = false;
  await d.phase('done');
  assert.equal(d.election.isLeader(), true);
});

test('the unfinished live restore is one that touched this node past the fetch and is neither done nor rolled back', () => {
  const view = (id: string, state: string, started: string[], dryRun = false) =>
    ({
      plan: { id, dryRun, steps: ['fetch', 'stop-apiserver', 'done'] },
      journal: { steps: Object.fromEntries(started.map((s) => [s, { state: 'done', attempts: 1 }])) },
      state,
    }) as unknown as RestoreView;
  assert.equal(unfinishedLiveRestore([view('a', 'partly-applied', ['fetch'])]), undefined);
  assert.equal(unfinishedLiveRestore([view('b', 'done', ['fetch', 'stop-apiserver', 'done'])]), undefined);
  assert.equal(unfinishedLiveRestore([view('c', 'rolled-back', ['fetch', 'stop-apiserver'])]), undefined);
  assert.equal(unfinishedLiveRestore([view('d', 'partly-applied', ['fetch', 'stop-apiserver'], true)]), undefined);
  assert.equal(unfinishedLiveRestore([view('a', 'partly-applied', ['fetch']), view('e', 'failed', ['fetch', 'stop-apiserver'])])?.plan.id, 'e');
  assert.equal(unfinishedLiveRestore([view('f', 'rollback-failed', ['fetch', 'stop-apiserver'])])?.plan.id, 'f');
});
