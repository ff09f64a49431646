import type { Readable } from 'node:stream';
import { parseKey, parseSegmentKey } from '../store/layout.ts';
import type { BackupStore, ObjectInfo, PutOptions } from '../store/store.ts';

/**
 * The daemon's store, with leadership checked right before the writes that commit a leader's
 * decision: writing a manifest (a backup's commit, its second copy's, or a change-log segment's)
 * and deleting one (the step that removes a backup or a segment, which retention and DELETE take
 * first). The check is local and cheap (the election's term, see leader/term.ts), so it narrows
 * the window in which a leader that has just lost its term can still commit to the time one store
 * request takes; it does not close it (the store has no fencing token to check against).
 *
 * Not fenced: archive writes (never listed without a manifest; cleanup removes them), deletes
 * of anything but a manifest (an uncommitted archive, a deleted backup's remains), verification
 * records (the outcome of a check, whoever made it), reads, and cleanup of incomplete writes.
 * A manifest this fence refused was never written, so the failed backup's clean-up may delete it.
 */
export class FencedStore implements BackupStore {
  readonly #store: BackupStore;
  readonly #fence: () => void;
  readonly #refused = new Set<string>();

  /** `fence` throws (NotLeaderError) when the write must not happen now. */
  constructor(store: BackupStore, fence: () => void) {
    this.#store = store;
    this.#fence = fence;
  }

  get description(): string {
    return this.#store.description;
  }

  async put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }> {
    if (isManifest(key)) {
      try {
        this.#fence();
      } catch (err) {
        this.#refused.add(key);
        body.destroy();
        throw err;
      }
      this.#refused.delete(key);
    }
    return this.#store.put(key, body, options);
  }

  get(key: string): Promise<Readable> {
    return this.#store.get(key);
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.#store.stat(key);
  }

  list(prefix: string): Promise<ObjectInfo[]> {
    return this.#store.list(prefix);
  }

  async delete(key: string): Promise<void> {
    if (isManifest(key) && !this.#refused.delete(key)) this.#fence();
    return this.#store.delete(key);
  }

  removeIncomplete(prefix: string, olderThan: Date): Promise<number> {
    return this.#store.removeIncomplete(prefix, olderThan);
  }
}

function isManifest(key: string): boolean {
  return parseKey(key)?.kind === 'manifest' || parseSegmentKey(key)?.kind === 'manifest';
}
