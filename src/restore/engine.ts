import { timingSafeEqual } from 'node:crypto';
import { copyFile, mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { BadRequestError, CancelledError, ConfigError, ConflictError, errorInfo } from '../errors/errors.ts';
import { writeFileAtomic } from '../store/durable-file.ts';
import { exists } from './durable.ts';
import { liveRevision, stopLeftover } from './etcd.ts';
import { pendingSteps, RestoreRecords, restoreState, stepStarted, type LockHolder, type RestoreJournal, type RestoreState, type StepRecord } from './journal.ts';
import { isMountPoint } from './mounts.ts';
import { createPlan, dataDirLayout, noChangeLogIdentity, type RestorePlan, type StepName } from './plan.ts';
import { rollbackSteps } from './rollback.ts';
import { STEPS, type EngineDeps, type StepContext } from './steps.ts';

/**
 * The restore engine of one node: plans a restore, shows it, applies it step by step (each
 * step idempotent, journaled on disk and reported as a job phase), rolls it back, and finds
 * the restores a crash left mid-apply. It drives this node only; `lifeboat restore apply --all`
 * drives every member's engine in the safe order (orchestrate.ts).
 *
 * Nothing live is touched before the confirmation token matches and the archive is fetched and
 * every hash checked (the first step). A dry run runs every step against a copy of the host
 * under the restore's state dir, restoring the snapshot for real, and removes it afterwards.
 */

/** The engine's parts; `now` defaults to the clock. */
export type RestoreEngineDeps = Omit<EngineDeps, 'now'> & { now?: () => Date };

export interface ApplyOptions {
  /** From the plan: proves the caller applies the plan it reviewed. */
  confirmationToken: string;
  /** age identities; needed only while the fetch step has not run. */
  identities: readonly string[];
  /** Stop after this step (the `--all` orchestration applies each node step by step). A dry run ignores it and runs every step. */
  through?: StepName;
  /** Told each step's name as it starts (the job's phase). */
  report?: (phase: StepName) => void;
  signal?: AbortSignal;
}

/** What GET /v1/restores/{id} shows. */
export interface RestoreView {
  plan: RestorePlan;
  journal: RestoreJournal;
  state: RestoreState;
}

/** A restore found mid-apply by recover(). */
export interface Interrupted {
  id: string;
  step: string;
  dryRun: boolean;
}

export class RestoreEngine {
  readonly #deps: EngineDeps;
  readonly #records: RestoreRecords;

  constructor(deps: RestoreEngineDeps) {
    this.#deps = { ...deps, now: deps.now ?? (() => new Date()) };
    this.#records = new RestoreRecords(deps.config.daemon.stateDir);
  }

  /**
   * Validates the request, computes the plan and records it. Changes nothing on the host. A
   * point in time reads the change log with `identities` (encryption.identityFile).
   */
  async plan(body: unknown, identities?: () => Promise<readonly string[] | undefined>): Promise<RestorePlan> {
    const { config, log } = this.#deps;
    const dryRun = typeof body === 'object' && body !== null && (body as { dryRun?: unknown }).dryRun === true;
    if (!dryRun) {
      const busy = await this.#unfinishedLive();
      if (busy) {
        throw new ConflictError(`restore ${busy.plan.id} is ${busy.state} on this node: finish it (apply it again) or roll it back before planning another`, {
          hint: `GET /v1/restores/${busy.plan.id} shows where it stopped`,
        });
      }
    }
    const plan = await createPlan(body, {
      catalog: this.#deps.catalog,
      config,
      now: this.#deps.now,
      stagingDir: (id) => this.#records.dir(id),
      liveRevision: () => liveRevision(config.etcd),
      isMountPoint,
      ...(this.#deps.changeLog && identities ? { changeLog: async () => this.#deps.changeLog!(await requireIdentities(identities)) } : {}),
    });
    await this.#records.create(plan);
    log.info({ phase: 'restore-planned', restoreId: plan.id, backupId: plan.backupId, mode: plan.mode, dryRun: plan.dryRun, node: plan.node, members: plan.members.map((m) => m.name), bumpRevision: plan.bumpRevision, targetRevision: plan.targetRevision, warnings: plan.warnings.length }, 'restore planned');
    return plan;
  }

  async get(id: string): Promise<RestoreView> {
    return this.#view(id, await this.#records.holder());
  }

  /** Every restore on this node, oldest first. */
  async list(): Promise<RestoreView[]> {
    const [ids, holder] = await Promise.all([this.#records.ids(), this.#records.holder()]);
    return Promise.all(ids.map((id) => this.#view(id, holder)));
  }

  async #view(id: string, holder: LockHolder | undefined): Promise<RestoreView> {
    const [plan, journal] = await Promise.all([this.#records.plan(id), this.#records.journal(id)]);
    return { plan, journal, state: restoreState(plan.steps as StepName[], journal, holder?.restoreId === id) };
  }

  /**
   * Runs the plan's steps that are not done, in order, up to `through`. A wrong token
   * (BadRequestError on /confirmationToken) or a missing identity (ConfigError on
   * /encryption/identityFile) fails before anything is written. A failed step is journaled as
   * failed and its error thrown; applying again resumes with it.
   */
  async apply(id: string, options: ApplyOptions): Promise<RestoreView> {
    const plan = await this.#records.plan(id);
    checkToken(plan, options.confirmationToken);
    const journal = await this.#records.journal(id);
    if (journal.rollback) throw new ConflictError(`restore ${id} was rolled back; plan a new restore`);
    const steps = plan.steps as StepName[];
    if (options.through !== undefined && !steps.includes(options.through)) {
      throw new BadRequestError('/through', `${options.through} is not a step of a ${plan.mode} restore (${steps.join(', ')})`);
    }
    if (plan.dryRun && steps.every((s) => journal.steps[s]?.state === 'done')) return this.get(id);
    // A dry run always starts over: its temp tree is gone with the process that made it.
    const todo = plan.dryRun ? [...steps] : pendingSteps(steps, journal, options.through);
    if (todo.length === 0) return this.get(id);
    if (todo.includes('fetch') && options.identities.length === 0) {
      throw new ConfigError('/encryption/identityFile', `applying restore ${id} needs an age identity to decrypt backup ${plan.backupId}`, {
        hint: 'set encryption.identityFile (or pass --identity) to the key that matches one of the backup\'s recipients',
      });
    }

    const release = await this.#records.lock(id, this.#deps.now());
    const log = this.#deps.log.child({ restoreId: id, mode: plan.mode, dryRun: plan.dryRun, node: plan.node });
    const ctx: StepContext = {
      deps: this.#deps,
      plan,
      journal,
      dry: plan.dryRun,
      root: plan.dryRun ? plan.dryRunRoot! : this.#deps.config.kit.hostRoot,
      identities: options.identities,
      signal: options.signal,
      log,
      previous: 'pending',
      throwaway: undefined,
      save: () => this.#records.save(journal, this.#deps.now()),
    };
    try {
      if (plan.dryRun) {
        await this.#resetDryRun(plan, journal);
        await this.#prepareDryRoot(plan);
      }
      for (const step of todo) {
        if (options.signal?.aborted) throw new CancelledError(`restore ${id} was cancelled before ${step}`);
        await this.#runStep(ctx, step, options);
      }
      log.info({ phase: 'restore-applied', through: todo.at(-1), state: restoreState(steps, journal, false) }, plan.dryRun ? 'dry run finished' : `restore applied through ${todo.at(-1)}`);
    } finally {
      if (plan.dryRun) await this.#cleanupDryRun(ctx);
      await release();
    }
    return this.get(id);
  }

  async #runStep(ctx: StepContext, step: StepName, options: ApplyOptions): Promise<void> {
    const { journal, log } = ctx;
    const record: StepRecord = journal.steps[step] ?? { state: 'pending', attempts: 0 };
    // A step left running, or failed by an interruption, was cut off part way.
    ctx.previous = record.state === 'failed' && record.interrupted ? 'running' : record.state;
    if (ctx.previous === 'running') log.warn({ phase: step }, 'this step was interrupted last time; running it again from its safe start');
    Object.assign(record, { state: 'running', startedAt: this.#deps.now().toISOString(), attempts: record.attempts + 1 });
    delete record.error;
    delete record.finishedAt;
    delete record.interrupted;
    journal.steps[step] = record;
    await ctx.save();
    options.report?.(step);
    const started = performance.now();
    log.info({ phase: step, attempt: record.attempts }, `${step} started`);
    try {
      const note = await STEPS[step](ctx);
      Object.assign(record, { state: 'done', finishedAt: this.#deps.now().toISOString(), note });
      await ctx.save();
      log.info({ phase: step, durationMs: Math.round(performance.now() - started), note }, `${step} done`);
    } catch (caught) {
      // An abort surfaces from timers and child processes as a plain AbortError.
      const err = ctx.signal?.aborted && !(caught instanceof CancelledError) ? new CancelledError(`restore ${ctx.plan.id} was cancelled during ${step}`, { cause: caught }) : caught;
      const error = errorInfo(err);
      Object.assign(record, { state: 'failed', finishedAt: this.#deps.now().toISOString(), error, ...(err instanceof CancelledError ? { interrupted: true } : {}) });
      await ctx.save();
      log.error({ phase: step, durationMs: Math.round(performance.now() - started), code: error.code, err: error.message }, `${step} failed`);
      throw err;
    }
  }

  /** Every step pending again, facts and results cleared (in place: the step context holds this journal). */
  async #resetDryRun(plan: RestorePlan, journal: RestoreJournal): Promise<void> {
    await stopLeftover(journal.facts.throwawayPid, path.join(plan.dryRunRoot!, plan.self.dataDir));
    for (const s of plan.steps) journal.steps[s] = { state: 'pending', attempts: journal.steps[s]?.attempts ?? 0 };
    journal.facts = {};
    journal.result = {};
    await this.#records.save(journal, this.#deps.now());
  }

  /**
   * The dry run's host: the live manifests dir copied, the kit targets that exist copied, and
   * a placeholder directory where the live data dir is (its data is not copied).
   */
  async #prepareDryRoot(plan: RestorePlan): Promise<void> {
    const root = plan.dryRunRoot!;
    const live = this.#deps.config.kit.hostRoot;
    await rm(root, { recursive: true, force: true });
    await mkdir(root, { recursive: true, mode: 0o700 });
    const manifests = this.#deps.config.restore.manifestsDir;
    await mkdir(path.join(root, manifests), { recursive: true, mode: 0o755 });
    for (const name of await readdir(path.join(live, manifests)).catch(() => [] as string[])) {
      const from = path.join(live, manifests, name);
      if ((await stat(from)).isFile()) await copyFile(from, path.join(root, manifests, name));
    }
    for (const f of plan.files) {
      const from = path.join(live, f.path);
      if (!(await exists(from))) continue;
      await mkdir(path.dirname(path.join(root, f.path)), { recursive: true, mode: 0o755 });
      await copyFile(from, path.join(root, f.path));
    }
    const layout = dataDirLayout(plan.self.dataDir, plan.id, plan.self.swap);
    if (await exists(path.join(live, layout.live))) {
      const placeholder = path.join(root, layout.live);
      await mkdir(placeholder, { recursive: true, mode: 0o700 });
      await writeFileAtomic(path.join(placeholder, 'LIFEBOAT-DRY-RUN-PLACEHOLDER'), `stands for ${layout.live} on the live host; its data is not copied\n`, 0o600);
    }
  }

  /** Stops the throwaway etcd, removes what the dry run left, and journals that. */
  async #cleanupDryRun(ctx: StepContext): Promise<void> {
    await ctx.throwaway?.stop();
    await removeDryRunLeftovers(ctx.plan, ctx.journal);
    await ctx.save().catch(() => undefined);
  }

  /**
   * Undoes a restore on this node: stops what runs on the restored data, sets the restored data
   * aside as `<dataDir>.lifeboat-failed-<id>`, puts the old data dir back (if there was one), and
   * puts the original manifests back; for a fresh control plane, removes the kit files it placed
   * where there were none and its kubeadm config, and puts the files it replaced back. A
   * fresh-control-plane restore is rolled back only until kubeadm init has run. Never deletes a
   * data dir. Idempotent; journaled.
   */
  async rollback(id: string, options: { confirmationToken: string; signal?: AbortSignal }): Promise<RestoreView> {
    const plan = await this.#records.plan(id);
    checkToken(plan, options.confirmationToken);
    checkRollback(plan);
    const release = await this.#records.lock(id, this.#deps.now());
    const journal = await this.#records.journal(id);
    const log = this.#deps.log.child({ restoreId: id, mode: plan.mode, node: plan.node });
    const save = () => this.#records.save(journal, this.#deps.now());
    try {
      if (journal.rollback?.state === 'done') return await this.get(id);
      checkRollback(plan, journal);
      journal.rollback = { state: 'running', startedAt: this.#deps.now().toISOString(), actions: journal.rollback?.actions ?? [] };
      await save();
      const actions = journal.rollback.actions;
      const act = async (line: string) => {
        actions.push(line);
        log.info({ phase: 'rollback' }, line);
        await save();
      };
      try {
        await rollbackSteps(this.#deps, plan, journal, act, options.signal);
        await rm(path.join(plan.staging, 'archive'), { recursive: true, force: true });
        journal.rollback.state = 'done';
        journal.rollback.finishedAt = this.#deps.now().toISOString();
        await save();
      } catch (err) {
        journal.rollback.state = 'failed';
        journal.rollback.error = errorInfo(err);
        await save();
        throw err;
      }
      return await this.get(id);
    } finally {
      await release();
    }
  }

  /**
   * At startup: restores a previous process left mid-step (it was killed) are journaled as
   * failed there, a dry run's leftovers are removed, and the list is returned so that the
   * daemon marks their jobs failed. Applying again resumes each of them.
   */
  async recover(): Promise<Interrupted[]> {
    const holder = await this.#records.holder();
    const found: Interrupted[] = [];
    for (const id of await this.#records.ids()) {
      if (holder?.restoreId === id) continue;
      const [plan, journal] = await Promise.all([this.#records.plan(id), this.#records.journal(id)]);
      let changed = false;
      for (const [step, record] of Object.entries(journal.steps)) {
        if (record.state !== 'running') continue;
        Object.assign(record, { state: 'failed', interrupted: true, finishedAt: this.#deps.now().toISOString(), error: { code: 'CANCELLED', message: 'interrupted: the process stopped during this step', hint: 'apply the restore again to resume it, or roll it back' } });
        found.push({ id, step, dryRun: plan.dryRun });
        changed = true;
      }
      if (journal.rollback?.state === 'running') {
        journal.rollback.state = 'failed';
        journal.rollback.error = { code: 'CANCELLED', message: 'interrupted: the process stopped during the rollback' };
        found.push({ id, step: 'rollback', dryRun: plan.dryRun });
        changed = true;
      }
      if (plan.dryRun && plan.dryRunRoot && (await exists(plan.dryRunRoot))) {
        await removeDryRunLeftovers(plan, journal);
        changed = true;
      }
      if (changed) await this.#records.save(journal, this.#deps.now());
    }
    for (const r of found) this.#deps.log.warn({ restoreId: r.id, phase: r.step }, 'a restore was interrupted; apply it again to resume it, or roll it back');
    return found;
  }

  /** A restore (not a dry run) that has touched this node and is neither done nor rolled back. */
  async #unfinishedLive(): Promise<RestoreView | undefined> {
    for (const view of await this.list()) {
      if (view.plan.dryRun || view.state === 'done' || view.state === 'rolled-back') continue;
      const touched = view.plan.steps.some((s) => s !== 'fetch' && stepStarted(view.journal, s));
      if (touched) return view;
    }
    return undefined;
  }
}

/** A BadRequestError on /confirmationToken unless `token` is the plan's (compared in constant time). */
export function checkToken(plan: RestorePlan, token: unknown): void {
  const expected = Buffer.from(plan.confirmationToken);
  const given = Buffer.from(typeof token === 'string' ? token : '');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new BadRequestError('/confirmationToken', `the confirmation token does not match restore ${plan.id}'s`, {
      hint: `GET /v1/restores/${plan.id} shows the plan and its token; review the plan, then apply with that token`,
    });
  }
}

/**
 * A ConflictError when a restore cannot be rolled back: a dry run changed nothing, and kubeadm
 * init (fresh control plane) cannot be undone. Without a journal, checks the plan alone.
 */
export function checkRollback(plan: RestorePlan, journal?: RestoreJournal): void {
  if (plan.dryRun) throw new ConflictError(`restore ${plan.id} is a dry run: it changed nothing, so there is nothing to roll back`);
  if (journal && plan.mode === 'fresh-control-plane' && stepStarted(journal, 'kubeadm-init')) {
    throw new ConflictError(`kubeadm init has run for restore ${plan.id}: Lifeboat cannot undo it`, {
      hint: 'run `kubeadm reset` on this host; the data Lifeboat set aside is listed in the plan (setAside)',
    });
  }
}

/** What a dry run leaves: its throwaway etcd, its stand-in host root, the decrypted backup and the staged manifests (the logs stay). */
async function removeDryRunLeftovers(plan: RestorePlan, journal: RestoreJournal): Promise<void> {
  if (plan.dryRunRoot) {
    await stopLeftover(journal.facts.throwawayPid, path.join(plan.dryRunRoot, plan.self.dataDir));
    await rm(plan.dryRunRoot, { recursive: true, force: true });
  }
  delete journal.facts.throwawayPid;
  for (const dir of ['archive', 'archive.partial', 'manifests']) await rm(path.join(plan.staging, dir), { recursive: true, force: true });
}

/** The identities a point-in-time plan reads the change log with. */
async function requireIdentities(identities: () => Promise<readonly string[] | undefined>): Promise<readonly string[]> {
  const found = await identities();
  if (!found || found.length === 0) throw noChangeLogIdentity();
  return found;
}
