import type { Logger } from 'pino';
import type { RestoreApi } from '../api/deps.ts';
import type { StoredManifest } from '../archive/manifest.ts';
import { recipientOf } from '../crypto/age.ts';
import { BadRequestError, ConfigError, ConflictError, KeyError } from '../errors/errors.ts';
import type { JobRequest, Submitted } from '../jobs/job.ts';
import { checkRollback, checkToken, type RestoreEngine, type RestoreView } from '../restore/engine.ts';
import { stepStarted } from '../restore/journal.ts';
import { pointOf, resolveBackup, validateRequest, type PlanContext, type StepName } from '../restore/plan.ts';

/**
 * Restores over the API, on this node: the checks that must pass before a restore job exists
 * (the plan, its confirmation token, an identity that opens the backup, the restore's state),
 * and the job parameters. The confirmation token never goes into a job (job records are
 * journaled and shown to viewers): the restore job reads it from the plan, which the API
 * checked it against.
 */

const IDENTITY_FIELD = '/encryption/identityFile';

export interface RestoreParts {
  engine: Pick<RestoreEngine, 'plan' | 'get' | 'list'>;
  jobs: { submit(request: JobRequest): Submitted };
  catalog: PlanContext['catalog'];
  /** encryption.identityFile's identities; undefined when none is configured. */
  identities: () => Promise<string[] | undefined>;
  log: Logger;
}

/** What a restore job is asked to do: never the token. */
export interface RestoreJobParams {
  restoreId: string;
  action: 'apply' | 'rollback';
  through?: StepName;
}

export function daemonRestores(parts: RestoreParts): RestoreApi {
  const { engine, jobs, log } = parts;
  const submit = (params: RestoreJobParams, requestedBy: string): Submitted =>
    jobs.submit({ kind: 'restore', params: { ...params }, trigger: 'api', requestedBy });

  return {
    async plan(body, requestedBy) {
      const dryRun = body.dryRun === true;
      if (dryRun) {
        // A dry run decrypts the backup at once: refuse it before anything is recorded.
        const input = await bodyFields(() => validateRequest(body));
        // (A point in time is checked as it is planned: reading the change log needs the identity.)
        if (!pointOf(input.backup)) {
          const backup = await bodyFields(async () => resolveBackup(input.backup, await parts.catalog.list(), parts.catalog));
          await restoreIdentities(parts.identities, backup);
        }
      }
      const plan = await bodyFields(() => engine.plan(body, parts.identities));
      log.info({ phase: 'restore-planned', restoreId: plan.id, requestedBy, dryRun: plan.dryRun }, `restore ${plan.id} planned by ${requestedBy}`);
      if (!dryRun) return { plan };
      const { job } = submit({ restoreId: plan.id, action: 'apply' }, requestedBy);
      return { plan, job };
    },

    list: () => engine.list(),

    get: (id) => engine.get(id),

    async apply(id, request, requestedBy) {
      const view = await engine.get(id);
      await bodyFields(() => checkToken(view.plan, request.confirmationToken));
      if (view.journal.rollback) {
        throw new ConflictError(`restore ${id} was rolled back (${view.state}); it cannot be applied again`, { hint: 'plan a new restore with POST /v1/restores' });
      }
      if (view.state === 'done') {
        throw new ConflictError(`restore ${id} is already done on ${view.plan.node}`, {
          hint: view.plan.dryRun ? 'a dry run runs once; plan a new dry run to run it again' : `GET /v1/restores/${id} shows what it did`,
        });
      }
      const { through } = request;
      if (through !== undefined && !view.plan.steps.includes(through)) {
        throw new BadRequestError('/body/through', `${through} is not a step of a ${view.plan.mode} restore; its steps are ${view.plan.steps.join(', ')}`);
      }
      if (view.plan.dryRun || view.journal.steps.fetch?.state !== 'done') await restoreIdentities(parts.identities, await parts.catalog.get(view.plan.backupId));
      return submit({ restoreId: id, action: 'apply', ...(through === undefined ? {} : { through }) }, requestedBy);
    },

    async rollback(id, request, requestedBy) {
      const view = await engine.get(id);
      await bodyFields(() => checkToken(view.plan, request.confirmationToken));
      checkRollback(view.plan, view.journal);
      if (view.journal.rollback?.state === 'done') throw new ConflictError(`restore ${id} is already rolled back`, { hint: `GET /v1/restores/${id} shows what the rollback did` });
      return submit({ restoreId: id, action: 'rollback' }, requestedBy);
    },
  };
}

/** A request field the engine names (`/members/1/peerURL`) is a field of the body here. */
async function bodyFields<T>(work: () => T | Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof BadRequestError && !err.field.startsWith('/body')) {
      throw new BadRequestError(`/body${err.field === '/' ? '' : err.field}`, err.message, { cause: err, ...(err.hint ? { hint: err.hint } : {}) });
    }
    throw err;
  }
}

/**
 * The identities of encryption.identityFile, checked to open `backup` (one of them is one of its
 * recipients). Every failure is a ConfigError on encryption.identityFile: a 400 that says what
 * to set, before anything is touched.
 */
export async function restoreIdentities(identities: () => Promise<string[] | undefined>, backup?: StoredManifest): Promise<string[]> {
  let found: string[] | undefined;
  try {
    found = await identities();
  } catch (err) {
    if (err instanceof KeyError) throw new ConfigError(IDENTITY_FIELD, err.message, { cause: err, hint: 'point encryption.identityFile at the age identity file (AGE-SECRET-KEY-1...) that matches the backups\' recipients' });
    if (err instanceof ConfigError) throw new ConfigError(IDENTITY_FIELD, err.detail, { cause: err, hint: 'mount the identity file on this node (or fix encryption.identityFile), then apply again' });
    throw err;
  }
  if (found === undefined) {
    throw new ConfigError(IDENTITY_FIELD, 'a restore decrypts the backup, but no age identity is configured on this node', {
      hint: 'mount the identity file and set encryption.identityFile (or LIFEBOAT_ENCRYPTION__IDENTITY_FILE), restart the daemon, then apply again',
    });
  }
  if (backup) {
    const wanted = new Set(backup.archive.encryption.recipients);
    const mine = await Promise.all(found.map((i) => recipientOf(i)));
    if (wanted.size > 0 && !mine.some((r) => wanted.has(r))) {
      throw new ConfigError(IDENTITY_FIELD, `none of its ${found.length} identities opens backup ${backup.backupId} (encrypted to ${[...wanted].join(', ')}; the file's public keys are ${mine.join(', ')})`, {
        hint: 'use the identity file whose public key is one of the backup\'s recipients',
      });
    }
  }
  return found;
}

/**
 * What a finished restore job reports: JSON, and without secrets (job records are shown to
 * viewers). The join command of a fresh control plane holds a bootstrap token and the
 * certificate key, so it is shown only by GET /v1/restores/{id} (role restorer).
 */
export function restoreSummary(view: RestoreView, params: RestoreJobParams): Record<string, unknown> {
  const { plan, journal } = view;
  const result = journal.result;
  const { join } = result;
  return {
    restoreId: plan.id,
    action: params.action,
    ...(params.through === undefined ? {} : { through: params.through }),
    state: view.state,
    node: plan.node,
    mode: plan.mode,
    dryRun: plan.dryRun,
    backupId: plan.backupId,
    targetRevision: plan.targetRevision,
    steps: Object.fromEntries(plan.steps.map((s) => [s, journal.steps[s]?.state ?? 'pending'])),
    setAside: plan.setAside,
    ...(result.quorum === undefined ? {} : { quorum: result.quorum }),
    ...(result.cleanup === undefined ? {} : { cleanup: result.cleanup }),
    ...(result.dryRun === undefined ? {} : { dryRunResult: result.dryRun }),
    ...(join === undefined ? {} : { join: { hosts: join.hosts, certificateKeyExpiresAt: join.certificateKeyExpiresAt, command: `GET /v1/restores/${plan.id} (role restorer) shows it: it holds a bootstrap token and the certificate key` } }),
    ...(journal.rollback === undefined ? {} : { rollback: { state: journal.rollback.state, actions: journal.rollback.actions } }),
  };
}

export function restoreJobParams(params: Record<string, unknown>): RestoreJobParams {
  const { restoreId, action, through } = params;
  if (typeof restoreId !== 'string' || (action !== 'apply' && action !== 'rollback') || (through !== undefined && typeof through !== 'string')) {
    throw new BadRequestError('/params', `a restore job needs {restoreId, action: apply|rollback, through?}, got ${JSON.stringify(params).slice(0, 200)}`);
  }
  return { restoreId, action, ...(through === undefined ? {} : { through: through as StepName }) };
}

/**
 * The restore (not a dry run) that has touched this node past the fetch and is neither done nor
 * rolled back: the one the engine refuses to plan another beside, and the one that keeps this
 * daemon out of the leader election (restore-hold.ts).
 */
export function unfinishedLiveRestore(views: readonly RestoreView[]): RestoreView | undefined {
  return views.find((view) =>
    !view.plan.dryRun && view.state !== 'done' && view.state !== 'rolled-back'
    && view.plan.steps.some((s) => s !== 'fetch' && stepStarted(view.journal, s)));
}
