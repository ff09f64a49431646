import { IntegrityError } from '../errors/errors.ts';
import type { ManifestTrust } from '../signing/trust.ts';
import type { BackupStore } from '../store/store.ts';
import { ciphertextDigest } from '../verify/verify.ts';
import { readChain, type ChainReport } from './manifest.ts';

export interface ChangeLogCheck {
  segments: number;
  events: number;
  /** Stored bytes of the segments' data objects. */
  bytes: number;
  firstRevision?: string;
  lastRevision?: string;
  lastTime?: string;
  gaps: ChainReport['gaps'];
}

/**
 * Checks the whole committed change log of `cluster` without an age key: every segment
 * manifest's signature (readTrustedSegment), the chain from each manifest to the one before it
 * (a missing, added or replaced segment), and every data object's size and sha256 against its
 * manifest (a changed segment). The first problem is an IntegrityError (SignatureError for a
 * signature) that names the segment. Memory: one manifest; data objects are hashed as they stream.
 */
export async function verifyChangeLog(store: BackupStore, cluster: string, trust: ManifestTrust): Promise<ChangeLogCheck> {
  const { segments, gaps } = await readChain(store, cluster, trust);
  let bytes = 0;
  let events = 0;
  for (const { manifest } of segments) {
    const actual = await ciphertextDigest(store, manifest.data.key);
    if (actual.size !== manifest.data.size || actual.sha256 !== manifest.data.sha256) {
      throw new IntegrityError(`change segment ${manifest.segmentId} is ${actual.size} bytes with sha256 ${actual.sha256}, but its manifest says ${manifest.data.size} bytes with sha256 ${manifest.data.sha256}: it was changed`, {
        hint: 'a replay through this segment is refused; restore to a point before it, or to a full backup after it',
      });
    }
    bytes += actual.size;
    events += manifest.events;
  }
  const first = segments[0]?.manifest;
  const last = segments.at(-1)?.manifest;
  return { segments: segments.length, events, bytes, ...(first ? { firstRevision: first.firstRevision } : {}), ...(last ? { lastRevision: last.lastRevision, lastTime: last.lastTime } : {}), gaps };
}
