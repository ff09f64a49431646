import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import type { Logger } from 'pino';
import { StoreError } from '../errors/errors.ts';
import { isAtomicTemp, writeFileAtomic } from '../store/durable-file.ts';
import { JobSchema, type Job } from './job.ts';

/** Where job records persist across restarts. The directory implementation is beside it. */
export interface JobJournal {
  /** Every record found, in no particular order; unreadable ones are skipped and logged. */
  load(): Promise<Job[]>;
  save(job: Job): Promise<void>;
  remove(id: string): Promise<void>;
}

const ID_RE = /^job-[0-9A-Za-z.-]{1,80}$/;

/**
 * One JSON file per job in `<stateDir>/jobs/`, written atomically (writeFileAtomic): a crash
 * leaves either the old record or the new one, never half of one.
 */
export class DirectoryJobJournal implements JobJournal {
  readonly #dir: string;
  readonly #log: Logger;

  constructor(stateDir: string, log: Logger) {
    this.#dir = path.join(stateDir, 'jobs');
    this.#log = log;
  }

  async load(): Promise<Job[]> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StoreError(`cannot read the job journal ${this.#dir}: ${(err as Error).message}`, { cause: err, hint: 'check daemon.stateDir' });
    }
    const jobs: Job[] = [];
    for (const name of names) {
      const file = path.join(this.#dir, name);
      if (!name.endsWith('.json')) {
        if (isAtomicTemp(name) || name.includes('.tmp-')) await rm(file, { force: true });
        continue;
      }
      try {
        const doc: unknown = JSON.parse(await readFile(file, 'utf8'));
        if (!Value.Check(JobSchema, doc)) throw new Error(Value.Errors(JobSchema, doc).First()?.message ?? 'invalid');
        jobs.push(doc);
      } catch (err) {
        this.#log.warn({ file, err: (err as Error).message }, 'skipping an unreadable job record');
      }
    }
    return jobs;
  }

  async save(job: Job): Promise<void> {
    const file = this.#file(job.id);
    try {
      await mkdir(this.#dir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, `${JSON.stringify(job)}\n`, 0o600);
    } catch (err) {
      throw new StoreError(`cannot write job record ${file}: ${(err as Error).message}`, { cause: err, hint: 'check daemon.stateDir' });
    }
  }

  async remove(id: string): Promise<void> {
    await rm(this.#file(id), { force: true });
  }

  #file(id: string): string {
    if (!ID_RE.test(id)) throw new StoreError(`"${id}" is not a job id`);
    return path.join(this.#dir, `${id}.json`);
  }
}
