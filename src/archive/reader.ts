import { createHash } from 'node:crypto';
import path from 'node:path';
import { PassThrough, type Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDeepStrictEqual } from 'node:util';
import { ArchiveError, IntegrityError, LifeboatError, UnsafePathError } from '../errors/errors.ts';
import { SnapshotChecker, type SnapshotDigest } from '../etcd/trailer.ts';
import { createDecompressor } from './compression.ts';
import { DigestStream } from './digest.ts';
import {
  archivePart,
  MANIFEST_ENTRY,
  parseArchiveManifest,
  SNAPSHOT_ENTRY,
  type StoredManifest,
} from './manifest.ts';
import { readTar } from './tar.ts';

export type EntryRole = 'manifest' | 'kit' | 'snapshot';

export interface ArchiveEntry {
  /** A clean relative path (checked before the sink sees it). */
  path: string;
  mode: number;
  size: number;
  role: EntryRole;
}

/** Receives each entry's bytes; must consume `body` to the end. */
export type EntrySink = (entry: ArchiveEntry, body: AsyncIterable<Buffer>) => Promise<void>;

export interface ArchiveReport {
  ciphertext: { size: number; sha256: string };
  kitFiles: number;
  snapshot: SnapshotDigest & { size: number };
}

const MAX_MANIFEST_BYTES = 16 << 20;

/**
 * Reads an encrypted archive end to end against its stored manifest: the ciphertext hash, the
 * age authentication of every chunk, the inner manifest, every kit file's sha256, and the
 * snapshot's size, sha256 and trailer. Each entry's bytes go to `sink` as they are read, so
 * nothing is buffered beyond a chunk. Any mismatch is an error that names the entry.
 */
export async function readArchive(
  encrypted: Readable,
  stored: StoredManifest,
  decrypt: Transform,
  sink: EntrySink,
): Promise<ArchiveReport> {
  const cipher = new DigestStream();
  const decompressor = createDecompressor(stored.archive.compression.algorithm);
  let report: Omit<ArchiveReport, 'ciphertext'> | undefined;
  const consume = async (plaintext: AsyncIterable<Buffer>) => {
    report = await readEntries(plaintext, stored, sink);
  };
  try {
    await pipeline(encrypted, cipher, decrypt, decompressor ?? new PassThrough(), consume);
  } catch (err) {
    if (err instanceof LifeboatError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_') || code === 'ERR__ZSTD_INVALID_INPUT') {
      throw new ArchiveError(`archive ${stored.archive.key} does not decompress (${stored.archive.compression.algorithm}): ${(err as Error).message}`);
    }
    throw err;
  }
  const ciphertext = { size: cipher.bytes, sha256: cipher.digest() };
  checkCiphertext(stored, ciphertext);
  if (!report) throw new ArchiveError(`archive ${stored.archive.key} ended before its entries were read`);
  return { ciphertext, ...report };
}

/** The integrity check that needs no identity: the stored object's size and sha256. */
export function checkCiphertext(stored: StoredManifest, actual: { size: number; sha256: string }): void {
  const key = stored.archive.key;
  if (actual.size !== stored.archive.size) {
    throw new IntegrityError(`archive ${key} is ${actual.size} bytes, but its manifest says ${stored.archive.size}: the object is truncated or was replaced`);
  }
  if (actual.sha256 !== stored.archive.sha256) {
    throw new IntegrityError(`archive ${key} has sha256 ${actual.sha256}, but its manifest says ${stored.archive.sha256}: the object is corrupted or was changed`);
  }
}

async function readEntries(plaintext: AsyncIterable<Buffer>, stored: StoredManifest, sink: EntrySink): Promise<Omit<ArchiveReport, 'ciphertext'>> {
  const kit = new Map(stored.kit.files.map((f) => [f.entry, f]));
  const seen = new Set<string>();
  let snapshot: ArchiveReport['snapshot'] | undefined;
  let index = 0;
  for await (const entry of readTar(plaintext)) {
    const name = safeEntryPath(entry.path);
    if (entry.type !== 'File') {
      throw new UnsafePathError(entry.path, `archive entry ${JSON.stringify(entry.path)} is a ${entry.type}${entry.linkpath ? ` to ${JSON.stringify(entry.linkpath)}` : ''}; a Lifeboat archive holds only regular files`);
    }
    if (seen.has(name)) throw new ArchiveError(`archive entry ${name} appears twice`);
    seen.add(name);
    const base = { path: name, mode: entry.mode & 0o7777, size: entry.size };
    if (index++ === 0) {
      if (name !== MANIFEST_ENTRY) throw new ArchiveError(`the first archive entry is ${name}, not ${MANIFEST_ENTRY}: not a Lifeboat archive`);
      if (entry.size > MAX_MANIFEST_BYTES) throw new ArchiveError(`the archive manifest is ${entry.size} bytes, over the cap`);
      const chunks: Buffer[] = [];
      for await (const c of entry.body) chunks.push(c);
      const bytes = Buffer.concat(chunks);
      const inner = parseArchiveManifest(bytes.toString('utf8'));
      if (!isDeepStrictEqual(inner, archivePart(stored))) {
        throw new IntegrityError(`the manifest inside archive ${stored.archive.key} differs from the stored manifest of backup ${stored.backupId}`);
      }
      await sink({ ...base, role: 'manifest' }, once(bytes));
    } else if (name === SNAPSHOT_ENTRY) {
      if (entry.size !== stored.snapshot.size) {
        throw new IntegrityError(`${SNAPSHOT_ENTRY} is ${entry.size} bytes in the archive, but the manifest says ${stored.snapshot.size}`);
      }
      const checker = new SnapshotChecker(stored.etcd.dbSize);
      await sink({ ...base, role: 'snapshot' }, tap(entry.body, (c) => checker.update(c)));
      const digest = checker.finish();
      if (digest.sha256 !== stored.snapshot.sha256) {
        throw new IntegrityError(`${SNAPSHOT_ENTRY} has sha256 ${digest.sha256}, but the manifest says ${stored.snapshot.sha256}`);
      }
      snapshot = { ...digest, size: entry.size };
    } else {
      const file = kit.get(name);
      if (!file) throw new ArchiveError(`archive entry ${name} is not listed in the manifest`);
      // The tar header's size is the archive's word: it must agree with the manifest before a byte is read.
      if (entry.size !== file.size) {
        throw new IntegrityError(`kit file ${file.path} (${name}) is ${entry.size} bytes in the archive, but the manifest says ${file.size}`);
      }
      const hash = createHash('sha256');
      let size = 0;
      await sink({ ...base, role: 'kit' }, tap(entry.body, (c) => {
        size += c.length;
        if (size > file.size) throw new IntegrityError(`kit file ${file.path} (${name}) goes past the ${file.size} bytes its manifest says`);
        hash.update(c);
      }));
      const sha256 = hash.digest('hex');
      if (size !== file.size || sha256 !== file.sha256) {
        throw new IntegrityError(`kit file ${file.path} (${name}) has sha256 ${sha256} and ${size} bytes, but the manifest says ${file.sha256} and ${file.size}`);
      }
    }
  }
  const absent = [...kit.keys()].filter((k) => !seen.has(k));
  if (absent.length > 0) throw new ArchiveError(`archive lacks kit files listed in its manifest: ${absent.join(', ')}`);
  if (!snapshot) throw new ArchiveError(`archive lacks ${SNAPSHOT_ENTRY}`);
  return { kitFiles: kit.size, snapshot };
}

/** A relative path with no `..`, no empty or `.` parts, no backslashes or NULs. */
export function safeEntryPath(name: string): string {
  const clean = name.replace(/\/+$/, '');
  const parts = clean.split('/');
  if (
    clean === '' ||
    path.posix.isAbsolute(clean) ||
    clean.includes('\\') ||
    clean.includes('\0') ||
    parts.some((p) => p === '' || p === '.' || p === '..')
  ) {
    throw new UnsafePathError(name, `archive entry ${JSON.stringify(name)} is not a safe relative path; refusing to read this archive`);
  }
  return clean;
}

async function* once(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes;
}

async function* tap(body: AsyncIterable<Buffer>, see: (chunk: Buffer) => void): AsyncGenerator<Buffer> {
  for await (const chunk of body) {
    see(chunk);
    yield chunk;
  }
}
