import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { JobRequest, Submitted } from '../../src/jobs/job.ts';
import { Scheduler } from '../../src/scheduler/scheduler.ts';
import { quietLog } from '../support/lifeboat.ts';

function harness(leader: { now: boolean }, schedules: Partial<{ backup: string; prune: string; drill: string; timezone: string }>) {
  const submitted: JobRequest[] = [];
  const scheduler = new Scheduler({
    schedules: { timezone: 'UTC', backup: 'off', prune: 'off', drill: 'off', ...schedules },
    cleanupIntervalSeconds: 3600,
    submit: (request) => {
      submitted.push(request);
      return { job: {} as Submitted['job'], created: true };
    },
    isLeader: () => leader.now,
    log: quietLog,
  });
  return { scheduler, submitted };
}

test('ticks submit their job on the leader only, through the runner', () => {
  const leader = { now: false };
  const { scheduler, submitted } = harness(leader, {});
  assert.equal(scheduler.tick('backup'), undefined);
  assert.equal(scheduler.cleanupTick(), undefined);
  assert.equal(submitted.length, 0);
  leader.now = true;
  scheduler.tick('backup');
  scheduler.tick('drill');
  scheduler.tick('prune');
  scheduler.cleanupTick();
  assert.deepEqual(submitted.map((r) => [r.kind, r.params ?? {}, r.trigger, r.requestedBy]), [
    ['backup', {}, 'schedule', 'schedule'],
    ['drill', { backupId: 'latest' }, 'schedule', 'schedule'],
    ['prune', {}, 'schedule', 'schedule'],
    ['cleanup', {}, 'schedule', 'schedule'],
  ]);
});

test('armed cron schedules fire in their time zone; "off" arms nothing', async () => {
  const leader = { now: true };
  const { scheduler, submitted } = harness(leader, { backup: '* * * * * *', prune: '0 3 * * *', timezone: 'Asia/Kolkata' });
  scheduler.start();
  try {
    const next = scheduler.nextRuns();
    assert.deepEqual(Object.keys(next).sort(), ['backup', 'prune']);
    // 03:00 in Kolkata is 21:30 UTC.
    assert.match(next.prune ?? '', /T21:30:00/);
    const deadline = Date.now() + 5000;
    while (submitted.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(submitted.length >= 2, `a per-second schedule fired ${submitted.length} times`);
    assert.ok(submitted.every((r) => r.kind === 'backup'));
  } finally {
    await scheduler.stop();
  }
  const after = submitted.length;
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(submitted.length, after, 'nothing fires after stop');
});

test('previousRun finds the latest tick at or before now, in the schedule\'s time zone', async () => {
  const { scheduler } = harness({ now: false }, { backup: '0 3 * * *', drill: '*/10 * * * * *', timezone: 'Asia/Kolkata' });
  scheduler.start();
  try {
    // 03:00 in Kolkata is 21:30 UTC the day before.
    assert.equal(scheduler.previousRun('backup', new Date('2026-11-24T12:00:00Z'), 86400)?.toISOString(), '2026-11-23T21:30:00.000Z');
    assert.equal(scheduler.previousRun('backup', new Date('2026-11-23T21:30:00Z'), 86400)?.toISOString(), '2026-11-23T21:30:00.000Z');
    assert.equal(scheduler.previousRun('backup', new Date('2026-11-24T12:00:00Z'), 3600), undefined, 'not within the window');
    assert.equal(scheduler.previousRun('drill', new Date('2026-11-24T12:00:07.500Z'), 60)?.toISOString(), '2026-11-24T12:00:00.000Z');
    assert.equal(scheduler.previousRun('prune', new Date(), 86400), undefined, 'off');
  } finally {
    await scheduler.stop();
  }
});
