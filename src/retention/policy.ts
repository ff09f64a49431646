import type { Config } from '../config/schema.ts';
import { ConfigError } from '../errors/errors.ts';

/**
 * Which backups to keep, like restic's `forget`. Pure: no store, no clock.
 *
 * Backups are walked newest first. `keepLast` keeps the newest n. Each bucket rule (hourly,
 * daily, weekly, monthly) with count n keeps a backup when its bucket (its hour, day, ISO week or
 * month, on the wall clock of `timeZone`) differs from the bucket of the last backup that rule
 * kept, until the rule has kept n: so the newest backup of each of the last n hours, days, weeks
 * or months that have a backup. A backup kept by any rule is kept, with every reason that holds.
 * On top of that the newest backup and the newest verified backup are always kept.
 *
 * A future-dated backup (dated further ahead than the clock bound: a clock that ran ahead, or a
 * forgery) is kept, reason `future-dated`, and takes no part in the rest: it is not the newest,
 * and fills no slot of keepLast or of a bucket rule. Deleting it is left to a person.
 *
 * Wall-clock buckets as restic has them: in the hour repeated when daylight saving time ends,
 * both hours fall in one hourly bucket.
 */
export type KeepReason = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'newest' | 'newest-verified' | 'future-dated';

export type RetentionPolicy = Pick<Config['retention'], 'keepLast' | 'hourly' | 'daily' | 'weekly' | 'monthly'>;

export interface RetentionCandidate {
  id: string;
  createdAt: Date;
  /** The deepest check run on this backup passed, and none failed since (isVerified in ../verify/record.ts). */
  verified: boolean;
  /** Dated further in the future than the clock bound (Catalog entries flag it). */
  futureDated?: boolean;
}

export interface RetentionDecision {
  id: string;
  createdAt: Date;
  keep: boolean;
  /** Why it is kept, in the order of KeepReason; empty when it is removed. */
  reasons: KeepReason[];
}

const BUCKET_RULES = ['hourly', 'daily', 'weekly', 'monthly'] as const;
type BucketRule = (typeof BUCKET_RULES)[number];
const REASON_ORDER: readonly KeepReason[] = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'newest', 'newest-verified', 'future-dated'];

/** The decision for every backup, newest first (ties on time: the greater id first). */
export function planRetention(backups: readonly RetentionCandidate[], policy: RetentionPolicy, timeZone: string): RetentionDecision[] {
  const bucketOf = bucketer(timeZone);
  const sorted = [...backups].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const left: Record<BucketRule, number> = { hourly: policy.hourly, daily: policy.daily, weekly: policy.weekly, monthly: policy.monthly };
  const lastBucket: Partial<Record<BucketRule, string>> = {};
  let newestVerifiedSeen = false;
  let index = -1;
  return sorted.map((backup): RetentionDecision => {
    if (backup.futureDated) return { id: backup.id, createdAt: backup.createdAt, keep: true, reasons: ['future-dated'] };
    index += 1;
    const reasons = new Set<KeepReason>();
    if (index === 0) reasons.add('newest');
    if (backup.verified && !newestVerifiedSeen) {
      newestVerifiedSeen = true;
      reasons.add('newest-verified');
    }
    if (index < policy.keepLast) reasons.add('last');
    const buckets = bucketOf(backup.createdAt);
    for (const rule of BUCKET_RULES) {
      if (left[rule] <= 0 || buckets[rule] === lastBucket[rule]) continue;
      lastBucket[rule] = buckets[rule];
      left[rule] -= 1;
      reasons.add(rule);
    }
    const ordered = REASON_ORDER.filter((r) => reasons.has(r));
    return { id: backup.id, createdAt: backup.createdAt, keep: ordered.length > 0, reasons: ordered };
  });
}

/** The hour, day, ISO week and month of an instant on the wall clock of `timeZone`. */
function bucketer(timeZone: string): (at: Date) => Record<BucketRule, string> {
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit' });
  } catch {
    throw new ConfigError('/daemon/schedules/timezone', `"${timeZone}" is not an IANA time zone (e.g. UTC, Europe/Berlin)`);
  }
  return (at) => {
    const parts: Record<string, string> = {};
    for (const p of format.formatToParts(at)) parts[p.type] = p.value;
    const year = Number(parts.year);
    const month = Number(parts.month);
    const day = Number(parts.day);
    const { weekYear, week } = isoWeek(year, month, day);
    const ymd = `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}`;
    return {
      hourly: `${ymd}T${parts.hour}`,
      daily: ymd,
      weekly: `${pad(weekYear, 4)}-W${pad(week, 2)}`,
      monthly: `${pad(year, 4)}-${pad(month, 2)}`,
    };
  };
}

/** The ISO 8601 week-numbering year and week of a calendar date (weeks start on Monday; week 1 holds the year's first Thursday). */
export function isoWeek(year: number, month: number, day: number): { weekYear: number; week: number } {
  const date = new Date(Date.UTC(year, month - 1, day));
  const weekday = date.getUTCDay() || 7; // Monday 1 ... Sunday 7
  date.setUTCDate(date.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const weekYear = date.getUTCFullYear();
  const week = Math.floor((date.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000 / 7) + 1;
  return { weekYear, week };
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}
