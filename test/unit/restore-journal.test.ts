import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, ConflictError, NotFoundError } from '../../src/errors/errors.ts';
import { writeFileAtomic } from '../../src/store/durable-file.ts';
import { identity, moveOut, processesMentioning, swapIn } from '../../src/restore/durable.ts';
import { freshJournal, pendingSteps, RestoreRecords, restoreState } from '../../src/restore/journal.ts';
import { dataDirLayout, IN_PLACE_STEPS } from '../../src/restore/plan.ts';
import { samplePlan } from '../support/plans.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-restore-journal-'));
test.after(() => rm(work, { recursive: true, force: true }));
let n = 0;
const dir = async () => {
  const d = path.join(work, `case-${n++}`);
  await mkdir(d, { recursive: true });
  return d;
};

const plan = () => samplePlan();

test('pendingSteps: done steps are skipped, failed and running ones run again, up to `through`', () => {
  const p = plan();
  const j = freshJournal(p);
  assert.deepEqual(pendingSteps(IN_PLACE_STEPS, j, 'stop-etcd'), ['fetch', 'stop-apiserver', 'stop-etcd']);
  j.steps.fetch!.state = 'done';
  j.steps['stop-apiserver']!.state = 'done';
  j.steps['stop-etcd']!.state = 'running';
  assert.deepEqual(pendingSteps(IN_PLACE_STEPS, j, 'restore-snapshot'), ['stop-etcd', 'restore-snapshot']);
  j.steps['stop-etcd']!.state = 'failed';
  assert.deepEqual(pendingSteps(IN_PLACE_STEPS, j, 'stop-etcd'), ['stop-etcd']);
  assert.deepEqual(pendingSteps(IN_PLACE_STEPS, j, 'fetch'), []);
  assert.equal(pendingSteps(IN_PLACE_STEPS, j).length, IN_PLACE_STEPS.length - 2);
});

test('restoreState summarises the journal', () => {
  const p = plan();
  const j = freshJournal(p);
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'planned');
  j.steps.fetch!.state = 'done';
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'partly-applied');
  j.steps['stop-apiserver']!.state = 'running';
  assert.equal(restoreState(IN_PLACE_STEPS, j, true), 'applying');
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'interrupted');
  j.steps['stop-apiserver']!.state = 'failed';
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'failed');
  for (const s of IN_PLACE_STEPS) j.steps[s]!.state = 'done';
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'done');
  j.rollback = { state: 'done', startedAt: 'x', actions: [] };
  assert.equal(restoreState(IN_PLACE_STEPS, j, false), 'rolled-back');
});

test('records: plan and journal round trip, 0700 dir and 0600 files, no temp file left', async () => {
  const records = new RestoreRecords(await dir());
  const p = plan();
  const j = await records.create(p);
  assert.deepEqual(await records.plan(p.id), p);
  j.steps.fetch = { state: 'done', attempts: 1, note: 'ok' };
  j.facts.restored = '1:2';
  await records.save(j);
  const back = await records.journal(p.id);
  assert.equal(back.steps.fetch?.note, 'ok');
  assert.equal(back.facts.restored, '1:2');
  assert.equal((await stat(records.dir(p.id))).mode & 0o777, 0o700);
  assert.equal((await stat(path.join(records.dir(p.id), 'journal.json'))).mode & 0o777, 0o600);
  assert.deepEqual((await readdir(records.dir(p.id))).sort(), ['journal.json', 'plan.json']);
  assert.deepEqual(await records.ids(), [p.id]);
  await assert.rejects(records.plan('restore-20261124T040000.000Z-000000'), NotFoundError);
  await assert.rejects(records.plan('../../etc'), NotFoundError);
});

test('a journal whose facts or results have the wrong shape is refused on read, naming the field', async () => {
  const records = new RestoreRecords(await dir());
  const p = plan();
  const j = await records.create(p);
  j.facts.throwawayPid = 4242;
  j.facts.placedFiles = ['/etc/kubernetes/pki/ca.crt'];
  j.result.quorum = { leader: 'cp-1', revision: '100', members: [{ name: 'cp-1', clientURL: 'https://10.0.0.1:2379', revision: '100' }] };
  await records.save(j);
  const back = await records.journal(p.id);
  assert.equal(back.facts.throwawayPid, 4242);
  assert.deepEqual(back.result.quorum?.members.map((m) => m.name), ['cp-1']);
  const file = path.join(records.dir(p.id), 'journal.json');
  const doc = JSON.parse(await readFile(file, 'utf8')) as { facts: Record<string, unknown> };
  doc.facts.throwawayPid = 'not a pid';
  await writeFile(file, JSON.stringify(doc));
  await assert.rejects(records.journal(p.id), (err: unknown) => err instanceof ConfigError && /invalid at \/facts\/throwawayPid/.test(err.message));
});

test('lock: one holder at a time; a dead holder\'s lock is taken over', async () => {
  const records = new RestoreRecords(await dir());
  const release = await records.lock('restore-a');
  await assert.rejects(records.lock('restore-b'), (e: unknown) => e instanceof ConflictError && /restore-a/.test(e.message));
  assert.equal((await records.holder())?.restoreId, 'restore-a');
  await release();
  assert.equal(await records.holder(), undefined);

  // A process that held the lock and died (a daemon killed mid-apply).
  const child = spawn(process.execPath, ['-e', '']);
  const pid = child.pid!;
  await new Promise((r) => child.once('exit', r));
  await writeFile(path.join(records.root, 'apply.lock'), JSON.stringify({ pid, instance: 'gone', restoreId: 'restore-old', since: 'then' }));
  assert.equal(await records.holder(), undefined);
  const again = await records.lock('restore-c');
  assert.equal((await records.holder())?.restoreId, 'restore-c');
  await again();
  // The same PID as ours but another instance: a restarted container's PID 1.
  await writeFile(path.join(records.root, 'apply.lock'), JSON.stringify({ pid: process.pid, instance: 'earlier', restoreId: 'restore-old', since: 'then' }));
  await (await records.lock('restore-d'))();
});

test('writeFileAtomic sets the exact mode whatever the umask, and leaves no temp file', async () => {
  const d = await dir();
  const old = process.umask(0o077);
  try {
    await writeFileAtomic(path.join(d, 'ca.crt'), 'pem', 0o644);
  } finally {
    process.umask(old);
  }
  assert.equal((await stat(path.join(d, 'ca.crt'))).mode & 0o7777, 0o644);
  await writeFileAtomic(path.join(d, 'ca.crt'), 'pem2', 0o600);
  assert.equal(await readFile(path.join(d, 'ca.crt'), 'utf8'), 'pem2');
  assert.equal((await stat(path.join(d, 'ca.crt'))).mode & 0o7777, 0o600);
  assert.deepEqual(await readdir(d), ['ca.crt']);
});

test('moveOut resumes from every crash point', async () => {
  const d = await dir();
  const src = path.join(d, 'etcd.yaml');
  const dest = path.join(d, 'aside.yaml');
  await writeFile(src, 'manifest', { mode: 0o600 });
  assert.equal(await moveOut(src, dest), 'moved');
  assert.equal(await readFile(dest, 'utf8'), 'manifest');
  assert.equal((await stat(dest)).mode & 0o777, 0o600);
  assert.equal(await moveOut(src, dest), 'already');
  // A crash after the copy, before the unlink: both exist with the same bytes.
  await writeFile(src, 'manifest');
  assert.equal(await moveOut(src, dest), 'moved');
  await assert.rejects(stat(src), { code: 'ENOENT' });
  // Something put another manifest there meanwhile: refuse.
  await writeFile(src, 'changed');
  await assert.rejects(moveOut(src, dest), ConflictError);
  await rm(src);
  await rm(dest);
  await assert.rejects(moveOut(src, dest), ConflictError);
});

async function tree(paths: Record<string, string>): Promise<void> {
  for (const [p, content] of Object.entries(paths)) {
    await mkdir(path.dirname(p), { recursive: true });
    await writeFile(p, content);
  }
}

for (const swap of ['dir', 'member'] as const) {
  test(`swapIn (${swap}) resumes from every crash point and never deletes`, async () => {
    const d = await dir();
    const layout = dataDirLayout(path.join(d, 'etcd'), 'r1', swap);
    const p = { live: layout.live, incoming: layout.incoming, aside: layout.aside };
    await tree({ [path.join(p.live, 'wal')]: 'old', [path.join(p.incoming, 'wal')]: 'new' });
    const restored = await identity(p.incoming);
    // Not started.
    assert.equal(await swapIn(p, restored), 'swapped');
    assert.equal(await readFile(path.join(p.live, 'wal'), 'utf8'), 'new');
    assert.equal(await readFile(path.join(p.aside, 'wal'), 'utf8'), 'old');
    assert.equal(await identity(p.live), restored);
    // Done already.
    assert.equal(await swapIn(p, restored), 'already');
    // Crashed between the two renames: live is aside, incoming not yet in place.
    await rm(path.join(d, 'etcd'), { recursive: true });
    await tree({ [path.join(p.aside, 'wal')]: 'old', [path.join(p.incoming, 'wal')]: 'new' });
    assert.equal(await swapIn(p, await identity(p.incoming)), 'swapped');
    assert.equal(await readFile(path.join(p.live, 'wal'), 'utf8'), 'new');
    // No old data at all (a fresh host).
    await rm(path.join(d, 'etcd'), { recursive: true });
    await tree({ [path.join(p.incoming, 'wal')]: 'new' });
    assert.equal(await swapIn(p, await identity(p.incoming)), 'swapped');
    // Live is not the restored data and nothing is incoming: refuse.
    await assert.rejects(swapIn(p, 'some:other'), ConflictError);
    // All three exist: refuse to guess.
    await tree({ [path.join(p.aside, 'wal')]: 'old', [path.join(p.incoming, 'wal')]: 'new' });
    await assert.rejects(swapIn(p, undefined), ConflictError);
  });
}

test('processesMentioning finds a process by a path in its arguments', async () => {
  const d = await dir();
  const target = path.join(d, 'etcd.lifeboat-restore-x');
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', target]);
  try {
    await new Promise((r) => child.once('spawn', r));
    assert.deepEqual(await processesMentioning(target), [child.pid]);
    assert.deepEqual(await processesMentioning(`${target}-other`), []);
  } finally {
    child.kill('SIGKILL');
  }
});
