import type { Readable } from 'node:stream';

/**
 * Where backups live. Keys are made by ./layout.ts. Implementations beside this file: the local
 * directory store (the embedded default) and S3 (or Ceph RGW).
 *
 * Contract every implementation keeps:
 * - `put` is atomic: a key is visible to `stat`, `get` and `list` only once all its bytes are
 *   durably stored; a failed or aborted `put` leaves nothing visible, cleans up after itself,
 *   and destroys `body` so that whatever produces it stops too.
 * - `list` returns complete objects only, sorted by key.
 * - `get`, `stat` and `delete` of a missing key: NotFoundError, undefined, and no error.
 * - `delete` really deletes: afterwards nothing of the key is left to find or bill (on a
 *   versioned bucket: no version and no delete marker). An object still under Object Lock
 *   retention or legal hold is not deleted: ObjectLockedError, and the object stays readable.
 */
export interface ObjectInfo {
  key: string;
  size: number;
  modified: Date;
  /** Object Lock retention: the object cannot be deleted before this instant. S3 only. */
  retainUntil?: Date;
  /** Object Lock legal hold: the object cannot be deleted until the hold is lifted. S3 only. */
  legalHold?: boolean;
}

export interface PutOptions {
  signal?: AbortSignal;
  /**
   * This is a backup object (an archive or a manifest): apply the store's Object Lock retention
   * if one is configured. Stores without Object Lock ignore it.
   */
  retain?: boolean;
}

/** Whether `info` is still protected by Object Lock at `now`: retention in the future, or a legal hold. */
export function isLocked(info: Pick<ObjectInfo, 'retainUntil' | 'legalHold'>, now: Date): boolean {
  return info.legalHold === true || (info.retainUntil !== undefined && info.retainUntil.getTime() > now.getTime());
}

export interface BackupStore {
  /** For logs and errors, e.g. `fs:/var/lib/lifeboat/backups`. Holds no secret. */
  readonly description: string;
  /** Writes `key`; with `retain`, under the store's Object Lock retention (if configured). */
  put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }>;
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Removes `key` completely; ObjectLockedError (nothing deleted) while it is locked. */
  delete(key: string): Promise<void>;
  /**
   * Removes writes that never completed (temp files, multipart uploads) under `prefix` that
   * started before `olderThan`, left by a process that died mid-`put`. Returns how many.
   */
  removeIncomplete(prefix: string, olderThan: Date): Promise<number>;
}
