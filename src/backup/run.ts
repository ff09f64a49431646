import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { createCompressor, type CompressionSettings } from '../archive/compression.ts';
import { DigestStream } from '../archive/digest.ts';
import {
  FORMAT,
  FORMAT_VERSION,
  manifestJson,
  SNAPSHOT_ENTRY,
  type ArchiveManifest,
  type ManifestLink,
  type StoredManifest,
} from '../archive/manifest.ts';
import { archiveChunks, writeBlocks } from '../archive/writer.ts';
import { BUILD_INFO } from '../build-info.ts';
import type { Config } from '../config/schema.ts';
import { ClockSkewError, IntegrityError, LifeboatError, rootCause } from '../errors/errors.ts';
import { TRAILER_BYTES, type SnapshotSource } from '../etcd/source.ts';
import { checkedSnapshot, SnapshotChecker } from '../etcd/trailer.ts';
import { clusterConfigurationFromEtcd } from '../kit/cluster-config.ts';
import { collectKit } from '../kit/collect.ts';
import type { ManifestSigner } from '../signing/trust.ts';
import { archiveKey, formatBackupId, manifestKey, signatureKey } from '../store/layout.ts';
import type { BackupStore } from '../store/store.ts';

export interface BackupDeps {
  store: BackupStore;
  etcd: SnapshotSource;
  /** An age encryptor for these recipients. It must be done with each written chunk when the write calls back (it is fed reused blocks when there is no compression). */
  encrypt: (recipients: readonly string[]) => Transform;
  log: Logger;
  now: () => Date;
  /** Signs the manifest (signing.keyFile); undefined only when unsigned backups are allowed (see backupSigner). */
  signer: ManifestSigner | undefined;
  /** The newest committed backup, which the manifest links to (Catalog.newestLink). */
  previous: () => Promise<ManifestLink | undefined>;
  /** Told of each phase and of the snapshot bytes as they pass (the daemon's job record). */
  report?: BackupReporter;
}

export interface BackupReporter {
  phase(name: 'member-chosen' | 'kit-collected' | 'streaming' | 'committing' | 'committed'): void;
  /** Snapshot bytes read so far, of `total` (database + trailer). */
  progress(bytesDone: number, total: number): void;
  backupId(id: string): void;
}

export interface BackupSettings {
  cluster: string;
  node: string;
  kit: Config['kit'];
  compression: CompressionSettings;
  recipients: readonly string[];
  progressIntervalSeconds: number;
  /** The most this node's clock may be off from the store's (config backup.maxClockSkewSeconds). */
  maxClockSkewSeconds: number;
}

const MiB = 1024 * 1024;
/** The compressor is fed in blocks of this size (see writeBlocks). */
const WRITE_BLOCK = 1 * MiB;

/**
 * One backup: choose a member, read the kit, stream snapshot → tar → compress → encrypt → store,
 * check what was stored, then sign the manifest and write the signature and the manifest, which
 * commits the backup. Memory is bounded
 * and does not grow with the database: the gRPC window (4 MiB), one 1 MiB write block, the
 * zstd context and its output buffer, one 64 KiB age chunk, and the kit files (each capped).
 * Measured peak RSS with a 1.1 GiB database: about 150 MiB, of which about 66 MiB is Node
 * and gRPC at rest (scripts/bench-backup.ts; run Node with --max-semi-space-size=1).
 *
 * On any failure nothing is committed: the store removes its partial write, and an archive that
 * was stored but not committed is deleted, after the manifest if its put was tried (its answer
 * may have been lost after it landed).
 */
export async function runBackup(deps: BackupDeps, settings: BackupSettings, signal?: AbortSignal): Promise<StoredManifest> {
  const { store, etcd, log } = deps;
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);

  const report = deps.report;
  const member = await etcd.chooseMember();
  report?.phase('member-chosen');
  log.info({ phase: 'member-chosen', endpoint: member.endpoint, member: member.memberName, revision: member.revision, dbSize: member.dbSize, version: member.version, durationMs: elapsed() }, 'chose the etcd member to snapshot');

  const readKey = etcd.readKey?.bind(etcd);
  const kit = await collectKit(settings.kit, {
    clusterConfiguration: () => clusterConfigurationFromEtcd(readKey && ((key) => readKey(member, key)), member.revision, settings.kit.maxFileBytes),
  });
  const kitBytes = kit.files.reduce((n, f) => n + f.size, 0);
  log.info({ phase: 'kit-collected', files: kit.files.length, bytes: kitBytes, missing: kit.missing.map((m) => m.path), durationMs: elapsed() }, 'read the recovery kit');
  for (const m of kit.missing) log.warn({ path: m.path, role: m.role, reason: m.reason }, 'optional kit file missing; recorded in the manifest');
  for (const f of kit.files) if (f.source?.from === 'configmap') log.info({ path: f.path, role: f.role, source: f.source }, `the ${f.role} was read from ConfigMap ${f.source.namespace}/${f.source.name} at revision ${f.source.revision}`);
  report?.phase('kit-collected');

  const snapshot = await etcd.openSnapshot(member, signal);
  const createdAt = deps.now();
  const id = formatBackupId(createdAt, member.revision);
  const manifest: ArchiveManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    backupId: id,
    cluster: settings.cluster,
    node: settings.node,
    createdAt: createdAt.toISOString(),
    tool: { name: BUILD_INFO.name, version: BUILD_INFO.version },
    etcd: { ...member, dbSize: snapshot.dbSize },
    snapshot: { entry: SNAPSHOT_ENTRY, size: snapshot.dbSize + TRAILER_BYTES },
    kit: { hostRoot: settings.kit.hostRoot, files: kit.files, missing: kit.missing },
  };
  const key = archiveKey(settings.cluster, id, settings.compression.algorithm);
  log.info({ phase: 'snapshot-started', backupId: id, key, dbSize: snapshot.dbSize, store: store.description, durationMs: elapsed() }, 'streaming the snapshot into the archive');
  report?.backupId(id);
  report?.phase('streaming');

  const checker = new SnapshotChecker(snapshot.dbSize);
  const total = snapshot.dbSize + TRAILER_BYTES;
  const counted = report ? tap(checkedSnapshot(snapshot.chunks, checker), () => report.progress(checker.bytes, total)) : checkedSnapshot(snapshot.chunks, checker);
  const archive = archiveChunks({ manifest, kit: kit.contents, snapshot: counted });
  const compressor = createCompressor(settings.compression);
  const encryptor = deps.encrypt(settings.recipients);
  const stored = new DigestStream();
  // The first stage is fed reused blocks: the compressor, or else the encryptor (both copy their input).
  const first = compressor ?? encryptor;
  const stages = [...(compressor ? [compressor] : []), encryptor, stored];

  const streamStart = performance.now();
  const progress = setInterval(() => {
    const seconds = (performance.now() - streamStart) / 1000;
    log.info({ phase: 'streaming', backupId: id, snapshotBytes: checker.bytes, dbSize: snapshot.dbSize, percent: Math.floor((100 * checker.bytes) / Math.max(1, total)), storedBytes: stored.bytes, mibPerSecond: round1(checker.bytes / MiB / seconds) }, 'backup in progress');
  }, settings.progressIntervalSeconds * 1000);
  progress.unref();

  let archiveWritten = false;
  let manifestTried = false;
  try {
    const [fed, produced, put] = await Promise.allSettled([
      writeBlocks(archive, first, WRITE_BLOCK),
      pipeline(stages, signal ? { signal } : {}),
      store.put(key, stored, { retain: true, ...(signal ? { signal } : {}) }),
    ]);
    if (fed.status === 'rejected' || produced.status === 'rejected' || put.status === 'rejected') {
      throw rootCause([fed, produced, put]);
    }
    archiveWritten = true;
    const seconds = (performance.now() - streamStart) / 1000;
    const digest = checker.digest;
    if (!digest) throw new IntegrityError('the snapshot stream ended without its sha256 trailer being checked');
    const object = await store.stat(key);
    if (!object || object.size !== stored.bytes || put.value.size !== stored.bytes) {
      throw new IntegrityError(`stored archive ${key} is ${object?.size ?? 'missing'} bytes, expected ${stored.bytes}`);
    }
    checkClock(key, object.modified, createdAt, deps.now(), settings.maxClockSkewSeconds);
    report?.phase('committing');
    log.info({ phase: 'archive-stored', backupId: id, snapshotBytes: checker.bytes, storedBytes: stored.bytes, ratio: round1(checker.bytes / Math.max(1, stored.bytes)), seconds: round1(seconds), mibPerSecond: round1(checker.bytes / MiB / seconds), durationMs: elapsed() }, 'archive stored and checked');

    const committed: StoredManifest = {
      ...manifest,
      snapshot: { ...manifest.snapshot, sha256: digest.sha256, dbSha256: digest.dbSha256 },
      archive: {
        key,
        size: stored.bytes,
        sha256: stored.digest(),
        compression: { ...settings.compression },
        encryption: { format: 'age', recipients: [...settings.recipients] },
      },
      completedAt: deps.now().toISOString(),
    };
    const previous = await deps.previous();
    if (previous) committed.previous = previous;
    const bytes = Buffer.from(manifestJson(committed));
    manifestTried = true;
    if (deps.signer) await store.put(signatureKey(settings.cluster, id), Readable.from([deps.signer.sign(bytes)]), { retain: true });
    await store.put(manifestKey(settings.cluster, id), Readable.from([bytes]), { retain: true });
    log.info({ phase: 'committed', backupId: id, revision: member.revision, storedBytes: stored.bytes, signedBy: deps.signer?.keyId, previous: previous?.backupId, durationMs: elapsed() }, 'backup committed');
    report?.phase('committed');
    return committed;
  } catch (err) {
    await removeUncommitted(store, log, manifestTried ? [manifestKey(settings.cluster, id), signatureKey(settings.cluster, id)] : [], key, archiveWritten);
    log.error({ phase: 'failed', backupId: id, snapshotBytes: checker.bytes, durationMs: elapsed(), code: (err as LifeboatError).code, err: (err as Error).message }, 'backup failed; nothing was committed');
    throw err;
  } finally {
    clearInterval(progress);
  }
}

/**
 * Refuses to commit a backup made while this node's clock is off from the store's by more than
 * `maxSkewSeconds`: its id and createdAt come from this node's clock, and a backup dated in the
 * future would stay "latest". etcd offers no clock to compare with (its gRPC responses carry no
 * time), so the reference is the store's clock: the archive's modification time as the store
 * stamped it. For S3 that is the server's Last-Modified (1 s resolution); for a local directory
 * it is this node's own clock (NFS: the server's), so the check can only catch a skew against
 * a remote store. The store stamped the archive between `createdAt` and `now` by this node's
 * clock; outside that window widened by the bound, the clocks disagree.
 */
function checkClock(key: string, storedAt: Date, createdAt: Date, now: Date, maxSkewSeconds: number): void {
  const bound = maxSkewSeconds * 1000;
  const ahead = createdAt.getTime() - storedAt.getTime();
  const behind = storedAt.getTime() - now.getTime();
  if (ahead <= bound && behind <= bound) return;
  const skew = Math.round(Math.max(ahead, behind) / 1000);
  throw new ClockSkewError(
    `this node's clock is about ${skew} s ${ahead > bound ? 'ahead of' : 'behind'} the store's, more than backup.maxClockSkewSeconds (${maxSkewSeconds}): the store stamped ${key} at ${storedAt.toISOString()}, while this node made it between ${createdAt.toISOString()} and ${now.toISOString()}`,
    { hint: "fix this node's time (NTP, chrony), then back up again; a backup dated by a wrong clock would be taken for the newest or the oldest" },
  );
}

/**
 * After a failed backup: the manifest and its signature first (a put whose answer was lost may
 * have landed, and a listed backup must keep its archive), then the archive, only once no
 * manifest can point at it.
 */
async function removeUncommitted(store: BackupStore, log: Logger, commit: readonly string[], archive: string, archiveWritten: boolean): Promise<void> {
  for (const key of commit) {
    try {
      await store.delete(key);
    } catch (err) {
      log.error({ key, err: String(err) }, 'could not delete the manifest or signature of the failed backup; its archive is kept');
      return;
    }
  }
  if (archiveWritten) {
    await store.delete(archive).catch((err: unknown) => log.error({ key: archive, err: String(err) }, 'could not delete the uncommitted archive; cleanup will remove it'));
  }
}

async function* tap(chunks: AsyncIterable<Buffer>, see: () => void): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    yield chunk;
    see();
  }
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
