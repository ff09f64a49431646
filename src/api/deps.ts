import type { Logger } from 'pino';
import type { KitRole, StoredManifest } from '../archive/manifest.ts';
import type { ChangeLog, ChangeLogFilter } from '../changes/log.ts';
import type { Config } from '../config/schema.ts';
import type { Job, JobKind, JobRequest, JobState, Submitted } from '../jobs/job.ts';
import type { RestoreView } from '../restore/engine.ts';
import type { RestorePlan, RestoreRequest, StepName } from '../restore/plan.ts';
import type { VerificationRecord } from '../verify/record.ts';

/** A committed backup as the API shows it: its stored manifest and its last verification. */
export interface BackupEntry {
  manifest: StoredManifest;
  /** The record of the backup's last check; absent when it was never checked. */
  verification?: VerificationRecord;
  /** The recovery-kit roles the backup lacks; [] when its kit is complete. */
  kitMissing?: KitRole[];
  /** Dated further in the future than backup.maxClockSkewSeconds: never taken as latest. */
  futureDated?: true;
}

/**
 * Restores on this node (every instance serves them, leader or not: etcd is down during a
 * restore, so there may be no leader). apply and rollback check everything they can before a
 * job exists, and change nothing when a check fails.
 */
export interface RestoreApi {
  /** Validates and records a plan; for a dry run also submits its job. BadRequestError (naming the body field), NotFoundError (the backup), ConfigError (host state or a missing identity), ConflictError (another restore is unfinished). */
  plan(body: RestoreRequest, requestedBy: string): Promise<{ plan: RestorePlan; job?: Job }>;
  /** Oldest first. */
  list(): Promise<RestoreView[]>;
  /** NotFoundError. */
  get(id: string): Promise<RestoreView>;
  /** NotFoundError; BadRequestError on /body/confirmationToken or /body/through; ConfigError on /encryption/identityFile; ConflictError when done or rolled back. */
  apply(id: string, request: { confirmationToken: string; through?: StepName }, requestedBy: string): Promise<Submitted>;
  /** NotFoundError; BadRequestError on /body/confirmationToken; ConflictError for a dry run, a restore already rolled back, or a fresh control plane after kubeadm init. */
  rollback(id: string, request: { confirmationToken: string }, requestedBy: string): Promise<Submitted>;
}

/**
 * What the HTTP API needs from the daemon; the daemon implements it. Every method may throw a
 * typed error (src/errors/errors.ts), which the API maps to a status in one place.
 */
export interface ApiDeps {
  api: Config['api'];
  metricsListen: Config['metrics']['listen'];
  identity: { cluster: string; node: string; version: string };
  log: Logger;
  backups: {
    /** Newest first; `before` keeps backups created strictly before it. */
    list(options: { limit: number; before?: Date }): Promise<BackupEntry[]>;
    /** A backup id or `latest`; NotFoundError, UnsafePathError. */
    get(id: string): Promise<BackupEntry>;
    /** NotFoundError, ObjectLockedError, BackupProtectedError. */
    delete(id: string, requestedBy: string): Promise<void>;
  };
  jobs: {
    /** May throw ConflictError (an Idempotency-Key reused for another request, or shutting down). */
    submit(request: JobRequest): Submitted;
    get(id: string): Job | undefined;
    /** Newest first. */
    list(options: { limit: number; kind?: JobKind; state?: JobState }): Job[];
  };
  restores: RestoreApi;
  changes: {
    /** The committed change log, oldest first, at most `limit` events a page; ConfigError when no identity is configured, IntegrityError when the chain is broken. */
    log(filter: ChangeLogFilter, limit: number): Promise<ChangeLog>;
  };
  /** leaderApiUrl: where the leader's API is (from the election), for forwarding leader-only requests to it; absent or undefined: nothing is forwarded. */
  leadership: { isLeader(): boolean; leader(): string | undefined; leaderApiUrl?(): string | undefined };
  health: { ready(): { ready: boolean; reasons: string[] } };
  metrics: { render(): Promise<string>; contentType: string };
}
