import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { NotLeaderError } from '../../src/errors/errors.ts';
import { errorResponse } from '../../src/api/errors.ts';
import { FencedStore } from '../../src/daemon/fenced-store.ts';
import type { JobKind } from '../../src/jobs/job.ts';
import { DirectoryJobJournal } from '../../src/jobs/journal.ts';
import { LEADER_ONLY_KINDS, leaderGate } from '../../src/jobs/leader-gate.ts';
import { JobRunner, type JobHandler } from '../../src/jobs/runner.ts';
import { LeaderTerm } from '../../src/leader/term.ts';
import { archiveKey, formatSegmentId, manifestKey, segmentDataKey, segmentManifestKey, segmentSignatureKey } from '../../src/store/layout.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { quietLog } from '../support/lifeboat.ts';

const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-fence-'));
test.after(() => rm(dir, { recursive: true, force: true }));
let n = 0;

/** Leadership that the test flips by hand. */
function fakeLeadership(leading: boolean) {
  const state = { leading, other: 'cp-2' as string | undefined };
  return {
    state,
    isLeader: () => state.leading,
    leader: () => (state.leading ? 'cp-1' : state.other),
  };
}

/** A runner whose handlers record what ran; `block` holds the first job until released. */
function runnerWith(leadership: ReturnType<typeof fakeLeadership>) {
  const ran: JobKind[] = [];
  let release: () => void = () => undefined;
  const blocked = new Promise<void>((resolve) => (release = resolve));
  const record: JobHandler = async (ctx) => {
    ran.push(ctx.job.kind);
    if (ctx.job.params.block === true) await blocked;
    return { ok: true };
  };
  const handlers = { backup: record, verify: record, drill: record, prune: record, cleanup: record, replicate: record, restore: record };
  const runner = new JobRunner({
    handlers,
    journal: new DirectoryJobJournal(path.join(dir, `state-${n++}`), quietLog),
    log: quietLog,
    history: 50,
    mayStart: leaderGate(leadership, 'cp-1'),
  });
  return { runner, ran, release };
}

test('leader-only kinds are the ones the API refuses on a follower', () => {
  assert.deepEqual([...LEADER_ONLY_KINDS].sort(), ['backup', 'drill', 'prune', 'replicate', 'verify']);
});

test('leadership lost between submit and start: the queued prune fails NOT_LEADER and never runs', async () => {
  const leadership = fakeLeadership(true);
  const { runner, ran, release } = runnerWith(leadership);
  runner.submit({ kind: 'cleanup', params: { block: true }, trigger: 'startup', requestedBy: 'startup' });
  const prune = runner.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });
  const restore = runner.submit({ kind: 'restore', params: { restoreId: 'r1', action: 'apply' }, trigger: 'api', requestedBy: 'alice' });
  assert.equal(runner.get(prune.job.id)!.state, 'queued');
  leadership.state.leading = false; // another instance leads now
  release();
  await runner.settled();

  assert.deepEqual(ran, ['cleanup', 'restore'], 'the prune handler was never called; work that is not leader-only still runs');
  const failed = runner.get(prune.job.id)!;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.error?.code, 'NOT_LEADER');
  assert.match(failed.error!.message, /cp-2/);
  assert.equal(failed.startedAt, undefined, 'refused before it started');
  assert.equal(runner.get(restore.job.id)!.state, 'succeeded');

  leadership.state.leading = true;
  const again = runner.submit({ kind: 'prune', trigger: 'schedule', requestedBy: 'schedule' });
  await runner.settled();
  assert.equal(runner.get(again.job.id)!.state, 'succeeded', 'a leader runs it');
  assert.deepEqual(ran, ['cleanup', 'restore', 'prune']);
});

test('every leader-only kind is refused at start on a follower; the error maps to 409 NOT_LEADER', async () => {
  const leadership = fakeLeadership(false);
  leadership.state.other = undefined;
  const { runner, ran } = runnerWith(leadership);
  const ids = [...LEADER_ONLY_KINDS].map((kind) => runner.submit({ kind, trigger: 'api', requestedBy: 'alice' }).job.id);
  await runner.settled();
  assert.deepEqual(ran, []);
  for (const id of ids) assert.equal(runner.get(id)!.error?.code, 'NOT_LEADER');
  const err = new NotLeaderError(undefined, 'x');
  assert.equal(errorResponse(err).status, 409);
});

test('a leader term lasts half the TTL from the last confirming request, measured on the injected clock', () => {
  let now = 1_000;
  const term = new LeaderTerm({ ttlSeconds: 4, clock: () => now });
  assert.equal(term.windowMs, 2_000);
  assert.equal(term.valid(), false, 'nothing confirmed yet');
  term.confirm(1_000);
  now = 2_999;
  assert.equal(term.valid(), true);
  // Polls fail from here on: nothing confirms, so the term ends at 1000 + TTL/2.
  now = 3_000;
  assert.equal(term.valid(), false, 'a failed poll does not keep leadership past TTL/2');
  term.confirm(2_500); // a slow answer to a request sent at 2500 confirms up to 4500
  assert.equal(term.valid(), true);
  term.confirm(1_500); // an older request answered late does not move the term back
  now = 4_499;
  assert.equal(term.valid(), true);
  assert.equal(term.remainingMs(), 1);
  term.end();
  assert.equal(term.valid(), false);
});

test('the fenced store refuses manifest commits and deletes without leadership; archives and the failed backup\'s own clean-up pass', async () => {
  const store = new MemoryStore();
  const leadership = fakeLeadership(true);
  const fenced = new FencedStore(store, () => {
    if (!leadership.isLeader()) throw new NotLeaderError(leadership.leader(), 'not the leader');
  });
  const id = '20261124T033000.123Z-r12345';
  const manifest = manifestKey('prod', id);
  const archive = archiveKey('prod', id, 'zstd');
  await fenced.put(archive, Readable.from([Buffer.from('a')]));
  await fenced.put(manifest, Readable.from([Buffer.from('{}')]));
  assert.ok(store.objects.has(manifest));

  leadership.state.leading = false;
  await assert.rejects(fenced.delete(manifest), NotLeaderError);
  assert.ok(store.objects.has(manifest), 'retention did not delete it');
  const id2 = '20261124T043000.123Z-r12399';
  await fenced.put(archiveKey('prod', id2, 'zstd'), Readable.from([Buffer.from('b')]));
  await assert.rejects(fenced.put(manifestKey('prod', id2), Readable.from([Buffer.from('{}')])), NotLeaderError);
  assert.equal(store.objects.has(manifestKey('prod', id2)), false, 'no commit');
  await fenced.delete(manifestKey('prod', id2)); // the refused manifest's clean-up: nothing was written
  await fenced.delete(archiveKey('prod', id2, 'zstd'));
  assert.equal(store.objects.has(archiveKey('prod', id2, 'zstd')), false);
});

test('the fenced store fences a change segment\'s manifest as it does a backup\'s; its data and signature pass', async () => {
  const store = new MemoryStore();
  const leadership = fakeLeadership(true);
  const fenced = new FencedStore(store, () => {
    if (!leadership.isLeader()) throw new NotLeaderError(leadership.leader(), 'not the leader');
  });
  const id = formatSegmentId('100', '120');
  await fenced.put(segmentManifestKey('prod', id), Readable.from([Buffer.from('{}')]));
  leadership.state.leading = false;
  await assert.rejects(fenced.delete(segmentManifestKey('prod', id)), NotLeaderError);
  assert.ok(store.objects.has(segmentManifestKey('prod', id)), 'retention did not delete it');
  const next = formatSegmentId('121', '130');
  await fenced.put(segmentDataKey('prod', next), Readable.from([Buffer.from('d')]));
  await fenced.put(segmentSignatureKey('prod', next), Readable.from([Buffer.from('s')]));
  await assert.rejects(fenced.put(segmentManifestKey('prod', next), Readable.from([Buffer.from('{}')])), NotLeaderError);
  assert.equal(store.objects.has(segmentManifestKey('prod', next)), false, 'no commit');
  assert.ok(store.objects.has(segmentDataKey('prod', next)));
});
