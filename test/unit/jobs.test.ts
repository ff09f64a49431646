import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CancelledError, ConflictError, StoreError } from '../../src/errors/errors.ts';
import type { JobKind } from '../../src/jobs/job.ts';
import { DirectoryJobJournal } from '../../src/jobs/journal.ts';
import { JobRunner, type JobHandler } from '../../src/jobs/runner.ts';
import { errorResponse } from '../../src/api/errors.ts';
import { captureLog } from '../support/api-fakes.ts';
import { quietLog } from '../support/lifeboat.ts';
import { until } from '../support/daemon.ts';

const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-jobs-'));
test.after(() => rm(dir, { recursive: true, force: true }));
let n = 0;

/** A handler that waits until released, recording what ran and in which order. */
function gate() {
  const started: string[] = [];
  const waiting: (() => void)[] = [];
  const handler: JobHandler = async (ctx, params) => {
    started.push(`${ctx.job.kind}:${JSON.stringify(params)}`);
    ctx.phase('working');
    ctx.progress(10, 100);
    await new Promise<void>((resolve, reject) => {
      waiting.push(resolve);
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true });
    });
    return { ok: true };
  };
  const releaseNext = async () => {
    while (waiting.length === 0) await new Promise((r) => setTimeout(r, 1));
    waiting.shift()!();
  };
  return { started, handler, releaseNext };
}

function runner(handlers: Partial<Record<JobKind, JobHandler>>, options: { stateDir?: string; history?: number } = {}) {
  const stateDir = options.stateDir ?? path.join(dir, `state-${n++}`);
  const fail: JobHandler = async () => {
    throw new Error('no handler in this test');
  };
  const all = { backup: fail, verify: fail, drill: fail, prune: fail, cleanup: fail, replicate: fail, restore: fail, ...handlers };
  return { stateDir, runner: new JobRunner({ handlers: all, journal: new DirectoryJobJournal(stateDir, quietLog), log: quietLog, history: options.history ?? 50 }) };
}

const api = { trigger: 'api' as const, requestedBy: 'alice' };

test('jobs run one at a time in submission order; an equal request gets the queued or running job back', async () => {
  const g = gate();
  const { runner: r } = runner({ backup: g.handler, verify: g.handler });
  const first = r.submit({ kind: 'backup', ...api });
  assert.equal(first.created, true);
  const verify = r.submit({ kind: 'verify', params: { backupId: 'x', deep: true }, ...api });
  const again = r.submit({ kind: 'backup', trigger: 'api', requestedBy: 'bob' });
  assert.equal(again.created, false);
  assert.equal(again.job.id, first.job.id);
  const otherVerify = r.submit({ kind: 'verify', params: { backupId: 'x', deep: false }, ...api });
  assert.equal(otherVerify.created, true, 'different params are a different job');

  await g.releaseNext();
  await g.releaseNext();
  await g.releaseNext();
  await r.settled();
  assert.deepEqual(g.started, ['backup:{}', 'verify:{"backupId":"x","deep":true}', 'verify:{"backupId":"x","deep":false}']);
  const done = r.get(first.job.id)!;
  assert.equal(done.state, 'succeeded');
  assert.equal(done.phase, 'done');
  assert.deepEqual(done.result, { ok: true });
  assert.deepEqual(done.progress, { bytesDone: 10, bytesTotal: 100 });
  assert.ok(done.durationSeconds !== undefined && done.durationSeconds >= 0);
  assert.deepEqual(r.list({ limit: 10 }).map((j) => j.id), [otherVerify.job.id, verify.job.id, first.job.id].sort().reverse());
  assert.equal(r.list({ limit: 10, kind: 'verify' }).length, 2);
  const next = r.submit({ kind: 'backup', ...api });
  assert.equal(next.created, true, 'once finished, a new request makes a new job');
  await g.releaseNext();
  await r.settled();
});

test('a schedule tick never joins a running job, whose snapshot may predate the tick; it joins a queued one', async () => {
  const g = gate();
  const { runner: r } = runner({ backup: g.handler });
  const tick = { kind: 'backup' as const, trigger: 'schedule' as const, requestedBy: 'schedule' };
  const catchUp = r.submit({ kind: 'backup', trigger: 'startup', requestedBy: 'startup' });
  while (r.get(catchUp.job.id)!.state !== 'running') await new Promise((res) => setTimeout(res, 1));
  const first = r.submit(tick);
  assert.equal(first.created, true, 'the tick queues its own backup behind the running one');
  const second = r.submit(tick);
  assert.equal(second.created, false, 'a second tick joins the queued backup');
  assert.equal(second.job.id, first.job.id);
  assert.equal(r.submit({ kind: 'backup', ...api }).job.id, catchUp.job.id, 'a person joins the running one');
  await g.releaseNext();
  await g.releaseNext();
  await r.settled();
  assert.deepEqual(g.started, ['backup:{}', 'backup:{}']);
  assert.equal(r.get(first.job.id)!.state, 'succeeded');
});

test('a backup the change log asks for after a gap never joins a running backup, only a queued one', async () => {
  const g = gate();
  const { runner: r } = runner({ backup: g.handler });
  const running = r.submit({ kind: 'backup', ...api });
  while (r.get(running.job.id)!.state !== 'running') await new Promise((res) => setTimeout(res, 1));
  const gap = { kind: 'backup' as const, trigger: 'change-log' as const, requestedBy: 'change-log' };
  const first = r.submit(gap);
  assert.equal(first.created, true, 'its snapshot may predate the compaction: a backup of its own');
  assert.equal(r.submit(gap).job.id, first.job.id, 'a second gap joins the queued one');
  await g.releaseNext();
  await g.releaseNext();
  await r.settled();
  assert.equal(r.get(first.job.id)!.trigger, 'change-log');
  assert.equal(r.get(first.job.id)!.state, 'succeeded');
});

test('an Idempotency-Key returns the job it made; reused for another request it is a conflict', async () => {
  const g = gate();
  const { runner: r } = runner({ backup: g.handler, verify: g.handler });
  const a = r.submit({ kind: 'backup', idempotencyKey: 'k1', ...api });
  await g.releaseNext();
  await r.settled();
  const b = r.submit({ kind: 'backup', idempotencyKey: 'k1', ...api });
  assert.equal(b.created, false);
  assert.equal(b.job.id, a.job.id);
  assert.equal(b.job.state, 'succeeded');
  assert.throws(() => r.submit({ kind: 'verify', params: { backupId: 'y' }, idempotencyKey: 'k1', ...api }), ConflictError);
});

test('a failing job records its code, message and hint; an unexpected error is INTERNAL, its message only in the log', async () => {
  const capture = captureLog();
  const stateDir = path.join(dir, `state-${n++}`);
  const fail: JobHandler = async () => {
    throw new Error('no handler in this test');
  };
  const r = new JobRunner({
    handlers: {
      backup: async () => {
        throw new StoreError('the bucket is gone', { hint: 'create it' });
      },
      prune: async () => {
        throw new TypeError('cannot read /etc/lifeboat/s3/secret-access-key=hunter2');
      },
      verify: fail, drill: fail, cleanup: fail, replicate: fail, restore: fail,
    },
    journal: new DirectoryJobJournal(stateDir, quietLog),
    log: capture.log,
    history: 50,
  });
  const a = r.submit({ kind: 'backup', ...api });
  const b = r.submit({ kind: 'prune', ...api });
  await r.settled();
  assert.deepEqual(r.get(a.job.id)!.error, { code: 'STORE_FAILED', message: 'the bucket is gone', hint: 'create it' });
  assert.equal(r.get(a.job.id)!.state, 'failed');
  // Redacted as the API redacts an unexpected error in a response.
  const redacted = errorResponse(new TypeError('x')).body;
  assert.deepEqual(r.get(b.job.id)!.error, { code: redacted.code, message: redacted.detail });
  assert.deepEqual(r.get(b.job.id)!.error, { code: 'INTERNAL', message: 'internal error; see the daemon log' });
  await r.drain(1000);
  const journaled = await Promise.all((await readdir(path.join(stateDir, 'jobs'))).map((f) => readFile(path.join(stateDir, 'jobs', f), 'utf8')));
  assert.ok(journaled.length > 0 && journaled.every((text) => !text.includes('hunter2')), 'the job journal holds no raw message either');
  const logged = capture.lines.find((l) => l.jobId === b.job.id && l.msg === 'job failed');
  assert.match(String(logged?.err), /hunter2/, 'the daemon log has the real message');
  assert.match(String(logged?.stack), /TypeError/);
});

test('after a crash, jobs left queued or running are marked failed, and finished ones are kept', async () => {
  const g = gate();
  const { runner: before, stateDir } = runner({ backup: g.handler, verify: g.handler, prune: async () => 'pruned' });
  const pruned = before.submit({ kind: 'prune', ...api });
  const running = before.submit({ kind: 'backup', ...api });
  const queued = before.submit({ kind: 'verify', params: { backupId: 'z' }, ...api });
  // The process "dies" once the journal on disk holds all three as they are now.
  const onDisk = async (id: string) => {
    try {
      return JSON.parse(await readFile(path.join(stateDir, 'jobs', `${id}.json`), 'utf8')) as { state: string; phase?: string };
    } catch {
      return undefined;
    }
  };
  await until('the journal holds the finished, the running and the queued job', async () => {
    const [p, r, q] = await Promise.all([onDisk(pruned.job.id), onDisk(running.job.id), onDisk(queued.job.id)]);
    return p?.state === 'succeeded' && r?.state === 'running' && r.phase === 'working' && q?.state === 'queued';
  }, 5000);
  await writeFile(path.join(stateDir, 'jobs', 'job-garbage.json'), '{not json');

  const { runner: after } = runner({}, { stateDir });
  const interrupted = await after.recover();
  assert.deepEqual(interrupted.map((j) => j.id).sort(), [running.job.id, queued.job.id].sort());
  const r1 = after.get(running.job.id)!;
  assert.equal(r1.state, 'failed');
  assert.equal(r1.error?.code, 'CANCELLED');
  assert.match(r1.error?.message ?? '', /interrupted.*running in phase working/);
  assert.equal(after.get(queued.job.id)!.state, 'failed');
  assert.equal(after.get(pruned.job.id)!.state, 'succeeded');
  assert.equal(after.get(pruned.job.id)!.result, 'pruned');
  // And it stays so on the next start.
  const { runner: third } = runner({}, { stateDir });
  assert.deepEqual(await third.recover(), []);
  assert.equal(third.get(running.job.id)!.state, 'failed');
});

test('drain lets the running job finish within the grace period, and cancels the queue', async () => {
  const g = gate();
  const { runner: r } = runner({ backup: g.handler, verify: g.handler });
  const running = r.submit({ kind: 'backup', ...api });
  const queued = r.submit({ kind: 'verify', params: { backupId: 'q' }, ...api });
  while (r.get(running.job.id)!.state !== 'running') await new Promise((res) => setTimeout(res, 1));
  const drained = r.drain(5000);
  assert.throws(() => r.submit({ kind: 'prune', ...api }), ConflictError);
  await g.releaseNext();
  assert.equal(await drained, 'finished');
  assert.equal(r.get(running.job.id)!.state, 'succeeded');
  assert.equal(r.get(queued.job.id)!.error?.code, 'CANCELLED');
});

test('drain aborts the running job once the grace period is over, and waits for it', async () => {
  const { runner: r } = runner({
    backup: async (ctx) => {
      await new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }));
    },
  });
  r.submit({ kind: 'backup', ...api });
  await new Promise((res) => setTimeout(res, 10));
  const job = r.list({ limit: 1 })[0]!;
  assert.equal(await r.drain(30), 'aborted');
  assert.equal(r.get(job.id)!.state, 'failed');
  assert.equal(r.get(job.id)!.error?.code, new CancelledError('').code);
});

test('only the newest finished jobs are remembered, in memory and in the journal', async () => {
  const { runner: r, stateDir } = runner({ prune: async () => undefined }, { history: 3 });
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    ids.push(r.submit({ kind: 'prune', ...api }).job.id);
    await r.settled();
  }
  assert.deepEqual(r.list({ limit: 100 }).map((j) => j.id), ids.slice(3).reverse());
  assert.deepEqual((await readdir(path.join(stateDir, 'jobs'))).sort(), ids.slice(3).map((id) => `${id}.json`).sort());
});
