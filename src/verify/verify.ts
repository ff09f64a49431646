import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, type Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { DigestStream } from '../archive/digest.ts';
import type { StoredManifest } from '../archive/manifest.ts';
import { checkCiphertext, readArchive, type ArchiveReport } from '../archive/reader.ts';
import { IntegrityError, ToolError } from '../errors/errors.ts';
import type { Executor } from '../exec/executor.ts';
import type { BackupStore } from '../store/store.ts';

export interface VerifyDeps {
  store: BackupStore;
  /** An age decryptor for these identities. */
  decrypt: (identities: readonly string[]) => Transform;
  exec: Executor;
  log: Logger;
}

export interface SnapshotStatus {
  hash: number;
  revision: number;
  totalKey: number;
  totalSize: number;
}

export interface VerifyReport {
  backupId: string;
  /** `ciphertext`: size and sha256 only (no identity). `deep`: decrypted and fully checked. */
  level: 'ciphertext' | 'deep';
  archive: { key: string; size: number; sha256: string };
  kitFiles?: number;
  snapshot?: ArchiveReport['snapshot'] & { status: SnapshotStatus };
}

export interface VerifyOptions {
  /** With identities: deep verification. Without: the ciphertext check. */
  identities?: readonly string[];
  etcdutl: string;
  /** Where the snapshot is written for `etcdutl snapshot status`; a private temp dir under it. */
  tmpDir?: string;
}

/**
 * Verifies a committed backup. Without an identity it checks the stored object against the
 * manifest's size and sha256. With one it also decrypts and checks every kit file, the snapshot's
 * sha256 and trailer, and runs `etcdutl snapshot status` on the snapshot. The snapshot is written
 * to a private temp dir for etcdutl, and removed afterwards.
 */
export async function verifyBackup(deps: VerifyDeps, stored: StoredManifest, options: VerifyOptions): Promise<VerifyReport> {
  const started = performance.now();
  const key = stored.archive.key;
  const identities = options.identities ?? [];
  if (identities.length === 0) {
    const actual = await ciphertextDigest(deps.store, key);
    checkCiphertext(stored, actual);
    deps.log.info({ phase: 'verified', backupId: stored.backupId, level: 'ciphertext', bytes: actual.size, durationMs: Math.round(performance.now() - started) }, 'archive matches its manifest');
    return { backupId: stored.backupId, level: 'ciphertext', archive: { key, ...actual } };
  }

  const dir = await mkdtemp(path.join(options.tmpDir ?? tmpdir(), 'lifeboat-verify-'));
  const snapshotFile = path.join(dir, 'snapshot.db');
  try {
    const report = await readArchive(await deps.store.get(key), stored, deps.decrypt(identities), async (entry, body) => {
      if (entry.role === 'snapshot') {
        await pipeline(Readable.from(body), createWriteStream(snapshotFile, { mode: 0o600, flags: 'wx' }));
      } else {
        for await (const _ of body) {
          // the reader hashes it
        }
      }
    });
    const status = await snapshotStatus(deps.exec, options.etcdutl, snapshotFile);
    if (BigInt(status.revision) < BigInt(stored.etcd.revision)) {
      throw new IntegrityError(`etcdutl reports revision ${status.revision}, older than the manifest's ${stored.etcd.revision}`);
    }
    deps.log.info({ phase: 'verified', backupId: stored.backupId, level: 'deep', bytes: report.ciphertext.size, kitFiles: report.kitFiles, revision: status.revision, keys: status.totalKey, durationMs: Math.round(performance.now() - started) }, 'archive decrypted and every hash checked');
    return {
      backupId: stored.backupId,
      level: 'deep',
      archive: { key, ...report.ciphertext },
      kitFiles: report.kitFiles,
      snapshot: { ...report.snapshot, status },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The size and sha256 of a stored object, read once from the store; no identity needed. */
export async function ciphertextDigest(store: BackupStore, key: string): Promise<{ size: number; sha256: string }> {
  const digest = new DigestStream();
  await pipeline(await store.get(key), digest, new Writable({ write: (_c, _e, cb) => cb() }));
  return { size: digest.bytes, sha256: digest.digest() };
}

export async function snapshotStatus(exec: Executor, etcdutl: string, file: string): Promise<SnapshotStatus> {
  const { stdout } = await exec.run(etcdutl, ['snapshot', 'status', file, '--write-out', 'json']);
  let parsed: Partial<SnapshotStatus>;
  try {
    parsed = JSON.parse(stdout) as Partial<SnapshotStatus>;
  } catch {
    throw new ToolError(`etcdutl snapshot status printed something other than JSON: ${stdout.slice(0, 200)}`);
  }
  const { hash, revision, totalKey, totalSize } = parsed;
  if ([hash, revision, totalKey, totalSize].some((v) => typeof v !== 'number')) {
    throw new ToolError(`etcdutl snapshot status gave an unexpected answer: ${stdout.slice(0, 200)}`);
  }
  return { hash: hash!, revision: revision!, totalKey: totalKey!, totalSize: totalSize! };
}
