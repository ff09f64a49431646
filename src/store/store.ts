import type { Readable } from 'node:stream';

/**
 * Where backups live. Keys are made by ./layout.ts. Implementations beside this file: the local
 * directory store (the embedded default) and, later, S3.
 *
 * Contract every implementation keeps:
 * - `put` is atomic: a key is visible to `stat`, `get` and `list` only once all its bytes are
 *   durably stored; a failed or aborted `put` leaves nothing visible, cleans up after itself,
 *   and destroys `body` so that whatever produces it stops too.
 * - `list` returns complete objects only, sorted by key.
 * - `get`, `stat` and `delete` of a missing key: NotFoundError, undefined, and no error.
 */
export interface ObjectInfo {
  key: string;
  size: number;
  modified: Date;
}

export interface PutOptions {
  signal?: AbortSignal;
}

export interface BackupStore {
  /** For logs and errors, e.g. `fs:/var/lib/lifeboat/backups`. Holds no secret. */
  readonly description: string;
  put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }>;
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): Promise<ObjectInfo[]>;
  delete(key: string): Promise<void>;
  /**
   * Removes writes that never completed (temp files, multipart uploads) under `prefix` that
   * started before `olderThan`, left by a process that died mid-`put`. Returns how many.
   */
  removeIncomplete(prefix: string, olderThan: Date): Promise<number>;
}
