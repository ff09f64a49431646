import { text } from 'node:stream/consumers';
import { parseStoredManifest, type StoredManifest } from '../archive/manifest.ts';
import { NotFoundError } from '../errors/errors.ts';
import { assertBackupId, backupsPrefix, manifestKey, parseKey } from './layout.ts';
import type { BackupStore } from './store.ts';

export interface CleanupResult {
  /** Archives without a manifest, deleted. */
  orphans: string[];
  /** Writes that never completed (temp files, multipart uploads), removed. */
  incomplete: number;
}

/**
 * The committed backups of one cluster in one store. A backup exists only if its manifest
 * object does: the manifest is written last and commits the backup.
 */
export class Catalog {
  readonly #store: BackupStore;
  readonly #cluster: string;

  constructor(store: BackupStore, cluster: string) {
    this.#store = store;
    this.#cluster = cluster;
  }

  /** Committed backups, newest first. */
  async list(): Promise<StoredManifest[]> {
    const objects = await this.#store.list(backupsPrefix(this.#cluster));
    const ids = objects
      .map((o) => parseKey(o.key))
      .filter((k) => k?.kind === 'manifest')
      .map((k) => k!.id)
      .sort()
      .reverse();
    return Promise.all(ids.map((id) => this.get(id)));
  }

  async get(id: string): Promise<StoredManifest> {
    const key = manifestKey(this.#cluster, assertBackupId(id));
    let body;
    try {
      body = await this.#store.get(key);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new NotFoundError(`no backup ${id} in cluster ${this.#cluster} (${this.#store.description})`, {
          hint: 'run `lifeboat list` to see the backups',
        });
      }
      throw err;
    }
    return parseStoredManifest(await text(body), key);
  }

  /** `latest` or a backup id. */
  async resolve(ref: string): Promise<StoredManifest> {
    if (ref !== 'latest') return this.get(ref);
    const [newest] = await this.list();
    if (!newest) throw new NotFoundError(`cluster ${this.#cluster} has no backups in ${this.#store.description}`);
    return newest;
  }

  /**
   * Deletes archives that have no manifest and are older than `olderThan` (a backup that died
   * before committing), and incomplete writes older than that. A backup running right now is
   * younger than the threshold and is left alone.
   */
  async cleanup(olderThan: Date): Promise<CleanupResult> {
    const prefix = backupsPrefix(this.#cluster);
    const incomplete = await this.#store.removeIncomplete(prefix, olderThan);
    const objects = await this.#store.list(prefix);
    const committed = new Set(objects.map((o) => parseKey(o.key)).filter((k) => k?.kind === 'manifest').map((k) => k!.id));
    const orphans: string[] = [];
    for (const o of objects) {
      const parsed = parseKey(o.key);
      if (parsed?.kind === 'archive' && !committed.has(parsed.id) && o.modified < olderThan) {
        await this.#store.delete(o.key);
        orphans.push(o.key);
      }
    }
    return { orphans, incomplete };
  }
}
