import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { contentBytes, type StoredManifest } from '../archive/manifest.ts';
import { readArchive, type ArchiveReport } from '../archive/reader.ts';
import { DestinationNotEmptyError, UnsafePathError } from '../errors/errors.ts';
import type { BackupStore } from '../store/store.ts';
import { checkSpace } from './space.ts';

export interface ExtractDeps {
  store: BackupStore;
  decrypt: (identities: readonly string[]) => Transform;
  log: Logger;
}

/**
 * Unpacks a backup into `dir`: `manifest.json`, `kit/...` and `etcd/snapshot.db`, each checked
 * against the manifest as it is written. Refuses an existing non-empty `dir`, and any entry
 * that is not a plain file with a clean relative path, and a file system without room for the
 * whole archive's contents. Every file is written 0600 in 0700 directories, whatever modes the
 * archive records. On any failure `dir` is removed again, so a half-written snapshot is never
 * left behind to be mistaken for a good one.
 */
export async function extractBackup(deps: ExtractDeps, stored: StoredManifest, identities: readonly string[], dir: string): Promise<ArchiveReport> {
  const root = path.resolve(dir);
  const existing = await readdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (existing && existing.length > 0) {
    throw new DestinationNotEmptyError(`${root} exists and is not empty; refusing to extract into it`, { hint: 'pass a new or empty directory to --to' });
  }
  await mkdir(root, { recursive: true, mode: 0o700 });
  try {
    await checkSpace(root, contentBytes(stored), '--to', `backup ${stored.backupId} (snapshot and kit)`, 'extract to a larger file system');
    const report = await readArchive(await deps.store.get(stored.archive.key), stored, deps.decrypt(identities), async (entry, body) => {
      const target = path.resolve(root, ...entry.path.split('/'));
      if (!target.startsWith(root + path.sep)) {
        throw new UnsafePathError(entry.path, `archive entry ${entry.path} would be written outside ${root}`);
      }
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      await pipeline(Readable.from(body), createWriteStream(target, { flags: 'wx', mode: 0o600 }));
    });
    deps.log.info({ phase: 'extracted', backupId: stored.backupId, dir: root, kitFiles: report.kitFiles, snapshotBytes: report.snapshot.size }, 'backup extracted and checked');
    return report;
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}
