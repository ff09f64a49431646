import { createTask, type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { JobKind, JobRequest, Submitted } from '../jobs/job.ts';
import type { BackupJobParams } from '../jobs/params.ts';

export interface SchedulerDeps {
  schedules: Config['daemon']['schedules'];
  /** How often the store cleanup runs, in seconds. */
  cleanupIntervalSeconds: number;
  /** The job runner's submit: every tick goes through the one owner of all work. */
  submit: (request: JobRequest) => Submitted;
  /** Only the leader runs scheduled work. */
  isLeader: () => boolean;
  log: Logger;
}

/** What each schedule submits. A drill is a deep verification of the newest backup. */
const SCHEDULED: Record<'backup' | 'prune' | 'drill', { kind: JobKind; params: Record<string, unknown> }> = {
  backup: { kind: 'backup', params: {} },
  prune: { kind: 'prune', params: {} },
  drill: { kind: 'drill', params: { backupId: 'latest' } satisfies BackupJobParams },
};

/**
 * Turns the configured cron schedules (in their time zone) and the cleanup interval into job
 * submissions, on the leader only. A tick while the same job still runs gets that job back from
 * the runner rather than a second run.
 */
export class Scheduler {
  readonly #deps: SchedulerDeps;
  readonly #tasks: ScheduledTask[] = [];
  #cleanupTimer: NodeJS.Timeout | undefined;

  constructor(deps: SchedulerDeps) {
    this.#deps = deps;
  }

  start(): void {
    const { schedules } = this.#deps;
    for (const name of ['backup', 'prune', 'drill'] as const) {
      const expression = schedules[name];
      if (expression === 'off') continue;
      const task = createTask(expression, () => this.tick(name), { timezone: schedules.timezone, name: `lifeboat-${name}` });
      void task.start();
      this.#tasks.push(task);
      this.#deps.log.info({ schedule: name, cron: expression, timezone: schedules.timezone, next: task.getNextRun()?.toISOString() }, 'schedule armed');
    }
    this.#cleanupTimer = setInterval(() => this.cleanupTick(), this.#deps.cleanupIntervalSeconds * 1000);
    this.#cleanupTimer.unref();
  }

  /** One tick of a schedule: submits its job if this instance leads. */
  tick(name: keyof typeof SCHEDULED): Submitted | undefined {
    if (!this.#deps.isLeader()) {
      this.#deps.log.debug({ schedule: name }, 'not the leader; skipping the scheduled run');
      return undefined;
    }
    const { kind, params } = SCHEDULED[name];
    return this.#submit({ kind, params, trigger: 'schedule', requestedBy: 'schedule' });
  }

  cleanupTick(): Submitted | undefined {
    if (!this.#deps.isLeader()) return undefined;
    return this.#submit({ kind: 'cleanup', trigger: 'schedule', requestedBy: 'schedule' });
  }

  /**
   * The latest time at or before `now` at which schedule `name` fired or should have fired,
   * looking back at most `lookbackSeconds`; undefined when it is off or did not fire in that
   * window. (node-cron only looks forward, so this walks back over the schedule's resolution:
   * minutes for 5-field expressions, seconds for 6-field ones.)
   */
  previousRun(name: keyof typeof SCHEDULED, now: Date, lookbackSeconds: number): Date | undefined {
    const task = this.#tasks.find((t) => t.name === `lifeboat-${name}`);
    if (!task) return undefined;
    const step = task.getPattern().trim().split(/\s+/).length === 6 ? 1000 : 60_000;
    const oldest = now.getTime() - lookbackSeconds * 1000;
    for (let t = Math.floor(now.getTime() / step) * step; t >= oldest; t -= step) {
      if (task.match(new Date(t))) return new Date(t);
    }
    return undefined;
  }

  /** The next run of each armed schedule, for `lifeboat status`. */
  nextRuns(): Record<string, string | undefined> {
    return Object.fromEntries(this.#tasks.map((t) => [t.name?.replace(/^lifeboat-/, '') ?? t.id, t.getNextRun()?.toISOString()]));
  }

  async stop(): Promise<void> {
    clearInterval(this.#cleanupTimer);
    await Promise.all(this.#tasks.splice(0).map((t) => t.destroy()));
  }

  #submit(request: JobRequest): Submitted | undefined {
    try {
      return this.#deps.submit(request);
    } catch (err) {
      // The runner refuses only while shutting down.
      this.#deps.log.warn({ kind: request.kind, err: (err as Error).message }, 'scheduled job not submitted');
      return undefined;
    }
  }
}
