import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { access, mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ConfigError, ConflictError, NotFoundError } from '../errors/errors.ts';
import { writeFileAtomic } from '../store/durable-file.ts';
import { RestorePlanSchema, type RestorePlan, type StepName } from './plan.ts';
import { RestoreFactsSchema, RestoreResultSchema } from './journal-model.ts';

/**
 * A restore's records on this node, under `<daemon.stateDir>/restores/<id>/` (mode 0700):
 *
 *   plan.json       the plan, written once
 *   journal.json    each step's state, rewritten atomically (temp, fsync, rename) at every change
 *   archive/        the fetched backup (snapshot and kit), decrypted and checked; removed when done
 *   manifests/      the static pod manifests moved out of the manifests dir, as they were
 *   dry-root/       a dry run's stand-in for the host root; removed when the dry run ends
 *   logs/           logs of the throwaway etcd members this restore ran
 *
 * One restore is applied (or rolled back) at a time per node: `<stateDir>/restores/apply.lock`
 * names the process that holds it. A lock whose process is gone (a daemon killed mid-apply) is
 * stale and taken over, so applying again resumes.
 */

const StepStateSchema = Type.Union([Type.Literal('pending'), Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]);
export type StepState = Static<typeof StepStateSchema>;

/** How a failure is recorded (a step's, a rollback's, a node's in apply --all): errorInfo() in ../errors/errors.ts. */
const ErrorInfo = Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) });
export type ErrorInfo = Static<typeof ErrorInfo>;

const StepRecordSchema = Type.Object({
  state: StepStateSchema,
  startedAt: Type.Optional(Type.String()),
  finishedAt: Type.Optional(Type.String()),
  /** How often it was started: more than 1 after a failure or a crash. */
  attempts: Type.Integer({ minimum: 0 }),
  error: Type.Optional(ErrorInfo),
  /** One line on what the step did (or, in a dry run, would do). */
  note: Type.Optional(Type.String()),
  /** Failed because the process stopped or was cancelled during it (not because it went wrong). */
  interrupted: Type.Optional(Type.Boolean()),
});
export type StepRecord = Static<typeof StepRecordSchema>;

export const RestoreJournalSchema = Type.Object({
  id: Type.String(),
  steps: Type.Record(Type.String(), StepRecordSchema),
  /** What steps learned that later steps (and a resumed apply) need. */
  facts: RestoreFactsSchema,
  /** What the restore reports: quorum, lease cleanup, join instructions, dry-run findings. */
  result: RestoreResultSchema,
  rollback: Type.Optional(
    Type.Object({
      state: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]),
      startedAt: Type.String(),
      finishedAt: Type.Optional(Type.String()),
      actions: Type.Array(Type.String()),
      error: Type.Optional(ErrorInfo),
    }),
  ),
  updatedAt: Type.String(),
});
export type RestoreJournal = Static<typeof RestoreJournalSchema>;

const ID_RE = /^restore-\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}$/;
const LOCK = 'apply.lock';
/** This process, told apart from an earlier one that had the same PID (PID 1 in a container). */
const INSTANCE = randomBytes(8).toString('hex');

export interface LockHolder {
  pid: number;
  instance: string;
  restoreId: string;
  since: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat), so that a PID reused after a reboot is not taken for the holder. */
  started?: string;
}

export class RestoreRecords {
  readonly root: string;

  constructor(stateDir: string) {
    this.root = path.join(stateDir, 'restores');
  }

  dir(id: string): string {
    if (!ID_RE.test(id)) throw new NotFoundError(`"${id}" is not a restore id (like restore-20261124T033000.123Z-1a2b3c)`);
    return path.join(this.root, id);
  }

  /** Writes the plan and a journal with every step pending. */
  async create(plan: RestorePlan): Promise<RestoreJournal> {
    const dir = this.dir(plan.id);
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await mkdir(dir, { mode: 0o700 });
    await writeFileAtomic(path.join(dir, 'plan.json'), `${JSON.stringify(plan, null, 2)}\n`, 0o600);
    const journal = freshJournal(plan);
    await this.save(journal);
    return journal;
  }

  async plan(id: string): Promise<RestorePlan> {
    const text = await this.#read(id, 'plan.json');
    return this.#parse(RestorePlanSchema, text, id, 'plan.json');
  }

  async journal(id: string): Promise<RestoreJournal> {
    const text = await this.#read(id, 'journal.json');
    return this.#parse(RestoreJournalSchema, text, id, 'journal.json');
  }

  async save(journal: RestoreJournal, now = new Date()): Promise<void> {
    journal.updatedAt = now.toISOString();
    await writeFileAtomic(path.join(this.dir(journal.id), 'journal.json'), `${JSON.stringify(journal, null, 2)}\n`, 0o600);
  }

  /** Restore ids with a plan, oldest first. */
  async ids(): Promise<string[]> {
    const entries = await readdir(this.root).catch(() => [] as string[]);
    const ids: string[] = [];
    for (const e of entries.filter((n) => ID_RE.test(n)).sort()) {
      if (await access(path.join(this.root, e, 'plan.json')).then(() => true, () => false)) ids.push(e);
    }
    return ids;
  }

  /** Who holds the apply lock, if a live process does. */
  async holder(): Promise<LockHolder | undefined> {
    const holder = await this.#readLock();
    return holder && alive(holder) ? holder : undefined;
  }

  /**
   * Takes the node's apply lock for restore `id`; a ConflictError names the live holder.
   * Returns the release function.
   */
  async lock(id: string, now = new Date()): Promise<() => Promise<void>> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const file = path.join(this.root, LOCK);
    const started = startTime(process.pid);
    const mine: LockHolder = { pid: process.pid, instance: INSTANCE, restoreId: id, since: now.toISOString(), ...(started ? { started } : {}) };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await writeFile(file, JSON.stringify(mine), { flag: 'wx', mode: 0o600 });
        return async () => {
          const current = await this.#readLock();
          if (current?.instance === INSTANCE && current.pid === process.pid && current.restoreId === id) await unlink(file).catch(() => undefined);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await this.#readLock();
      if (holder && alive(holder)) {
        throw new ConflictError(`restore ${holder.restoreId} is being applied or rolled back on this node by process ${holder.pid} (since ${holder.since})`, {
          hint: 'wait for it to finish; one restore runs at a time',
        });
      }
      await unlink(file).catch(() => undefined); // stale: its process is gone
    }
    throw new ConflictError(`cannot take ${file}: another process keeps taking it`);
  }

  async #readLock(): Promise<LockHolder | undefined> {
    const text = await readFile(path.join(this.root, LOCK), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as LockHolder;
    } catch {
      return { pid: -1, instance: '', restoreId: '?', since: '?' };
    }
  }

  async #read(id: string, name: string): Promise<string> {
    try {
      return await readFile(path.join(this.dir(id), name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no restore ${id} on this node`, { hint: 'plan one with POST /v1/restores' });
      throw err;
    }
  }

  #parse<T extends typeof RestorePlanSchema | typeof RestoreJournalSchema>(schema: T, text: string, id: string, name: string): Static<T> {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new ConfigError('/daemon/stateDir', `${path.join(this.dir(id), name)} is not JSON: ${(err as Error).message}`);
    }
    const first = Value.Errors(schema, doc).First();
    if (first) throw new ConfigError('/daemon/stateDir', `${path.join(this.dir(id), name)} is invalid at ${first.path || '/'}: ${first.message}`);
    return doc as Static<T>;
  }
}

export function freshJournal(plan: RestorePlan): RestoreJournal {
  return {
    id: plan.id,
    steps: Object.fromEntries(plan.steps.map((s) => [s, { state: 'pending', attempts: 0 } satisfies StepRecord])),
    facts: {},
    result: {},
    updatedAt: plan.createdAt,
  };
}

function alive(holder: LockHolder): boolean {
  if (holder.pid <= 0) return false;
  if (holder.pid === process.pid) return holder.instance === INSTANCE;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const started = startTime(holder.pid);
  return holder.started === undefined || started === undefined || started === holder.started;
}

/** Field 22 of /proc/<pid>/stat: when the process started; undefined without /proc. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * What apply will do with a journal: the steps to run, in order, up to and including
 * `through`. A done step is skipped; a pending, failed or running one (running means the
 * process died during it) is run again, from its own safe start.
 */
export function pendingSteps(steps: readonly StepName[], journal: RestoreJournal, through?: StepName): StepName[] {
  const end = through === undefined ? steps.length : steps.indexOf(through) + 1;
  return steps.slice(0, end).filter((s) => journal.steps[s]?.state !== 'done');
}

export function stepState(journal: RestoreJournal, step: string): StepState {
  return journal.steps[step]?.state ?? 'pending';
}

/** Whether a step was ever started (it is not pending): it may have touched the host. */
export function stepStarted(journal: RestoreJournal, step: string): boolean {
  return stepState(journal, step) !== 'pending';
}

/** The summary GET shows. */
export type RestoreState = 'planned' | 'applying' | 'interrupted' | 'failed' | 'partly-applied' | 'done' | 'rolling-back' | 'rolled-back' | 'rollback-failed';

export function restoreState(steps: readonly StepName[], journal: RestoreJournal, locked: boolean): RestoreState {
  if (journal.rollback) {
    if (journal.rollback.state === 'done') return 'rolled-back';
    if (journal.rollback.state === 'failed') return 'rollback-failed';
    return locked ? 'rolling-back' : 'rollback-failed';
  }
  const states = steps.map((s) => stepState(journal, s));
  if (states.every((s) => s === 'done')) return 'done';
  if (states.includes('running')) return locked ? 'applying' : 'interrupted';
  if (states.includes('failed')) return 'failed';
  if (states.includes('done')) return 'partly-applied';
  return 'planned';
}
