import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { CancelledError, ConflictError, LifeboatError, publicErrorInfo } from '../errors/errors.ts';
import type { Job, JobKind, JobRequest, JobState, Submitted } from './job.ts';
import type { JobJournal } from './journal.ts';

/** What a running job may tell the runner. */
export interface JobContext {
  readonly job: Readonly<Job>;
  /** Aborted when the daemon shuts down and the grace period is over. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** The job reached a new phase; journaled. */
  phase(name: string): void;
  /** Bytes done so far (and the total when known); kept in memory, not journaled. */
  progress(bytesDone: number, bytesTotal?: number): void;
  /** The backup this job works on or made. */
  setBackupId(id: string): void;
}

export type JobHandler = (ctx: JobContext, params: Record<string, unknown>) => Promise<unknown>;

export interface JobRunnerDeps {
  handlers: Record<JobKind, JobHandler>;
  journal: JobJournal;
  log: Logger;
  now?: () => Date;
  /** Finished jobs remembered (in memory and in the journal). */
  history: number;
  /**
   * Asked as each queued job is about to start; throws (a LifeboatError, e.g. NotLeaderError) to
   * refuse it, and the job then fails with that error without running. Whatever was true when
   * the job was submitted (this instance led) may not be true when its turn comes.
   */
  mayStart?: (job: Readonly<Job>) => void;
}

/**
 * The one owner of all work: scheduled ticks and API calls both submit here, and jobs run one
 * at a time in submission order. Submitting a job equal to one already queued or running
 * (same kind, same params) returns that job instead of a second one, so a backup triggered
 * while a backup runs gets the running backup back.
 */
export class JobRunner {
  readonly #deps: JobRunnerDeps;
  readonly #now: () => Date;
  readonly #jobs = new Map<string, Job>();
  readonly #queue: Job[] = [];
  readonly #idempotency = new Map<string, { jobId: string; kind: JobKind; params: Record<string, unknown> }>();
  /** Journal writes per job, chained so that they land in order. */
  readonly #writes = new Map<string, Promise<void>>();
  #running: { job: Job; abort: AbortController; done: Promise<void> } | undefined;
  #closing = false;

  constructor(deps: JobRunnerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => new Date());
  }

  /**
   * Loads the journal. Jobs a previous process left queued or running are marked failed: their
   * work was interrupted, and the store's cleanup removes anything they left half-written.
   */
  async recover(): Promise<Job[]> {
    const loaded = await this.#deps.journal.load();
    const interrupted: Job[] = [];
    for (const job of loaded) {
      if (job.state === 'queued' || job.state === 'running') {
        const finishedAt = this.#now();
        Object.assign(job, {
          state: 'failed' satisfies JobState,
          phase: 'interrupted',
          finishedAt: finishedAt.toISOString(),
          error: { code: 'CANCELLED', message: `interrupted: the daemon stopped while this job was ${job.state} in phase ${job.phase}`, hint: 'trigger it again if it is still needed' },
        });
        interrupted.push(job);
        this.#persist(job);
      }
      this.#jobs.set(job.id, job);
    }
    for (const job of interrupted) this.#deps.log.warn({ jobId: job.id, kind: job.kind, phase: 'interrupted' }, 'a job was interrupted by the last shutdown or crash; marked failed');
    this.#trimHistory();
    await this.settled();
    return interrupted;
  }

  submit(request: JobRequest): Submitted {
    if (this.#closing) throw new ConflictError('the daemon is shutting down and takes no new jobs');
    const params = request.params ?? {};
    if (request.idempotencyKey !== undefined) {
      const known = this.#idempotency.get(request.idempotencyKey);
      const job = known && this.#jobs.get(known.jobId);
      if (known && job) {
        if (known.kind !== request.kind || !isDeepStrictEqual(known.params, params)) {
          throw new ConflictError(`Idempotency-Key "${request.idempotencyKey}" was used for another request (${known.kind} job ${known.jobId})`, {
            hint: 'use a new key for a new request',
          });
        }
        return { job: snapshot(job), created: false };
      }
    }
    // A scheduled tick, or the change log after a gap, wants work that starts at or after it: the
    // running job's snapshot may predate it, so it joins only a queued job. A request from a
    // person also joins the running one and watches its progress.
    const joinable = request.trigger === 'schedule' || request.trigger === 'change-log' ? this.#queue : [this.#running?.job, ...this.#queue];
    const equal = joinable.find((j) => j !== undefined && j.kind === request.kind && isDeepStrictEqual(j.params, params));
    if (equal) {
      if (request.idempotencyKey !== undefined) this.#idempotency.set(request.idempotencyKey, { jobId: equal.id, kind: request.kind, params });
      return { job: snapshot(equal), created: false };
    }
    const createdAt = this.#now();
    const job: Job = {
      id: `job-${createdAt.toISOString().replaceAll('-', '').replaceAll(':', '')}-${randomBytes(3).toString('hex')}`,
      kind: request.kind,
      state: 'queued',
      phase: 'queued',
      trigger: request.trigger,
      requestedBy: request.requestedBy,
      params,
      progress: { bytesDone: 0 },
      createdAt: createdAt.toISOString(),
    };
    if (request.idempotencyKey !== undefined) this.#idempotency.set(request.idempotencyKey, { jobId: job.id, kind: request.kind, params });
    this.#jobs.set(job.id, job);
    this.#queue.push(job);
    this.#persist(job);
    this.#deps.log.info({ jobId: job.id, kind: job.kind, trigger: job.trigger, requestedBy: job.requestedBy, params, queued: this.#queue.length }, 'job queued');
    this.#kick();
    return { job: snapshot(job), created: true };
  }

  get(id: string): Job | undefined {
    const job = this.#jobs.get(id);
    return job && snapshot(job);
  }

  list(options: { limit: number; kind?: JobKind; state?: JobState }): Job[] {
    return [...this.#jobs.values()]
      .filter((j) => (options.kind === undefined || j.kind === options.kind) && (options.state === undefined || j.state === options.state))
      .sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id < b.id ? 1 : -1))
      .slice(0, options.limit)
      .map(snapshot);
  }

  /** The job running now, if any. */
  running(): Job | undefined {
    return this.#running && snapshot(this.#running.job);
  }

  /** Resolves once nothing is queued or running and every journal write has landed. */
  async settled(): Promise<void> {
    for (;;) {
      if (this.#running) {
        await this.#running.done;
        continue;
      }
      await Promise.all(this.#writes.values());
      if (!this.#running && this.#queue.length === 0 && this.#writes.size === 0) return;
    }
  }

  /**
   * Stops taking jobs; queued ones fail as cancelled. The running job gets `graceMs` to finish,
   * then its signal is aborted and it is awaited (it cleans up after itself). Returns what
   * happened to the running job.
   */
  async drain(graceMs: number): Promise<'idle' | 'finished' | 'aborted'> {
    this.#closing = true;
    for (const job of this.#queue.splice(0)) this.#finish(job, new CancelledError('cancelled: the daemon is shutting down'));
    const current = this.#running;
    if (!current) {
      await this.settled();
      return 'idle';
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      current.done.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), graceMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.#deps.log.warn({ jobId: current.job.id, kind: current.job.kind, graceMs }, 'the grace period is over; aborting the running job');
      current.abort.abort(new CancelledError('aborted: the daemon is shutting down'));
      await current.done;
    }
    await this.settled();
    return timedOut ? 'aborted' : 'finished';
  }

  #kick(): void {
    if (this.#running || this.#queue.length === 0) return;
    const job = this.#queue.shift()!;
    const abort = new AbortController();
    const done = this.#run(job, abort.signal);
    this.#running = { job, abort, done };
    // Registered first, so it runs before anyone else awaiting `done` resumes.
    void done.then(() => {
      this.#running = undefined;
      this.#kick();
    });
  }

  async #run(job: Job, signal: AbortSignal): Promise<void> {
    try {
      this.#deps.mayStart?.(job);
    } catch (err) {
      this.#finish(job, err);
      return;
    }
    const started = this.#now();
    job.state = 'running';
    job.phase = 'started';
    job.startedAt = started.toISOString();
    this.#persist(job);
    const log = this.#deps.log.child({ jobId: job.id, kind: job.kind });
    log.info({ phase: 'started', trigger: job.trigger, requestedBy: job.requestedBy }, 'job started');
    const ctx: JobContext = {
      job,
      signal,
      log,
      phase: (name) => {
        job.phase = name;
        this.#persist(job);
      },
      progress: (bytesDone, bytesTotal) => {
        job.progress = bytesTotal === undefined ? { bytesDone } : { bytesDone, bytesTotal };
      },
      setBackupId: (id) => {
        job.backupId = id;
        this.#persist(job);
      },
    };
    try {
      // A handler is async; awaiting it on the next tick keeps a synchronous throw a rejection.
      const result = await Promise.resolve().then(() => this.#deps.handlers[job.kind](ctx, job.params));
      this.#finish(job, undefined, result);
    } catch (err) {
      this.#finish(job, err);
    }
  }

  #finish(job: Job, err: unknown, result?: unknown): void {
    const finished = this.#now();
    job.state = err === undefined ? 'succeeded' : 'failed';
    job.phase = 'done';
    job.finishedAt = finished.toISOString();
    if (job.startedAt) job.durationSeconds = Math.max(0, (finished.getTime() - Date.parse(job.startedAt)) / 1000);
    if (err !== undefined) {
      // Viewers read job records: an unexpected error's message stays in the log below.
      job.error = publicErrorInfo(err);
    } else if (result !== undefined) {
      job.result = result;
    }
    this.#persist(job);
    const fields = { jobId: job.id, kind: job.kind, phase: 'done', state: job.state, durationSeconds: job.durationSeconds, backupId: job.backupId };
    if (err === undefined) this.#deps.log.info(fields, 'job succeeded');
    else this.#deps.log.error({ ...fields, code: job.error?.code, err: err instanceof Error ? err.message : String(err), ...(err instanceof LifeboatError ? {} : { stack: (err as Error).stack }) }, 'job failed');
    this.#trimHistory();
  }

  #persist(job: Job): void {
    const copy = snapshot(job);
    this.#chain(job.id, () => this.#deps.journal.save(copy));
  }

  /** Runs journal writes of one job in order; a failed write is logged, never thrown. */
  #chain(id: string, write: () => Promise<void>): void {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous
      .then(write)
      .catch((err: unknown) => this.#deps.log.error({ jobId: id, err: (err as Error).message }, 'could not journal a job record'));
    this.#writes.set(id, next);
    void next.then(() => {
      if (this.#writes.get(id) === next) this.#writes.delete(id);
    });
  }

  #trimHistory(): void {
    const finished = [...this.#jobs.values()]
      .filter((j) => j.state === 'succeeded' || j.state === 'failed')
      .sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    for (const job of finished.slice(this.#deps.history)) {
      this.#jobs.delete(job.id);
      this.#chain(job.id, () => this.#deps.journal.remove(job.id));
      for (const [key, entry] of this.#idempotency) if (entry.jobId === job.id) this.#idempotency.delete(key);
    }
  }
}

/** A copy for callers, so nobody outside mutates a live record. */
function snapshot(job: Job): Job {
  return structuredClone(job);
}
