import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError } from '../../src/errors/errors.ts';
import { isoWeek, planRetention, type KeepReason, type RetentionCandidate, type RetentionPolicy } from '../../src/retention/policy.ts';

const NONE: RetentionPolicy = { keepLast: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0 };

function backup(iso: string, verified = false): RetentionCandidate {
  return { id: iso, createdAt: new Date(iso), verified };
}

/** The kept ids with their reasons, newest first. */
function kept(backups: RetentionCandidate[], policy: Partial<RetentionPolicy>, timeZone = 'UTC'): Record<string, KeepReason[]> {
  const out: Record<string, KeepReason[]> = {};
  for (const d of planRetention(backups, { ...NONE, ...policy }, timeZone)) if (d.keep) out[d.id] = d.reasons;
  return out;
}

function keptIds(backups: RetentionCandidate[], policy: Partial<RetentionPolicy>, timeZone = 'UTC'): string[] {
  return Object.keys(kept(backups, policy, timeZone));
}

test('no backups: nothing to decide', () => {
  assert.deepEqual(planRetention([], { keepLast: 3, hourly: 24, daily: 7, weekly: 4, monthly: 6 }, 'UTC'), []);
});

test('decisions come newest first whatever the input order, ties on time by id', () => {
  const list = ['2026-01-02T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-03T00:00:00.000Z'].map((iso) => backup(iso));
  const tie = [{ id: 'a', createdAt: new Date('2026-01-01T00:00:00Z'), verified: false }, { id: 'b', createdAt: new Date('2026-01-01T00:00:00Z'), verified: false }];
  assert.deepEqual(planRetention(list, NONE, 'UTC').map((d) => d.id), ['2026-01-03T00:00:00.000Z', '2026-01-02T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
  assert.deepEqual(planRetention(tie, NONE, 'UTC').map((d) => [d.id, d.keep]), [['b', true], ['a', false]]);
});

test('bucket rules in UTC: a table of policies and what they keep', () => {
  // Every 6 hours from 2026-03-01T00:00Z to 2026-03-10T18:00Z (40 backups), oldest first.
  const every6h = Array.from({ length: 40 }, (_, i) => backup(new Date(Date.UTC(2026, 2, 1, i * 6)).toISOString()));
  const at = (d: number, h: number) => new Date(Date.UTC(2026, 2, d, h)).toISOString();
  const cases: { name: string; policy: Partial<RetentionPolicy>; expect: string[] }[] = [
    { name: 'keepLast 3', policy: { keepLast: 3 }, expect: [at(10, 18), at(10, 12), at(10, 6)] },
    { name: 'hourly 5 (one backup per hour)', policy: { hourly: 5 }, expect: [at(10, 18), at(10, 12), at(10, 6), at(10, 0), at(9, 18)] },
    { name: 'daily 3: the newest of each of the last 3 days', policy: { daily: 3 }, expect: [at(10, 18), at(9, 18), at(8, 18)] },
    { name: 'daily 3 and keepLast 2 overlap', policy: { keepLast: 2, daily: 3 }, expect: [at(10, 18), at(10, 12), at(9, 18), at(8, 18)] },
    // 2026-03-01 is a Sunday: ISO weeks W09 (Mar 1), W10 (Mar 2-8), W11 (Mar 9-15).
    { name: 'weekly 2', policy: { weekly: 2 }, expect: [at(10, 18), at(8, 18)] },
    { name: 'weekly 5 stops at the oldest week there is', policy: { weekly: 5 }, expect: [at(10, 18), at(8, 18), at(1, 18)] },
    { name: 'monthly 2 with one month of backups', policy: { monthly: 2 }, expect: [at(10, 18)] },
    { name: 'daily 100 keeps one per day, never two', policy: { daily: 100 }, expect: Array.from({ length: 10 }, (_, i) => at(10 - i, 18)) },
  ];
  for (const c of cases) assert.deepEqual(keptIds(every6h, c.policy), c.expect, c.name);
});

test('a bucket rule counts only periods that have a backup (restic semantics)', () => {
  const list = ['2026-05-01T10:00:00.000Z', '2026-05-05T10:00:00.000Z', '2026-05-09T09:00:00.000Z', '2026-05-09T10:00:00.000Z', '2026-05-10T10:00:00.000Z'].map((iso) => backup(iso));
  assert.deepEqual(kept(list, { daily: 3 }), {
    '2026-05-10T10:00:00.000Z': ['last', 'daily', 'newest'],
    '2026-05-09T10:00:00.000Z': ['daily'],
    '2026-05-05T10:00:00.000Z': ['daily'],
  });
});

test('every reason that holds is given, and the newest backup is kept even with every count at its minimum', () => {
  const list = [backup('2026-06-01T00:00:00.000Z'), backup('2026-06-02T00:00:00.000Z', true)];
  assert.deepEqual(kept(list, { keepLast: 1, hourly: 1, daily: 1, weekly: 1, monthly: 1 }), {
    '2026-06-02T00:00:00.000Z': ['last', 'hourly', 'daily', 'weekly', 'monthly', 'newest', 'newest-verified'],
  });
});

test('the newest verified backup is kept whatever the policy; a failed or unchecked one is not protected', () => {
  const list = [
    backup('2026-01-01T00:00:00.000Z', true),
    backup('2026-01-02T00:00:00.000Z', true), // the newest verified
    backup('2026-01-03T00:00:00.000Z', false), // last check failed or never checked
    backup('2026-01-04T00:00:00.000Z', false),
    backup('2026-01-05T00:00:00.000Z', false),
  ];
  assert.deepEqual(kept(list, { keepLast: 2 }), {
    '2026-01-05T00:00:00.000Z': ['last', 'newest'],
    '2026-01-04T00:00:00.000Z': ['last'],
    '2026-01-02T00:00:00.000Z': ['newest-verified'],
  });
  const newestVerified = list.map((b) => ({ ...b, verified: b.id === '2026-01-05T00:00:00.000Z' }));
  assert.deepEqual(kept(newestVerified, {}), { '2026-01-05T00:00:00.000Z': ['last', 'newest', 'newest-verified'] });
});

test('days are the days of the configured time zone', () => {
  // 22:30Z and 23:30Z on March 10: one UTC day; in Berlin (UTC+1) 23:30 on the 10th and 00:30 on
  // the 11th; in New York (UTC-4 after March 8) 18:30 and 19:30 on the 10th.
  const list = [backup('2026-03-10T22:30:00.000Z'), backup('2026-03-10T23:30:00.000Z'), backup('2026-03-09T12:00:00.000Z')];
  assert.deepEqual(keptIds(list, { daily: 3 }, 'UTC'), ['2026-03-10T23:30:00.000Z', '2026-03-09T12:00:00.000Z']);
  assert.deepEqual(keptIds(list, { daily: 3 }, 'Europe/Berlin'), ['2026-03-10T23:30:00.000Z', '2026-03-10T22:30:00.000Z', '2026-03-09T12:00:00.000Z']);
  assert.deepEqual(keptIds(list, { daily: 3 }, 'America/New_York'), ['2026-03-10T23:30:00.000Z', '2026-03-09T12:00:00.000Z']);
  // 03:30Z on the 11th is 23:30 on the 10th in New York (with 22:00Z, 18:00 there: one day), but
  // 04:30 on the 11th in Berlin (22:00Z is 23:00 on the 10th there: two days).
  const late = [backup('2026-03-11T03:30:00.000Z'), backup('2026-03-10T22:00:00.000Z')];
  assert.deepEqual(keptIds(late, { daily: 2 }, 'America/New_York'), ['2026-03-11T03:30:00.000Z']);
  assert.deepEqual(keptIds(late, { daily: 2 }, 'Europe/Berlin'), ['2026-03-11T03:30:00.000Z', '2026-03-10T22:00:00.000Z']);
  // Half-hour zones: Asia/Kolkata is UTC+5:30, so 18:29Z is 23:59 and 18:31Z is 00:01 the next day.
  const india = [backup('2026-07-01T18:31:00.000Z'), backup('2026-07-01T18:29:00.000Z')];
  assert.deepEqual(keptIds(india, { daily: 2 }, 'Asia/Kolkata'), ['2026-07-01T18:31:00.000Z', '2026-07-01T18:29:00.000Z']);
  assert.deepEqual(keptIds(india, { daily: 2 }, 'UTC'), ['2026-07-01T18:31:00.000Z']);
});

test('months and hours follow the time zone too, and the repeated hour at the end of DST is one hour', () => {
  // 2026-01-31T23:30Z is February 1 in Tokyo (UTC+9).
  const months = [backup('2026-01-31T23:30:00.000Z'), backup('2026-01-31T10:00:00.000Z')];
  assert.deepEqual(keptIds(months, { monthly: 2 }, 'UTC'), ['2026-01-31T23:30:00.000Z']);
  assert.deepEqual(keptIds(months, { monthly: 2 }, 'Asia/Tokyo'), ['2026-01-31T23:30:00.000Z', '2026-01-31T10:00:00.000Z']);
  // Berlin leaves DST on 2026-10-25: 00:30Z is 02:30 CEST and 01:30Z is 02:30 CET.
  const fallBack = [backup('2026-10-25T01:30:00.000Z'), backup('2026-10-25T00:30:00.000Z'), backup('2026-10-24T23:30:00.000Z')];
  assert.deepEqual(keptIds(fallBack, { hourly: 3 }, 'Europe/Berlin'), ['2026-10-25T01:30:00.000Z', '2026-10-24T23:30:00.000Z']);
  assert.deepEqual(keptIds(fallBack, { hourly: 3 }, 'UTC'), ['2026-10-25T01:30:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-24T23:30:00.000Z']);
});

test('ISO weeks: week-year edges', () => {
  const cases: [string, number, number][] = [
    ['2026-12-31', 2026, 53], // Thursday: 2026 has 53 weeks
    ['2027-01-01', 2026, 53], // Friday, still the last week of 2026
    ['2027-01-03', 2026, 53], // Sunday ends it
    ['2027-01-04', 2027, 1], // Monday
    ['2024-12-29', 2024, 52], // Sunday
    ['2024-12-30', 2025, 1], // Monday: week 1 of 2025 (it holds Thursday, January 2)
    ['2021-01-03', 2020, 53],
    ['2021-01-04', 2021, 1],
    ['2019-12-30', 2020, 1],
    ['2026-03-01', 2026, 9],
    ['2026-03-02', 2026, 10],
    ['2028-02-29', 2028, 9],
  ];
  for (const [date, weekYear, week] of cases) {
    const [y, m, d] = date.split('-').map(Number) as [number, number, number];
    assert.deepEqual(isoWeek(y, m, d), { weekYear, week }, date);
  }
});

test('weekly buckets are ISO weeks across the turn of the year, in the time zone', () => {
  // Dec 31 2026 and Jan 1 2027 are one ISO week (2026-W53); Jan 4 2027 starts 2027-W01.
  const list = ['2027-01-04T12:00:00.000Z', '2027-01-01T12:00:00.000Z', '2026-12-31T12:00:00.000Z', '2026-12-27T12:00:00.000Z'].map((iso) => backup(iso));
  assert.deepEqual(keptIds(list, { weekly: 3 }), ['2027-01-04T12:00:00.000Z', '2027-01-01T12:00:00.000Z', '2026-12-27T12:00:00.000Z']);
  // Monday Dec 30 2024 is 2025-W01 and Sunday Dec 29 is 2024-W52, though both are in December.
  const dec = ['2024-12-30T12:00:00.000Z', '2024-12-29T12:00:00.000Z'].map((iso) => backup(iso));
  assert.deepEqual(keptIds(dec, { weekly: 2 }), ['2024-12-30T12:00:00.000Z', '2024-12-29T12:00:00.000Z']);
  assert.deepEqual(keptIds(dec, { monthly: 2 }), ['2024-12-30T12:00:00.000Z']);
  // Sunday 23:30Z is Monday 08:30 in Tokyo: a new week there, the same week in UTC.
  const sunday = ['2027-01-10T23:30:00.000Z', '2027-01-10T10:00:00.000Z'].map((iso) => backup(iso));
  assert.deepEqual(keptIds(sunday, { weekly: 2 }, 'UTC'), ['2027-01-10T23:30:00.000Z']);
  assert.deepEqual(keptIds(sunday, { weekly: 2 }, 'Asia/Tokyo'), ['2027-01-10T23:30:00.000Z', '2027-01-10T10:00:00.000Z']);
});

test('an unknown time zone is a config error naming the field', () => {
  assert.throws(() => planRetention([backup('2026-01-01T00:00:00.000Z')], NONE, 'Mars/Olympus'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.field, '/daemon/schedules/timezone');
    return true;
  });
});

test('properties: newest and newest verified always kept; each rule keeps at most its count, in distinct periods; more is never less', () => {
  const candidate = fc.record({
    t: fc.integer({ min: Date.UTC(2024, 0, 1), max: Date.UTC(2027, 0, 1) }),
    verified: fc.boolean(),
  });
  const policy = fc.record({
    keepLast: fc.integer({ min: 1, max: 5 }),
    hourly: fc.integer({ min: 0, max: 5 }),
    daily: fc.integer({ min: 0, max: 5 }),
    weekly: fc.integer({ min: 0, max: 5 }),
    monthly: fc.integer({ min: 0, max: 5 }),
  });
  const zones = fc.constantFrom('UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Pacific/Auckland');
  fc.assert(
    fc.property(fc.uniqueArray(candidate, { minLength: 1, maxLength: 60, selector: (c) => c.t }), policy, zones, fc.constantFrom('hourly', 'daily', 'weekly', 'monthly', 'keepLast'), (raw, p, zone, grow) => {
      const list = raw.map((c, i) => ({ id: `b${i}`, createdAt: new Date(c.t), verified: c.verified }));
      const plan = planRetention(list, p, zone);
      assert.equal(plan.length, list.length);
      const newest = [...list].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0]!;
      assert.ok(plan.find((d) => d.id === newest.id)!.keep);
      const verified = list.filter((b) => b.verified).sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
      if (verified) assert.ok(plan.find((d) => d.id === verified.id)!.reasons.includes('newest-verified'));
      for (const rule of ['hourly', 'daily', 'weekly', 'monthly'] as const) {
        assert.ok(plan.filter((d) => d.reasons.includes(rule)).length <= p[rule], rule);
      }
      assert.equal(plan.filter((d) => d.reasons.includes('last')).length, Math.min(p.keepLast, list.length));
      // daily keeps at most one backup per calendar day of the zone
      const day = new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' });
      const days = plan.filter((d) => d.reasons.includes('daily')).map((d) => day.format(d.createdAt));
      assert.equal(new Set(days).size, days.length);
      // Raising a count keeps everything that was kept before.
      const more = planRetention(list, { ...p, [grow]: p[grow] + 1 }, zone);
      for (const d of plan) if (d.keep) assert.ok(more.find((m) => m.id === d.id)!.keep, `${grow}+1 dropped ${d.id}`);
    }),
    { numRuns: 300 },
  );
});
