import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { missingKitRoles, type KitRole, type ManifestLink, type StoredManifest } from '../archive/manifest.ts';
import { ArchiveError, IntegrityError, NotFoundError, ObjectLockedError, SignatureError } from '../errors/errors.ts';
import type { ManifestTrust } from '../signing/trust.ts';
import { readTrustedManifest, type TrustedManifest } from './trusted-manifest.ts';
import { parseVerificationRecord, verificationRecordJson, withLevel, type VerificationRecord } from '../verify/record.ts';
import { assertBackupId, backupPrefix, backupsPrefix, committedIds, manifestKey, parseBackupId, parseKey, verificationKey, type ParsedKey } from './layout.ts';
import { isLocked, type BackupStore, type ObjectInfo } from './store.ts';

export interface CleanupResult {
  /** Objects of backups without a manifest, deleted: archives, and verification records. */
  orphans: string[];
  /**
   * Archives without a manifest that are still under Object Lock: left, to be removed by a later
   * cleanup once the lock ends. Present only when there are some.
   */
  locked?: string[];
  /** Writes that never completed (temp files, multipart uploads), removed. */
  incomplete: number;
}

/** A committed backup and the record of its last check, if it was ever checked. */
export interface CatalogEntry {
  manifest: StoredManifest;
  verification?: VerificationRecord;
  /** The kit roles the backup lacks (see manifest.kit.missing for why); [] when its kit is complete. */
  kitMissing: KitRole[];
  /** Dated (by its id or createdAt) further in the future than the clock bound: never taken as latest. Present only when true. */
  futureDated?: true;
}

/** Why a backup cannot be deleted yet: the object of it that is locked the longest. */
export interface BackupLock {
  key: string;
  /** The latest retain-until date of the backup's objects; absent for a legal hold alone. */
  retainUntil?: Date;
  legalHold?: boolean;
}

export type ChainStatus = { state: 'linked' | 'previous-gone'; previous: string } | { state: 'unlinked' };

/** A committed backup whose manifest was refused: unsigned, badly signed, invalid or misplaced. */
export interface RejectedBackup {
  backupId: string;
  error: SignatureError | ArchiveError;
}

export interface CatalogOptions {
  /** Decides which manifests are accepted (config `signing`): every read goes through it. */
  trust: ManifestTrust;
  /** The clock that decides whether a retention has expired, and which backups are dated in the future. */
  now?: () => Date;
  /**
   * A backup dated more than this after `now` is future-dated (config backup.maxClockSkewSeconds;
   * default 300): made by a clock that ran ahead, or forged. It is flagged, and never latest.
   */
  maxClockSkewSeconds?: number;
  /** Told the future-dated backup ids (maybe none) each time the whole catalogue is listed (the daemon's metric). */
  onFutureDated?: (ids: readonly string[]) => void;
  /** Told the refused backups (maybe none) each time the whole catalogue is listed. */
  onRejected?: (rejected: readonly RejectedBackup[]) => void;
}


const DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300;

/** Store requests a catalogue has in flight at once when it reads many objects. */
const READ_CONCURRENCY = 8;

/**
 * The committed backups of one cluster in one store. A backup exists only if its manifest
 * object does: the manifest is written last and commits the backup. Beside it the catalogue
 * keeps the record of each backup's last check (verification.json).
 */
export class Catalog {
  readonly #store: BackupStore;
  readonly #cluster: string;
  readonly #now: () => Date;
  readonly #maxSkewMs: number;
  readonly #onFutureDated: ((ids: readonly string[]) => void) | undefined;
  readonly #onRejected: ((rejected: readonly RejectedBackup[]) => void) | undefined;
  readonly #trust: ManifestTrust;
  readonly #manifests = new Map<string, TrustedManifest>();

  constructor(store: BackupStore, cluster: string, options: CatalogOptions) {
    this.#store = store;
    this.#cluster = cluster;
    this.#trust = options.trust;
    this.#now = options.now ?? (() => new Date());
    this.#maxSkewMs = (options.maxClockSkewSeconds ?? DEFAULT_MAX_CLOCK_SKEW_SECONDS) * 1000;
    this.#onFutureDated = options.onFutureDated;
    this.#onRejected = options.onRejected;
  }

  /** What this catalogue accepts: a copy of its backups elsewhere checks with the same trust. */
  get trust(): ManifestTrust {
    return this.#trust;
  }

  /** Committed backups whose manifests are accepted, newest first; refused ones are left out (see onRejected). */
  async list(): Promise<StoredManifest[]> {
    const ids = await this.#committed();
    const read = await mapLimit(ids, READ_CONCURRENCY, (id) => this.#accepted(id));
    this.#onRejected?.(read.filter((r): r is RejectedBackup => 'error' in r));
    return read.flatMap((r) => ('manifest' in r ? [r.manifest] : []));
  }

  /** The manifest of `id`, or why it is refused; other errors (the store's) are thrown. */
  async #accepted(id: string): Promise<TrustedManifest | RejectedBackup> {
    try {
      return await this.trusted(id);
    } catch (err) {
      if (err instanceof SignatureError || err instanceof ArchiveError) return { backupId: id, error: err };
      throw err;
    }
  }

  /**
   * Committed backups with the record of their last check, newest first: all of them, or the
   * newest `limit` made before `before` (a backup's id carries its creation time, so only the
   * page is read).
   */
  async entries(options: { limit?: number; before?: Date } = {}): Promise<CatalogEntry[]> {
    const objects = await this.#store.list(backupsPrefix(this.#cluster));
    const recorded = new Set(objects.map((o) => parseKey(o.key)).filter((k) => k?.kind === 'verification').map((k) => k!.id));
    const { before } = options;
    const ids = this.#forget(committedIds(objects))
      .filter((id) => before === undefined || parseBackupId(id)!.createdAt < before)
      .slice(0, options.limit);
    const limit = this.#now().getTime() + this.#maxSkewMs;
    const read = await mapLimit(ids, READ_CONCURRENCY, async (id): Promise<CatalogEntry | RejectedBackup> => {
      const accepted = await this.#accepted(id);
      if ('error' in accepted) return accepted;
      const { manifest } = accepted;
      const verification = recorded.has(id) ? await this.verification(id) : undefined;
      return { manifest, ...(verification ? { verification } : {}), kitMissing: missingKitRoles(manifest), ...(isFutureDated(manifest, limit) ? { futureDated: true } : {}) };
    });
    const entries = read.filter((e): e is CatalogEntry => 'manifest' in e);
    if (options.limit === undefined && before === undefined) {
      this.#onFutureDated?.(entries.filter((e) => e.futureDated).map((e) => e.manifest.backupId));
      this.#onRejected?.(read.filter((r): r is RejectedBackup => 'error' in r));
    }
    return entries;
  }

  /** A committed backup's manifest, once its signature and location are checked (see trusted). */
  async get(id: string): Promise<StoredManifest> {
    return (await this.trusted(id)).manifest;
  }

  /**
   * A committed backup's manifest with how it is signed. Before it is parsed, its signature is
   * checked (SignatureError); then its id, cluster and archive key must be where it is stored
   * (ArchiveError). A manifest is written once, as the commit, and never changes, so each is
   * read from the store once per catalogue.
   */
  async trusted(id: string): Promise<TrustedManifest> {
    const known = this.#manifests.get(id);
    if (known) return known;
    const trusted = await readTrustedManifest(this.#store, this.#cluster, this.#trust, assertBackupId(id));
    this.#manifests.set(id, trusted);
    return trusted;
  }

  /** The link a new backup's manifest carries: the newest committed backup that is accepted. */
  async newestLink(): Promise<ManifestLink | undefined> {
    for (const id of await this.#committed()) {
      const accepted = await this.#accepted(id);
      if ('manifest' in accepted) return { backupId: id, sha256: accepted.sha256 };
    }
    return undefined;
  }

  /**
   * Where backup `id` stands in the chain of manifests: `linked` when the backup it names as
   * previous is here with the same manifest bytes; `previous-gone` when that backup was deleted
   * (retention deletes too); `unlinked` for a first backup, or one made before the chain. A
   * previous backup whose manifest differs from what `id` recorded is an IntegrityError: a
   * manifest was swapped.
   */
  async chainOf(id: string): Promise<ChainStatus> {
    const { previous } = (await this.trusted(id)).manifest;
    if (!previous) return { state: 'unlinked' };
    let before: TrustedManifest;
    try {
      before = await this.trusted(previous.backupId);
    } catch (err) {
      if (err instanceof NotFoundError) return { state: 'previous-gone', previous: previous.backupId };
      throw err;
    }
    if (before.sha256 !== previous.sha256) {
      throw new IntegrityError(`backup ${id} follows backup ${previous.backupId} with manifest sha256 ${previous.sha256}, but that manifest now has sha256 ${before.sha256}: a manifest was replaced`, {
        hint: 'do not trust either until you know who changed the store; `lifeboat list` shows the chain',
      });
    }
    return { state: 'linked', previous: previous.backupId };
  }

  /**
   * `latest` or a backup id. Latest is the newest backup that is not future-dated: a clock that
   * ran ahead must not pin "latest" (and what is measured from it) for ever.
   */
  async resolve(ref: string): Promise<StoredManifest> {
    if (ref !== 'latest') return this.get(ref);
    const ids = await this.#committed();
    if (ids.length === 0) throw new NotFoundError(`cluster ${this.#cluster} has no backups in ${this.#store.description}`);
    const limit = this.#now().getTime() + this.#maxSkewMs;
    for (const id of ids) {
      if (parseBackupId(id)!.createdAt.getTime() > limit) continue;
      const accepted = await this.#accepted(id);
      if ('manifest' in accepted && !isFutureDated(accepted.manifest, limit)) return accepted.manifest;
    }
    throw new NotFoundError(`cluster ${this.#cluster} has no backup that is accepted and not dated in the future (after ${new Date(limit).toISOString()}) in ${this.#store.description}`, {
      hint: "`lifeboat verify` names what is wrong with each; check the signing keys, and the clocks of the nodes that made them",
    });
  }

  /** The record of the last check of backup `id`; undefined if it was never checked. */
  async verification(id: string): Promise<VerificationRecord | undefined> {
    const key = verificationKey(this.#cluster, assertBackupId(id));
    let body;
    try {
      body = await this.#store.get(key);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
    const record = parseVerificationRecord(await text(body), key);
    if (record.backupId !== id) {
      throw new ArchiveError(`verification record ${key} is of backup ${record.backupId}, not ${id}`, { hint: `run \`lifeboat verify ${id}\` to rewrite it` });
    }
    return record;
  }

  /**
   * Stores `record` as the last check of its backup, which must be committed, and as the newest
   * result of its level (the results of the other levels carry over, see ../verify/record.ts).
   * When it failed, the time and level of the last check that passed carry over from the
   * previous record; a previous record that cannot be read is replaced. Returns what was stored.
   */
  async recordVerification(record: VerificationRecord): Promise<VerificationRecord> {
    const id = assertBackupId(record.backupId);
    if (!(await this.#store.stat(manifestKey(this.#cluster, id)))) {
      throw new NotFoundError(`no backup ${id} in cluster ${this.#cluster} (${this.#store.description}) to record a verification for`);
    }
    const { lastPassedAt: _at, lastPassedLevel: _level, levels: _levels, ...check } = record;
    const previous = await this.verification(id).catch((err: unknown) => {
      if (err instanceof ArchiveError) return undefined;
      throw err;
    });
    const levels = withLevel(previous, check);
    let stored: VerificationRecord;
    if (record.result === 'passed') {
      stored = { ...check, lastPassedAt: record.at, lastPassedLevel: record.level, levels };
    } else {
      const passed = previous?.result === 'passed' ? { at: previous.at, level: previous.level } : previous?.lastPassedAt && previous.lastPassedLevel ? { at: previous.lastPassedAt, level: previous.lastPassedLevel } : undefined;
      stored = passed ? { ...check, lastPassedAt: passed.at, lastPassedLevel: passed.level, levels } : { ...check, levels };
    }
    await this.#store.put(verificationKey(this.#cluster, id), Readable.from([Buffer.from(verificationRecordJson(stored))]));
    return stored;
  }

  /**
   * Whether backup `id` is still under Object Lock (retention in the future, or a legal hold on
   * its archive, its manifest or, with a bucket default retention, its verification record):
   * then the lock that holds it longest; else undefined.
   */
  async lockOf(id: string): Promise<BackupLock | undefined> {
    return this.#lockOf(await this.#objectsOf(id));
  }

  /**
   * Deletes backup `id` completely. Refuses with ObjectLockedError, deleting nothing, while any
   * of its objects is locked (see lockOf). Otherwise deletes the manifest first (so the backup stops
   * being listed at once), then the archive, then the verification record: a failure part way
   * leaves at worst an uncommitted archive, which cleanup removes, and a retry finishes it.
   */
  async deleteBackup(id: string): Promise<void> {
    const objects = await this.#objectsOf(id);
    if (objects.length === 0) throw new NotFoundError(`no backup ${id} in cluster ${this.#cluster} (${this.#store.description})`);
    const lock = await this.#lockOf(objects);
    if (lock) {
      const until = lock.retainUntil && lock.retainUntil > this.#now() ? `under Object Lock retention until ${lock.retainUntil.toISOString()}` : '';
      const held = lock.legalHold ? 'under an Object Lock legal hold' : '';
      throw new ObjectLockedError(lock.key, lock, `backup ${id} is ${[until, held].filter(Boolean).join(' and ')} (${lock.key}); it can be deleted once that ends`);
    }
    const order: Record<ParsedKey['kind'], number> = { manifest: 0, signature: 1, archive: 2, verification: 3 };
    const keys = objects.sort((a, b) => order[a.kind]! - order[b.kind]!).map((o) => o.key);
    this.#manifests.delete(id);
    for (const key of keys) await this.#store.delete(key);
  }

  /**
   * Deletes archives that have no manifest and are older than `olderThan` (a backup that died
   * before committing), and incomplete writes older than that. A backup running right now is
   * younger than the threshold and is left alone. An orphan still under Object Lock is left
   * (and reported) until its retention ends. Verification records of backups that no longer
   * exist are deleted too.
   */
  async cleanup(olderThan: Date): Promise<CleanupResult> {
    const prefix = backupsPrefix(this.#cluster);
    const incomplete = await this.#store.removeIncomplete(prefix, olderThan);
    const objects = await this.#store.list(prefix);
    const committed = new Set(committedIds(objects));
    const orphans: string[] = [];
    const locked: string[] = [];
    for (const o of objects) {
      const parsed = parseKey(o.key);
      if (!parsed || committed.has(parsed.id)) continue;
      // A signature is written just before its manifest: one of a backup in progress is young.
      if (parsed.kind === 'verification' || ((parsed.kind === 'archive' || parsed.kind === 'signature') && o.modified < olderThan)) {
        try {
          await this.#store.delete(o.key);
          orphans.push(o.key);
        } catch (err) {
          if (!(err instanceof ObjectLockedError)) throw err;
          locked.push(o.key);
        }
      }
    }
    return { orphans, ...(locked.length > 0 ? { locked } : {}), incomplete };
  }

  /** The committed backup ids in the store now, newest first. */
  async #committed(): Promise<string[]> {
    return this.#forget(committedIds(await this.#store.list(backupsPrefix(this.#cluster))));
  }

  /** Drops the cached manifests of backups no longer in `ids` (deleted by another process). */
  #forget(ids: string[]): string[] {
    const present = new Set(ids);
    for (const id of this.#manifests.keys()) if (!present.has(id)) this.#manifests.delete(id);
    return ids;
  }

  /** The objects this layout makes for backup `id`, as they are now. */
  async #objectsOf(id: string): Promise<(ObjectInfo & { kind: ParsedKey['kind'] })[]> {
    const objects = await this.#store.list(backupPrefix(this.#cluster, assertBackupId(id)));
    return objects.flatMap((o) => {
      const parsed = parseKey(o.key);
      return parsed && parsed.id === id ? [{ ...o, kind: parsed.kind }] : [];
    });
  }

  async #lockOf(objects: (ObjectInfo & { kind: ParsedKey['kind'] })[]): Promise<BackupLock | undefined> {
    const now = this.#now();
    const infos = await mapLimit(objects, READ_CONCURRENCY, (o) => this.#store.stat(o.key));
    let lock: BackupLock | undefined;
    for (const info of infos) {
      if (!info || !isLocked(info, now)) continue;
      const retainUntil = info.retainUntil && info.retainUntil > now ? info.retainUntil : undefined;
      const later = retainUntil && (!lock?.retainUntil || retainUntil > lock.retainUntil);
      const legalHold = (lock?.legalHold ?? false) || info.legalHold === true;
      if (!lock || later) lock = { key: info.key, ...(retainUntil ? { retainUntil } : {}) };
      if (legalHold) lock.legalHold = true;
    }
    return lock;
  }
}

/** Whether a backup is dated after `limitMs` (epoch ms), by its id or by its manifest's createdAt. */
function isFutureDated(manifest: StoredManifest, limitMs: number): boolean {
  const byId = parseBackupId(manifest.backupId)?.createdAt.getTime() ?? 0;
  const created = Date.parse(manifest.createdAt);
  return byId > limitMs || (Number.isFinite(created) && created > limitMs);
}

/** `fn` over `items` with at most `limit` calls in flight; results in the order of `items`. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
