import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { DigestStream } from '../archive/digest.ts';
import type { StoredManifest } from '../archive/manifest.ts';
import { checkCiphertext } from '../archive/reader.ts';
import { ArchiveError, CancelledError, describeError, IntegrityError, LifeboatError, rootCause, StoreError, type ErrorCode } from '../errors/errors.ts';
import type { ManifestTrust } from '../signing/trust.ts';
import { Catalog } from '../store/catalog.ts';
import type { TrustedManifest } from '../store/trusted-manifest.ts';
import { assertBackupId, backupsPrefix, committedIds, manifestKey, parseKey, signatureKey } from '../store/layout.ts';
import type { BackupStore, PutOptions } from '../store/store.ts';

/**
 * The second copy: committed backups of one store copied to another (another bucket, zone or
 * endpoint) with the same commit protocol as a backup. For each backup the archive is streamed
 * source.get → sha256 → target.put, its size and sha256 are checked against the manifest, and
 * only then are the manifest's signature and the manifest written, byte for byte, which commits
 * the copy. Only manifests the trust accepts are copied. Any failure leaves no manifest and
 * no archive at the target (a put that fails removes its partial write; an archive that was
 * written but not committed is deleted).
 *
 * Memory does not grow with the archive: one backup is copied at a time, and the bytes in flight
 * are bounded by the target's put (S3: (queueSize + 1) x partSize; a directory: one stream buffer) plus
 * the source stream's buffer.
 */
export interface ReplicateDeps {
  source: BackupStore;
  target: BackupStore;
  /** Which source manifests are accepted (config `signing`). */
  trust: ManifestTrust;
  log: Logger;
}

export interface ReplicateOptions {
  /** Only these backup ids (default: every committed backup of the source). */
  ids?: readonly string[];
  signal?: AbortSignal;
}

export interface CopiedBackup {
  id: string;
  /** Archive bytes copied. */
  bytes: number;
  seconds: number;
}

export interface FailedBackup {
  id: string;
  code: ErrorCode;
  /** One line, with what to do next when known. */
  message: string;
}

export interface ReplicateReport {
  copied: CopiedBackup[];
  /** Already committed at the target, with its archive: nothing to do. */
  present: string[];
  failed: FailedBackup[];
}

export type ReplicaOutcome = ({ status: 'copied' } & CopiedBackup) | { status: 'present'; id: string };

/**
 * Copies every committed backup of `cluster` in the source (or only `options.ids`) that the
 * target lacks, newest first, one at a time. A backup that fails is reported in `failed` and
 * the others are still copied; only cancellation (`options.signal`) stops the run, with a
 * CancelledError, after cleaning up the copy in progress.
 */
export async function replicate(deps: ReplicateDeps, cluster: string, options: ReplicateOptions = {}): Promise<ReplicateReport> {
  const { source, target, log } = deps;
  const started = performance.now();
  const wanted = options.ids ? new Set(options.ids.map(assertBackupId)) : undefined;
  const [sourceObjects, targetObjects] = await Promise.all([source.list(backupsPrefix(cluster)), target.list(backupsPrefix(cluster))]);
  const sourceIds = committedIds(sourceObjects);
  const targetObjectsByKey = new Map(targetObjects.map((o) => [o.key, o]));
  const targetIds = new Set(committedIds(targetObjects));
  const report: ReplicateReport = { copied: [], present: [], failed: [] };
  for (const id of wanted ?? []) {
    if (!sourceIds.includes(id)) {
      report.failed.push({ id, code: 'NOT_FOUND', message: `no backup ${id} in cluster ${cluster} (${source.description})` });
    }
  }
  const ids = sourceIds.filter((id) => !wanted || wanted.has(id));
  log.info({ phase: 'replicate-planned', cluster, source: source.description, target: target.description, backups: ids.length, committedAtTarget: ids.filter((id) => targetIds.has(id)).length }, 'copying the backups the second store lacks');

  const catalog = new Catalog(source, cluster, { trust: deps.trust });
  for (const id of ids) {
    if (options.signal?.aborted) throw cancelled(report, target);
    try {
      const trusted = await catalog.trusted(id);
      const { manifest } = trusted;
      if (targetIds.has(id) && targetObjectsByKey.get(manifest.archive.key)?.size === manifest.archive.size) {
        report.present.push(id);
        continue;
      }
      if (targetIds.has(id)) log.warn({ phase: 'replica-incomplete', backupId: id, target: target.description, key: manifest.archive.key }, 'the second store has the manifest but not the whole archive; copying it again');
      report.copied.push(await copyBackup(deps, cluster, trusted, options.signal));
    } catch (err) {
      if (options.signal?.aborted) throw cancelled(report, target);
      const failure = err instanceof LifeboatError ? err : new StoreError(describeError(err), { cause: err });
      report.failed.push({ id, code: failure.code, message: describeError(failure) });
    }
  }
  const bytes = report.copied.reduce((n, c) => n + c.bytes, 0);
  const summary = { phase: 'replicate-finished', cluster, target: target.description, copied: report.copied.length, bytes, present: report.present.length, failed: report.failed.map((f) => f.id), durationMs: Math.round(performance.now() - started) };
  if (report.failed.length > 0) log.error(summary, 'some backups could not be copied to the second store');
  else log.info(summary, 'the second store has every backup');
  return report;
}

/**
 * Copies one committed backup (as just written by a backup run) to the target, unless the
 * target already has it committed with its whole archive. Throws the failure (a typed error),
 * after removing whatever the failed copy wrote.
 */
export async function replicateOne(deps: ReplicateDeps, cluster: string, manifest: StoredManifest, options: { signal?: AbortSignal } = {}): Promise<ReplicaOutcome> {
  const id = manifest.backupId;
  const [committed, archive] = await Promise.all([deps.target.stat(manifestKey(cluster, id)), deps.target.stat(manifest.archive.key)]);
  if (committed && archive?.size === manifest.archive.size) {
    deps.log.info({ phase: 'replica-present', backupId: id, target: deps.target.description }, 'the second store already has this backup');
    return { status: 'present', id };
  }
  const trusted = await new Catalog(deps.source, cluster, { trust: deps.trust }).trusted(id);
  return { status: 'copied', ...(await copyBackup(deps, cluster, trusted, options.signal)) };
}

function cancelled(report: ReplicateReport, target: BackupStore): CancelledError {
  return new CancelledError(`copying to ${target.description} cancelled after ${report.copied.length} backups`);
}

function putOptions(signal: AbortSignal | undefined): PutOptions {
  // `retain`: an Object Lock store keeps the copy under retention like the original.
  return { retain: true, ...(signal ? { signal } : {}) };
}

async function copyBackup(deps: ReplicateDeps, cluster: string, trusted: TrustedManifest, signal: AbortSignal | undefined): Promise<CopiedBackup> {
  const { source, target, log } = deps;
  const { manifest } = trusted;
  const id = manifest.backupId;
  const key = manifest.archive.key;
  const parsed = parseKey(key);
  if (manifest.cluster !== cluster || parsed?.kind !== 'archive' || parsed.cluster !== cluster || parsed.id !== id) {
    throw new ArchiveError(`the manifest of backup ${id} names archive "${key}", which is not an archive key of backup ${id} in cluster ${cluster}`, {
      hint: 'the manifest was changed; verify the backup in the source store',
    });
  }
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  log.info({ phase: 'replicate-started', backupId: id, key, bytes: manifest.archive.size, source: source.description, target: target.description }, 'copying the archive to the second store');

  let archiveWritten = false;
  let manifestTried = false;
  try {
    const body = await source.get(key);
    const digest = new DigestStream();
    const [read, put] = await Promise.allSettled([
      pipeline(body, digest, signal ? { signal } : {}),
      target.put(key, digest, putOptions(signal)),
    ]);
    archiveWritten = put.status === 'fulfilled';
    if (read.status === 'rejected' || put.status === 'rejected') throw rootCause([read, put]);
    checkCiphertext(manifest, { size: digest.bytes, sha256: digest.digest() });
    if (put.value.size !== manifest.archive.size) {
      throw new IntegrityError(`the copy of ${key} at ${target.description} is ${put.value.size} bytes, expected ${manifest.archive.size}`);
    }
    const seconds = (performance.now() - started) / 1000;
    log.info({ phase: 'archive-copied', backupId: id, bytes: digest.bytes, seconds: round1(seconds), mibPerSecond: round1(digest.bytes / 1048576 / Math.max(seconds, 0.001)), durationMs: elapsed() }, 'archive copied; size and sha256 match the manifest');

    manifestTried = true;
    if (trusted.signature) await target.put(signatureKey(cluster, id), quiet(Readable.from([trusted.signature])), putOptions(signal));
    await target.put(manifestKey(cluster, id), quiet(Readable.from([trusted.bytes])), putOptions(signal));
    log.info({ phase: 'replicated', backupId: id, bytes: digest.bytes, target: target.description, durationMs: elapsed() }, 'copy committed in the second store');
    return { id, bytes: digest.bytes, seconds: round1((performance.now() - started) / 1000) };
  } catch (err) {
    await removeCopy(deps, cluster, id, key, archiveWritten, manifestTried);
    log.error({ phase: 'replicate-failed', backupId: id, target: target.description, code: (err as LifeboatError).code, err: describeError(err), durationMs: elapsed() }, 'copy failed; nothing was committed in the second store');
    throw err;
  }
}

/**
 * After a failed copy: the manifest and its signature first (a put whose answer was lost may have landed), and the
 * archive only once no manifest can point at it.
 */
async function removeCopy(deps: ReplicateDeps, cluster: string, id: string, key: string, archiveWritten: boolean, manifestTried: boolean): Promise<void> {
  const { target, log } = deps;
  for (const commit of manifestTried ? [manifestKey(cluster, id), signatureKey(cluster, id)] : []) {
    try {
      await target.delete(commit);
    } catch (err) {
      log.error({ backupId: id, key: commit, err: describeError(err) }, 'could not delete the manifest or signature of the failed copy; its archive is kept');
      return;
    }
  }
  if (archiveWritten) {
    await target.delete(key).catch((err: unknown) =>
      log.error({ backupId: id, key, err: describeError(err) }, 'could not delete the uncommitted copy; cleanup of the second store will remove it'),
    );
  }
}

/** A failed put destroys its body; the put itself reports why. */
function quiet(body: Readable): Readable {
  body.once('error', () => undefined);
  return body;
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
