import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { KIT_ROLES, type KitRole } from '../archive/manifest.ts';
import { ERROR_CODES, type ErrorCode } from '../errors/errors.ts';
import { ChangeLogMetrics } from './change-metrics.ts';

/**
 * Lifeboat's Prometheus metrics behind domain verbs. The facade owns its registry (never
 * prom-client's global one), so two instances in one process never share a series, and
 * nothing of prom-client leaks to callers: they say what happened, the facade decides which
 * series move.
 *
 * Every series carries `cluster` (dashboards and alerts aggregate per cluster across the
 * DaemonSet's pods), and every label combination a verb can produce exists from the start with
 * the value 0, so that `increase()` sees the first event and a query never returns nothing
 * merely because nothing has happened yet.
 */

export type BackupResult = 'success' | 'failure';
export type VerifyResult = 'success' | 'failure';
export type VerifyLevel = 'ciphertext' | 'deep' | 'drill';
export type StoreName = 'primary' | 'secondary';
export type StoreOp = 'put' | 'get' | 'stat' | 'list' | 'delete' | 'cleanup';
/**
 * `not_found`: a `get` of a missing key (the store answered; not a store fault).
 * `aborted`: a `put` stopped because its caller cancelled it or its source failed.
 */
export type StoreResult = 'success' | 'failure' | 'not_found' | 'aborted';
/** The schedules that have an expected interval: backups, and restore drills. */
export type ScheduleName = 'backup' | 'drill';
export type FailureReason = ErrorCode | 'unknown';

export interface MetricsIdentity {
  /** Default label of every series. */
  cluster: string;
  /** This node's name, a label of lifeboat_build_info. */
  node: string;
  /** Lifeboat's version, a label of lifeboat_build_info. */
  version: string;
}

export interface BackupOutcome {
  result: BackupResult;
  durationSeconds: number;
  /** Stored (compressed, encrypted) archive bytes; recorded for a success. */
  sizeBytes?: number;
  /** The failure's error code; `unknown` when absent or not a Lifeboat code. */
  reason?: ErrorCode;
  /** For a success: the kit roles the backup lacks (missingKitRoles of its manifest). */
  kitMissing?: readonly KitRole[];
  now?: Date;
}

export interface VerifyOutcome {
  result: VerifyResult;
  level: VerifyLevel;
  now?: Date;
}

/** What the catalogue already knows when the daemon starts, so a restart does not reset "last success" to never. */
export interface CatalogueFacts {
  /** When the newest committed backup was made. */
  lastBackupAt?: Date;
  /** Its archive size. */
  lastBackupSizeBytes?: number;
  /** The kit roles it lacks. */
  lastBackupKitMissing?: readonly KitRole[];
  /** When a backup last passed a verification of each level. */
  lastVerifiedAt?: Partial<Record<VerifyLevel, Date>>;
}

export const FAILURE_REASONS: readonly FailureReason[] = [...ERROR_CODES, 'unknown'];
export const VERIFY_LEVELS: readonly VerifyLevel[] = ['ciphertext', 'deep', 'drill'];
export const STORE_NAMES: readonly StoreName[] = ['primary', 'secondary'];
export const STORE_OPS: readonly StoreOp[] = ['put', 'get', 'stat', 'list', 'delete', 'cleanup'];
const RESULTS = ['success', 'failure'] as const;
const SCHEDULES: readonly ScheduleName[] = ['backup', 'drill'];

/** Store results beyond success/failure that an operation can have. */
const EXTRA_STORE_RESULTS: Partial<Record<StoreOp, StoreResult[]>> = { get: ['not_found'], put: ['aborted'] };

/**
 * Default Node.js metrics that `promtool check metrics` rejects: gauges whose names end in
 * `_total` ("non-counter metrics should not have _total suffix"). Each is the sum over the
 * `type` label of the series without the suffix (nodejs_active_handles{type} etc.), so nothing
 * is lost by dropping them.
 */
export const DROPPED_DEFAULT_METRICS: readonly string[] = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** From one second to two hours: a small cluster backs up in seconds, a large one over S3 in many minutes. */
const DURATION_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

export class LifeboatMetrics {
  readonly #registry = new Registry();
  readonly #backupTotal: Counter<'result'>;
  readonly #backupFailures: Counter<'reason'>;
  readonly #backupDuration: Histogram<'result'>;
  readonly #backupLastDuration: Gauge;
  readonly #backupSize: Gauge;
  readonly #backupLastSuccess: Gauge;
  readonly #backupLastAttempt: Gauge;
  readonly #backupLastStart: Gauge;
  readonly #backupInProgress: Gauge;
  readonly #backupKitMissing: Gauge<'role'>;
  readonly #backupFutureDated: Gauge;
  readonly #backupRejected: Gauge;
  readonly #storeInfo: Gauge<'store' | 'kind'>;
  readonly #verifyTotal: Counter<'result' | 'level'>;
  readonly #verifyLastSuccess: Gauge<'level'>;
  readonly #verifyLastAttempt: Gauge<'level'>;
  readonly #storeOps: Counter<'store' | 'op' | 'result'>;
  readonly #orphans: Counter;
  readonly #retention: Counter;
  readonly #leader: Gauge;
  readonly #etcdDbSize: Gauge;
  readonly #expectedInterval: Gauge<'schedule'>;
  /** The change log's series (change-metrics.ts). */
  readonly changes: ChangeLogMetrics;
  /** The last-success values as set, for seedFromCatalogue's "only raise" (prom-client reads them back only asynchronously). */
  #lastBackupSuccess = 0;
  readonly #lastVerifySuccess: Record<VerifyLevel, number> = { ciphertext: 0, deep: 0, drill: 0 };

  constructor(identity: MetricsIdentity) {
    const registers = [this.#registry];
    this.#registry.setDefaultLabels({ cluster: identity.cluster });

    this.#backupTotal = new Counter({
      name: 'lifeboat_backup_total',
      help: 'Backup attempts that finished, by result (success: committed with its manifest; failure: nothing was committed).',
      labelNames: ['result'],
      registers,
    });
    this.#backupFailures = new Counter({
      name: 'lifeboat_backup_failures_total',
      help: 'Failed backups by reason: the error code (see src/errors/errors.ts), or unknown.',
      labelNames: ['reason'],
      registers,
    });
    this.#backupDuration = new Histogram({
      name: 'lifeboat_backup_duration_seconds',
      help: 'Wall-clock duration of backup attempts from start to commit or failure, by result.',
      labelNames: ['result'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#backupLastDuration = new Gauge({
      name: 'lifeboat_backup_last_duration_seconds',
      help: 'Duration of the last successful backup in seconds; 0 before the first.',
      registers,
    });
    this.#backupSize = new Gauge({
      name: 'lifeboat_backup_size_bytes',
      help: 'Stored (compressed and encrypted) size of the last successful backup archive in bytes; 0 before the first.',
      registers,
    });
    this.#backupLastSuccess = new Gauge({
      name: 'lifeboat_backup_last_success_timestamp_seconds',
      help: 'Unix time at which the last successful backup was committed; 0 when none is known to this process.',
      registers,
    });
    this.#backupLastAttempt = new Gauge({
      name: 'lifeboat_backup_last_attempt_timestamp_seconds',
      help: 'Unix time at which the last backup attempt finished, successful or not; later than the last success when the last attempt failed.',
      registers,
    });
    this.#backupLastStart = new Gauge({
      name: 'lifeboat_backup_last_start_timestamp_seconds',
      help: 'Unix time at which the last backup attempt started; with lifeboat_backup_in_progress, how long the running backup has taken.',
      registers,
    });
    this.#backupInProgress = new Gauge({
      name: 'lifeboat_backup_in_progress',
      help: '1 while this process is running a backup, else 0.',
      registers,
    });
    this.#backupFutureDated = new Gauge({
      name: 'lifeboat_backup_future_dated',
      help: 'Committed backups dated further in the future than backup.maxClockSkewSeconds (a clock that ran ahead, or a forgery): never taken as latest nor as the last success. Counted each time the whole catalogue is read.',
      registers,
    });
    this.#storeInfo = new Gauge({
      name: 'lifeboat_store_info',
      help: 'Always 1: the kind of each configured store (fs: a directory on this node; s3: Ceph RGW or another S3).',
      labelNames: ['store', 'kind'],
      registers,
    });
    this.#backupRejected = new Gauge({
      name: 'lifeboat_backup_rejected',
      help: 'Committed backups whose manifest is refused (unsigned while signing.allowUnsigned is off, signed by no trusted key, invalid, or describing another location): left out of every list, never restored. Counted each time the whole catalogue is read.',
      registers,
    });
    this.#backupKitMissing = new Gauge({
      name: 'lifeboat_backup_kit_missing',
      help: 'For each recovery-kit role (pki, static-pod-manifest, cluster-configuration, encryption-provider-config, extra): 1 when the newest successful backup known to this process lacks it, else 0. Without the cluster-configuration a backup cannot be restored into a fresh control plane.',
      labelNames: ['role'],
      registers,
    });
    this.#verifyTotal = new Counter({
      name: 'lifeboat_verify_total',
      help: 'Verifications that finished, by result and level (ciphertext: archive checksum; deep: decrypt and check every entry; drill: restore into a throwaway etcd).',
      labelNames: ['result', 'level'],
      registers,
    });
    this.#verifyLastSuccess = new Gauge({
      name: 'lifeboat_verify_last_success_timestamp_seconds',
      help: 'Unix time at which a verification of this level last succeeded; 0 when none is known to this process.',
      labelNames: ['level'],
      registers,
    });
    this.#verifyLastAttempt = new Gauge({
      name: 'lifeboat_verify_last_attempt_timestamp_seconds',
      help: 'Unix time at which a verification of this level last finished, successful or not.',
      labelNames: ['level'],
      registers,
    });
    this.#storeOps = new Counter({
      name: 'lifeboat_store_operations_total',
      help: 'Backup store operations by store (primary, secondary), operation (put, get, stat, list, delete, cleanup) and result (success; failure: the store failed; not_found: get of a missing key; aborted: a put cancelled or whose source failed).',
      labelNames: ['store', 'op', 'result'],
      registers,
    });
    this.#orphans = new Counter({
      name: 'lifeboat_store_orphans_cleaned_total',
      help: 'Objects removed by store cleanup: archives without a manifest and writes that never completed.',
      registers,
    });
    this.#retention = new Counter({
      name: 'lifeboat_retention_deleted_total',
      help: 'Backups deleted by the retention policy.',
      registers,
    });
    this.#leader = new Gauge({
      name: 'lifeboat_is_leader',
      help: '1 while this process is the elected leader of its cluster (only the leader runs scheduled work), else 0.',
      registers,
    });
    this.#etcdDbSize = new Gauge({
      name: 'lifeboat_etcd_db_size_bytes',
      help: 'Size of the etcd database in bytes, as reported by the member chosen for the last backup; 0 before the first.',
      registers,
    });
    this.#expectedInterval = new Gauge({
      name: 'lifeboat_schedule_expected_interval_seconds',
      help: 'Longest gap between two consecutive runs of the schedule (backup, drill), from its cron expression; 0 when the schedule is off. The staleness alerts allow twice this.',
      labelNames: ['schedule'],
      registers,
    });
    const buildInfo = new Gauge({
      name: 'lifeboat_build_info',
      help: 'Always 1; labels name the running Lifeboat version and the node it runs on.',
      labelNames: ['version', 'node'],
      registers,
    });
    buildInfo.set({ version: identity.version, node: identity.node }, 1);
    this.changes = new ChangeLogMetrics(registers);

    for (const result of RESULTS) {
      this.#backupTotal.inc({ result }, 0);
      this.#backupDuration.zero({ result });
      for (const level of VERIFY_LEVELS) this.#verifyTotal.inc({ result, level }, 0);
    }
    for (const reason of FAILURE_REASONS) this.#backupFailures.inc({ reason }, 0);
    for (const level of VERIFY_LEVELS) {
      this.#verifyLastSuccess.set({ level }, 0);
      this.#verifyLastAttempt.set({ level }, 0);
    }
    for (const store of STORE_NAMES) {
      for (const op of STORE_OPS) {
        for (const result of [...RESULTS, ...(EXTRA_STORE_RESULTS[op] ?? [])]) this.#storeOps.inc({ store, op, result }, 0);
      }
    }
    for (const schedule of SCHEDULES) this.#expectedInterval.set({ schedule }, 0);
    for (const role of KIT_ROLES) this.#backupKitMissing.set({ role }, 0);

    collectDefaultMetrics({ register: this.#registry });
    for (const name of DROPPED_DEFAULT_METRICS) this.#registry.removeSingleMetric(name);
  }

  /** The Content-Type of render()'s output (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Every series in the Prometheus text format, for GET /metrics. */
  render(): Promise<string> {
    return this.#registry.metrics();
  }

  /** A backup began: in progress until backupFinished. */
  backupStarted(now: Date = new Date()): void {
    this.#backupInProgress.set(1);
    this.#backupLastStart.set(seconds(now));
  }

  /** A backup ended: committed (success) or not (failure, with the error code as reason). */
  backupFinished(outcome: BackupOutcome): void {
    assertNonNegative('durationSeconds', outcome.durationSeconds);
    if (outcome.sizeBytes !== undefined) assertNonNegative('sizeBytes', outcome.sizeBytes);
    const at = seconds(outcome.now ?? new Date());
    this.#backupInProgress.set(0);
    this.#backupTotal.inc({ result: outcome.result });
    this.#backupDuration.observe({ result: outcome.result }, outcome.durationSeconds);
    // The same value for both, so "attempt > success" means exactly "the last attempt failed".
    this.#backupLastAttempt.set(at);
    if (outcome.result === 'success') {
      this.#lastBackupSuccess = at;
      this.#backupLastSuccess.set(at);
      this.#backupLastDuration.set(outcome.durationSeconds);
      if (outcome.sizeBytes !== undefined) this.#backupSize.set(outcome.sizeBytes);
      this.#setKitMissing(outcome.kitMissing ?? []);
    } else {
      this.#backupFailures.inc({ reason: knownReason(outcome.reason) });
    }
  }

  /** A verification of one level ended (a drill counts as level `drill`). */
  verifyFinished(outcome: VerifyOutcome): void {
    const at = seconds(outcome.now ?? new Date());
    this.#verifyTotal.inc({ result: outcome.result, level: outcome.level });
    this.#verifyLastAttempt.set({ level: outcome.level }, at);
    if (outcome.result === 'success') {
      this.#lastVerifySuccess[outcome.level] = at;
      this.#verifyLastSuccess.set({ level: outcome.level }, at);
    }
  }

  /** One operation on a backup store (InstrumentedStore reports every one). */
  storeOperation(store: StoreName, op: StoreOp, result: StoreResult): void {
    this.#storeOps.inc({ store, op, result });
  }

  /** Store cleanup removed `n` objects: archives without a manifest and incomplete writes. */
  orphansCleaned(n: number): void {
    assertNonNegative('orphans cleaned', n);
    this.#orphans.inc(n);
  }

  /** Retention deleted `n` backups. */
  retentionDeleted(n: number): void {
    assertNonNegative('backups deleted', n);
    this.#retention.inc(n);
  }

  /** This process won (true) or lost (false) the election. */
  setLeader(leader: boolean): void {
    this.#leader.set(leader ? 1 : 0);
  }

  /** The etcd database size reported by the member chosen for a backup. */
  setEtcdDbSize(bytes: number): void {
    assertNonNegative('etcd database size', bytes);
    this.#etcdDbSize.set(bytes);
  }

  /** How many committed backups are dated further in the future than the clock bound. */
  setFutureDated(n: number): void {
    assertNonNegative('future-dated backups', n);
    this.#backupFutureDated.set(n);
  }

  /** The kind of a configured store, exported as lifeboat_store_info. */
  setStoreKind(store: 'primary' | 'secondary', kind: 'fs' | 's3'): void {
    this.#storeInfo.set({ store, kind }, 1);
  }

  /** How many committed backups are refused (see Catalog's onRejected). */
  setRejected(n: number): void {
    assertNonNegative('rejected backups', n);
    this.#backupRejected.set(n);
  }

  /** `undefined` (a schedule that is `off`) exports 0, which the staleness alerts read as "no expectation". */
  setExpectedInterval(seconds: number | undefined, schedule: ScheduleName = 'backup'): void {
    if (seconds !== undefined) assertNonNegative(`expected ${schedule} interval`, seconds);
    this.#expectedInterval.set({ schedule }, seconds ?? 0);
  }

  /**
   * Raises the last-success timestamps (and the last archive size and the kit roles that backup
   * lacks) to what the catalogue records, never lowers them: after a restart the staleness alerts
   * measure from the newest backup in the store, not from "never". Call it on start, and whenever
   * the catalogue is read (a backup made with the CLI then counts too).
   */
  seedFromCatalogue(facts: CatalogueFacts): void {
    if (facts.lastBackupAt && seconds(facts.lastBackupAt) > this.#lastBackupSuccess) {
      this.#lastBackupSuccess = seconds(facts.lastBackupAt);
      this.#backupLastSuccess.set(this.#lastBackupSuccess);
      if (facts.lastBackupSizeBytes !== undefined) {
        assertNonNegative('lastBackupSizeBytes', facts.lastBackupSizeBytes);
        this.#backupSize.set(facts.lastBackupSizeBytes);
      }
      if (facts.lastBackupKitMissing !== undefined) this.#setKitMissing(facts.lastBackupKitMissing);
    }
    for (const level of VERIFY_LEVELS) {
      const at = facts.lastVerifiedAt?.[level];
      if (at && seconds(at) > this.#lastVerifySuccess[level]) {
        this.#lastVerifySuccess[level] = seconds(at);
        this.#verifyLastSuccess.set({ level }, seconds(at));
      }
    }
  }

  /** The newest successful backup lacks exactly these kit roles: 1 for each, 0 for the others. */
  #setKitMissing(missing: readonly KitRole[]): void {
    for (const role of KIT_ROLES) this.#backupKitMissing.set({ role }, missing.includes(role) ? 1 : 0);
  }
}

function seconds(date: Date): number {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError('metrics: invalid date');
  return ms / 1000;
}

function knownReason(reason: string | undefined): FailureReason {
  return (ERROR_CODES as readonly string[]).includes(reason ?? '') ? (reason as ErrorCode) : 'unknown';
}

function assertNonNegative(what: string, n: number): void {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`metrics: ${what} must be a finite number >= 0, got ${n}`);
}
