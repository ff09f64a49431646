import type { Logger } from 'pino';
import type { StoredManifest } from '../archive/manifest.ts';
import type { Config } from '../config/schema.ts';
import type { Job, JobKind, JobRequest, JobState, Submitted } from '../jobs/job.ts';
import type { VerificationRecord } from '../verify/record.ts';

/** A committed backup as the API shows it: its stored manifest and its last verification. */
export interface BackupEntry {
  manifest: StoredManifest;
  /** The record of the backup's last check; absent when it was never checked. */
  verification?: VerificationRecord;
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
  leadership: { isLeader(): boolean; leader(): string | undefined };
  health: { ready(): { ready: boolean; reasons: string[] } };
  metrics: { render(): Promise<string>; contentType: string };
}
