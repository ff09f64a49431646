import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { Value } from '@sinclair/typebox/value';
import pino, { type Logger } from 'pino';
import type { ApiDeps, BackupEntry } from '../../src/api/deps.ts';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import type { Config } from '../../src/config/schema.ts';
import { generateIdentity } from '../../src/crypto/age.ts';
import { daemonRestores } from '../../src/daemon/restores.ts';
import { BackupProtectedError, ConflictError, NotFoundError, ObjectLockedError, StoreError } from '../../src/errors/errors.ts';
import type { Job, JobRequest, Submitted } from '../../src/jobs/job.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import { freshJournal, restoreState, type RestoreJournal } from '../../src/restore/journal.ts';
import { resolveBackup, RestorePlanSchema, stepsOf, validateRequest, type RestorePlan, type StepName } from '../../src/restore/plan.ts';
import { sampleManifest } from './fixtures.ts';

/** In-memory stand-ins for the daemon's parts, for unit tests of the API. */

/** The age key the fake backups are encrypted to. */
export const FAKE_KEY = await generateIdentity();

export function storedManifest(id: string, createdAt: string): StoredManifest {
  const base = sampleManifest(1000, [], id);
  return {
    ...base,
    createdAt,
    snapshot: { ...base.snapshot, sha256: 'a'.repeat(64), dbSha256: 'b'.repeat(64) },
    archive: {
      key: `test/backups/${id}/archive.tar.zst.age`,
      size: 500,
      sha256: 'c'.repeat(64),
      compression: { algorithm: 'zstd', level: 1 },
      encryption: { format: 'age', recipients: [FAKE_KEY.recipient] },
    },
    completedAt: createdAt,
  };
}

/** Newest first. The newest is protected; LOCKED is under Object Lock. */
export const IDS = {
  newest: '20261124T030000.000Z-r300',
  middle: '20261123T030000.000Z-r200',
  locked: '20261122T030000.000Z-r100',
  oldest: '20261121T030000.000Z-r50',
  /** get() throws an unexpected error whose message must never reach a client. */
  bug: '20200101T000000.000Z-r666',
  /** get() throws a StoreError (502). */
  storeDown: '20200101T000000.000Z-r502',
} as const;

export const SECRET_IN_BUG = 'password=hunter2 at /etc/secret';

export class FakeBackups {
  entries: BackupEntry[] = [
    { manifest: storedManifest(IDS.newest, '2026-11-24T03:00:00.000Z'), verification: { backupId: IDS.newest, level: 'ciphertext', result: 'passed', at: '2026-11-24T03:10:00.000Z', durationSeconds: 1.5, lastPassedAt: '2026-11-24T03:10:00.000Z', lastPassedLevel: 'ciphertext' } },
    { manifest: storedManifest(IDS.middle, '2026-11-23T03:00:00.000Z') },
    { manifest: storedManifest(IDS.locked, '2026-11-22T03:00:00.000Z') },
    { manifest: storedManifest(IDS.oldest, '2026-11-21T03:00:00.000Z') },
  ];
  listCalls: { limit: number; before?: Date }[] = [];
  deleted: { id: string; by: string }[] = [];
  /** The catalogue's manifests, for the restore checks and plans. */
  readonly catalog = {
    list: async (): Promise<StoredManifest[]> => this.entries.map((e) => e.manifest),
    get: async (id: string): Promise<StoredManifest> => (await this.get(id)).manifest,
    resolve: async (ref: string): Promise<StoredManifest> => {
      if (ref !== 'latest') return (await this.get(ref)).manifest;
      const [newest] = this.entries;
      if (!newest) throw new NotFoundError('there is no backup');
      return newest.manifest;
    },
  };

  list = async (options: { limit: number; before?: Date }): Promise<BackupEntry[]> => {
    this.listCalls.push(options);
    return this.entries.filter((e) => options.before === undefined || Date.parse(e.manifest.createdAt) < options.before.getTime()).slice(0, options.limit);
  };

  get = async (id: string): Promise<BackupEntry> => {
    if (id === IDS.bug) throw new Error(`unexpected: ${SECRET_IN_BUG}`);
    if (id === IDS.storeDown) throw new StoreError('the store answered 503 SlowDown', { hint: 'check the S3 endpoint' });
    const entry = id === 'latest' ? this.entries[0] : this.entries.find((e) => e.manifest.backupId === id);
    if (!entry) throw new NotFoundError(`no backup ${id} in cluster test`);
    return entry;
  };

  delete = async (id: string, by: string): Promise<void> => {
    if (id === IDS.locked) throw new ObjectLockedError(`test/backups/${id}/manifest.json`, { retainUntil: new Date('2030-01-01T00:00:00Z') }, `backup ${id} is under Object Lock retention until 2030-01-01T00:00:00.000Z`);
    const entry = await this.get(id);
    if (entry === this.entries[0]) throw new BackupProtectedError(`backup ${id} is the newest backup`, { hint: 'take a newer backup first' });
    this.entries = this.entries.filter((e) => e !== entry);
    this.deleted.push({ id, by });
  };
}

/** Jobs as the runner keeps them: equal running jobs and known idempotency keys are returned again. */
export class FakeJobs {
  jobs: Job[] = [];
  requests: JobRequest[] = [];
  #keys = new Map<string, { jobId: string; request: JobRequest }>();
  #n = 0;

  submit = (request: JobRequest): Submitted => {
    this.requests.push(request);
    const params = request.params ?? {};
    if (request.idempotencyKey !== undefined) {
      const known = this.#keys.get(request.idempotencyKey);
      if (known) {
        if (known.request.kind !== request.kind || !isDeepStrictEqual(known.request.params ?? {}, params)) {
          throw new ConflictError(`Idempotency-Key was used for another request (${known.request.kind} job ${known.jobId})`);
        }
        return { job: structuredClone(this.jobs.find((j) => j.id === known.jobId)!), created: false };
      }
    }
    this.#n += 1;
    const job: Job = {
      id: `job-20261124T040000.000Z-${String(this.#n).padStart(6, '0')}`,
      kind: request.kind,
      state: 'queued',
      phase: 'queued',
      trigger: request.trigger,
      requestedBy: request.requestedBy,
      params,
      progress: { bytesDone: 0 },
      createdAt: new Date(Date.UTC(2026, 10, 24, 4, 0, this.#n)).toISOString(),
    };
    this.jobs.unshift(job);
    if (request.idempotencyKey !== undefined) this.#keys.set(request.idempotencyKey, { jobId: job.id, request });
    return { job: structuredClone(job), created: true };
  };

  get = (id: string): Job | undefined => this.jobs.find((j) => j.id === id);

  list = (options: { limit: number; kind?: string; state?: string }): Job[] =>
    this.jobs.filter((j) => (options.kind === undefined || j.kind === options.kind) && (options.state === undefined || j.state === options.state)).slice(0, options.limit);
}

/**
 * The restore engine's records in memory: plan() validates the body as the engine does (the
 * real validateRequest) and makes a plan of the fake backup; journals are set by tests.
 */
export class FakeRestoreEngine {
  readonly records = new Map<string, { plan: RestorePlan; journal: RestoreJournal }>();
  planned: unknown[] = [];
  readonly backups: FakeBackups;
  #n = 0;

  constructor(backups: FakeBackups) {
    this.backups = backups;
  }

  plan = async (body: unknown): Promise<RestorePlan> => {
    const input = validateRequest(body);
    const { catalog } = this.backups;
    const manifest = await resolveBackup(input.backup, await catalog.list(), catalog);
    this.planned.push(body);
    this.#n += 1;
    const id = `restore-20261124T040000.000Z-${this.#n.toString(16).padStart(6, '0')}`;
    const bump = input.bumpRevision ?? 1_000_000;
    const self = { name: 'node-a', peerURL: 'https://10.0.0.1:2380' };
    const plan: RestorePlan = Value.Parse(RestorePlanSchema, {
      id,
      createdAt: '2026-11-24T04:00:00.000Z',
      cluster: 'test',
      mode: input.mode,
      dryRun: input.dryRun ?? false,
      node: self.name,
      backupId: manifest.backupId,
      backup: { revision: manifest.etcd.revision, createdAt: manifest.createdAt, dbSize: manifest.etcd.dbSize, archiveSize: manifest.archive.size },
      confirmationToken: randomBytes(16).toString('hex'),
      clusterToken: input.clusterToken ?? `lifeboat-test-${this.#n}`,
      bumpRevision: bump,
      targetRevision: String(BigInt(manifest.etcd.revision) + BigInt(bump)),
      bump: { minimum: 1_000_000, pinned: input.bumpRevision !== undefined, estimatedRevisionsSinceBackup: 0, formula: 'fake' },
      members: input.members ?? [self],
      leaseCleanupBy: input.leaseCleanupBy ?? self.name,
      keepLeaseAddresses: ['10.0.0.1'],
      self: { ...self, clientURL: 'https://10.0.0.1:2379', dataDir: '/var/lib/etcd', restoreDir: `/var/lib/etcd.lifeboat-restore-${id}`, swap: 'dir', etcdutl: { command: 'etcdutl', args: ['snapshot', 'restore'] } },
      files: [],
      manifests: [],
      setAside: [{ from: '/var/lib/etcd', to: `/var/lib/etcd.lifeboat-aside-${id}`, what: 'the old etcd data' }],
      staging: `/var/lib/lifeboat/state/restores/${id}`,
      steps: [...stepsOf(input.mode)],
      expectedDowntimeSeconds: 60,
      worstCaseDowntimeSeconds: 900,
      downtime: [],
      warnings: [],
    });
    this.records.set(id, { plan, journal: freshJournal(plan) });
    return plan;
  };

  get = async (id: string): Promise<RestoreView> => {
    const record = this.records.get(id);
    if (!record) throw new NotFoundError(`no restore ${id} on this node`, { hint: 'plan one with POST /v1/restores' });
    return structuredClone({ ...record, state: restoreState(record.plan.steps as StepName[], record.journal, false) });
  };

  list = async (): Promise<RestoreView[]> => Promise.all([...this.records.keys()].map((id) => this.get(id)));

  /** Marks steps done (a restore partly or fully applied) or the rollback done. */
  mark(id: string, steps: readonly string[], rollback = false): void {
    const { journal } = this.records.get(id)!;
    for (const s of steps) journal.steps[s] = { state: 'done', attempts: 1 };
    if (rollback) journal.rollback = { state: 'done', startedAt: '2026-11-24T05:00:00.000Z', actions: [] };
  }
}

export interface LogCapture {
  log: Logger;
  lines: Record<string, unknown>[];
  text: () => string;
}

/** A pino logger whose JSON lines are kept for assertions. */
export function captureLog(level = 'info'): LogCapture {
  const raw: string[] = [];
  const log = pino({ level }, { write: (s: string) => void raw.push(s) });
  return {
    log,
    get lines() {
      return raw.map((s) => JSON.parse(s) as Record<string, unknown>);
    },
    text: () => raw.join(''),
  };
}

export interface Fakes {
  deps: ApiDeps;
  backups: FakeBackups;
  jobs: FakeJobs;
  restores: FakeRestoreEngine;
  /** What encryption.identityFile holds: undefined when none is configured; `error` when reading it fails. */
  identity: { identities: string[] | undefined; error?: Error };
  leadership: { leader: boolean; name: string | undefined };
  health: { ready: boolean; reasons: string[] };
}

export function fakeDeps(api: Config['api'], log: Logger): Fakes {
  const backups = new FakeBackups();
  const jobs = new FakeJobs();
  const leadership = { leader: true, name: 'node-a' as string | undefined };
  const health = { ready: true, reasons: [] as string[] };
  const restores = new FakeRestoreEngine(backups);
  const identity: Fakes['identity'] = { identities: [FAKE_KEY.identity] };
  return {
    backups,
    jobs,
    restores,
    identity,
    leadership,
    health,
    deps: {
      api,
      metricsListen: { host: '127.0.0.1', port: 0 },
      identity: { cluster: 'test', node: 'node-a', version: '9.9.9-test' },
      log,
      backups: { list: backups.list, get: backups.get, delete: backups.delete },
      jobs: { submit: jobs.submit, get: jobs.get, list: jobs.list as ApiDeps['jobs']['list'] },
      restores: daemonRestores({ engine: restores, jobs, catalog: backups.catalog, identities: async () => {
        if (identity.error) throw identity.error;
        return identity.identities;
      }, log }),
      changes: { log: async () => ({ entries: [], gaps: [], segmentsRead: 0, segments: 0 }) },
      leadership: { isLeader: () => leadership.leader, leader: () => leadership.name },
      health: { ready: () => ({ ready: health.ready, reasons: health.reasons }) },
      metrics: { render: async () => '# HELP lifeboat_up 1 when up\n# TYPE lifeboat_up gauge\nlifeboat_up 1\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' },
    },
  };
}
