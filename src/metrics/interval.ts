import { createTask, validate } from 'node-cron';
import { ConfigError } from '../errors/errors.ts';

/** Look at least this far ahead, so that a weekly pattern (weekdays only, say) shows its longest gap. */
const HORIZON_SECONDS = 8 * 86400;
/** Runs asked for first; enough for any schedule of an hour or longer to cover the horizon. */
const FIRST_RUNS = 256;
/** The most runs looked at (under a second): a schedule every minute covers 11 days, every second only 4.5 hours. */
const MAX_RUNS = 16_384;

/**
 * The longest gap between consecutive runs of `cron` in `timeZone`, in seconds, over the coming
 * days (at least eight, so weekends count; a monthly schedule looks at months): what the
 * staleness alerts compare the age of the last success against. `off` is no schedule:
 * undefined. A daylight-saving change inside the window shows as a 25-hour day.
 */
export function expectedIntervalSeconds(cron: string, timeZone: string): number | undefined {
  if (cron === 'off') return undefined;
  if (!validate(cron)) throw new ConfigError('/daemon/schedules', `"${cron}" is not a cron expression (e.g. "0 * * * *" for hourly) or "off"`);
  const task = createTask(cron, () => undefined, { timezone: timeZone });
  try {
    let count = FIRST_RUNS;
    for (;;) {
      const runs = task.getNextRuns(count);
      const span = runs.length > 1 ? (runs.at(-1)!.getTime() - runs[0]!.getTime()) / 1000 : 0;
      if (span >= HORIZON_SECONDS || count >= MAX_RUNS) return longestGapSeconds(runs);
      // Ask for about as many runs as the horizon needs at the rate seen so far, plus a margin.
      count = span > 0 ? Math.min(MAX_RUNS, Math.ceil((count * 1.25 * HORIZON_SECONDS) / span)) : MAX_RUNS;
    }
  } finally {
    // createTask registers the task with node-cron; destroying it unregisters it.
    void task.destroy();
  }
}

/** The longest gap between consecutive instants, in whole seconds (0 for fewer than two). */
export function longestGapSeconds(runs: readonly Date[]): number {
  let longest = 0;
  for (let i = 1; i < runs.length; i++) longest = Math.max(longest, runs[i]!.getTime() - runs[i - 1]!.getTime());
  return Math.round(longest / 1000);
}
