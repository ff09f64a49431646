import { createHash } from 'node:crypto';
import { parseStoredManifest, type StoredManifest } from '../archive/manifest.ts';
import { ArchiveError, NotFoundError } from '../errors/errors.ts';
import type { ManifestTrust, TrustVerdict } from '../signing/trust.ts';
import { manifestKey, parseKey, signatureKey } from './layout.ts';
import type { BackupStore } from './store.ts';

/** A manifest that was accepted: its signature checked, its location matched. */
export interface TrustedManifest {
  manifest: StoredManifest;
  /** sha256 of the manifest object's bytes (what the next backup's `previous` names). */
  sha256: string;
  verdict: TrustVerdict;
  /** The manifest object's bytes and its signature as stored: a copy must keep them exact. */
  bytes: Buffer;
  signature: Buffer | undefined;
}

/** A manifest object larger than this is refused unread; a signature is 64 bytes. */
const MAX_MANIFEST_BYTES = 16 << 20;
const MAX_SIGNATURE_BYTES = 1024;

/**
 * Reads the manifest of backup `id` (a checked id) and its signature, both bounded in size, and
 * accepts it only in this order: the signature (SignatureError, before a byte is parsed), the
 * schema, then the location: its id, cluster and archive key must be those of where it is
 * stored (ArchiveError). A missing manifest is a NotFoundError.
 */
export async function readTrustedManifest(store: BackupStore, cluster: string, trust: ManifestTrust, id: string): Promise<TrustedManifest> {
  const key = manifestKey(cluster, id);
  let bytes: Buffer;
  try {
    bytes = await readCapped(await store.get(key), MAX_MANIFEST_BYTES, key);
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new NotFoundError(`no backup ${id} in cluster ${cluster} (${store.description})`, { hint: 'run `lifeboat list` to see the backups' });
    }
    throw err;
  }
  const sigKey = signatureKey(cluster, id);
  const signature = await store.get(sigKey).then(
    (body) => readCapped(body, MAX_SIGNATURE_BYTES, sigKey),
    (err: unknown) => {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    },
  );
  const verdict = trust.check(`manifest ${key}`, bytes, signature);
  const manifest = parseStoredManifest(bytes.toString('utf8'), key);
  checkLocation(manifest, cluster, id, key);
  return { manifest, sha256: createHash('sha256').update(bytes).digest('hex'), verdict, bytes, signature };
}

/** A manifest must describe the backup at its own location, and name its own archive. */
function checkLocation(manifest: StoredManifest, cluster: string, id: string, key: string): void {
  const archive = parseKey(manifest.archive.key);
  const where = manifest.backupId !== id ? `backup ${manifest.backupId}` : manifest.cluster !== cluster ? `cluster ${manifest.cluster}` : undefined;
  if (where) throw new ArchiveError(`manifest ${key} describes ${where}, but it is stored as backup ${id} of cluster ${cluster}: refusing it`);
  if (archive?.kind !== 'archive' || archive.id !== id || archive.cluster !== cluster || archive.compression !== manifest.archive.compression.algorithm) {
    throw new ArchiveError(`manifest ${key} names archive ${manifest.archive.key}, which is not backup ${id}'s own (${manifest.archive.compression.algorithm}): refusing it`);
  }
}

/** The whole body, refused (ArchiveError) once it passes `max` bytes: a manifest is small, whatever the store says. */
async function readCapped(body: AsyncIterable<Buffer | string>, max: number, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > max) throw new ArchiveError(`${key} is over ${max} bytes: not a Lifeboat object; refusing it`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
