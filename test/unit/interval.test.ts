import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getTasks } from 'node-cron';
import { ConfigError } from '../../src/errors/errors.ts';
import { expectedIntervalSeconds, longestGapSeconds } from '../../src/metrics/interval.ts';

const HOUR = 3600;
const DAY = 86400;

test('regular schedules: hourly, every 15 minutes, daily at 03:00', () => {
  assert.equal(expectedIntervalSeconds('0 * * * *', 'UTC'), HOUR);
  assert.equal(expectedIntervalSeconds('*/15 * * * *', 'UTC'), 15 * 60);
  assert.equal(expectedIntervalSeconds('0 3 * * *', 'UTC'), DAY);
  assert.equal(expectedIntervalSeconds('0 3 * * *', 'Asia/Tokyo'), DAY);
  assert.equal(expectedIntervalSeconds('0 */6 * * *', 'Europe/Berlin'), 6 * HOUR);
});

test('irregular schedules: the longest gap wins', () => {
  // Weekdays at 03:00: Friday 03:00 to Monday 03:00.
  assert.equal(expectedIntervalSeconds('0 3 * * 1-5', 'UTC'), 3 * DAY);
  // Hourly on weekdays: Friday 23:00 to Monday 00:00.
  assert.equal(expectedIntervalSeconds('0 * * * 1-5', 'UTC'), 49 * HOUR);
  // Twice a day, unevenly: 20:00 to 02:00 is 6 hours, 02:00 to 20:00 is 18.
  assert.equal(expectedIntervalSeconds('0 2,20 * * *', 'UTC'), 18 * HOUR);
  // Weekly, and monthly (the longest month).
  assert.equal(expectedIntervalSeconds('0 4 * * 0', 'UTC'), 7 * DAY);
  assert.equal(expectedIntervalSeconds('0 4 1 * *', 'UTC'), 31 * DAY);
});

test('a schedule every minute on weekdays still sees its weekend gap', () => {
  // Friday 23:59 to Monday 00:00.
  assert.equal(expectedIntervalSeconds('* * * * 1-5', 'UTC'), 2 * DAY + 60);
});

test('"off" is no schedule, and a bad expression is a config error', () => {
  assert.equal(expectedIntervalSeconds('off', 'UTC'), undefined);
  assert.throws(() => expectedIntervalSeconds('every hour', 'UTC'), (err: unknown) => err instanceof ConfigError && /"every hour" is not a cron expression/.test(err.message));
});

test('no task is left registered with node-cron', () => {
  const before = getTasks().size;
  expectedIntervalSeconds('0 * * * *', 'UTC');
  assert.equal(getTasks().size, before);
});

test('longestGapSeconds', () => {
  assert.equal(longestGapSeconds([]), 0);
  assert.equal(longestGapSeconds([new Date(0)]), 0);
  assert.equal(longestGapSeconds([new Date(0), new Date(10_000), new Date(13_000), new Date(40_000)]), 27);
});

test('a daylight-saving change inside the window shows as a 25-hour day', (t) => {
  // Europe/Berlin leaves summer time on Sunday 2026-10-25: 03:00 local falls 25 hours after the day before.
  t.mock.timers.enable({ apis: ['Date'], now: Date.parse('2026-10-20T12:00:00Z') });
  assert.equal(expectedIntervalSeconds('0 3 * * *', 'Europe/Berlin'), 25 * HOUR);
  assert.equal(expectedIntervalSeconds('0 3 * * *', 'UTC'), DAY);
});
