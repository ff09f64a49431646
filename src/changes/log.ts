import type { Transform } from 'node:stream';
import type { ManifestTrust } from '../signing/trust.ts';
import type { BackupStore } from '../store/store.ts';
import { readSegmentEvents } from './commit.ts';
import { keyOf } from './format.ts';
import { readChain, type ChainReport } from './manifest.ts';

export interface ChangeLogFilter {
  /** Only keys that start with this. */
  prefix?: string;
  /** Only events received at or after this. */
  since?: Date;
  /** Only events received before this. */
  until?: Date;
  /** Only deletes. */
  deletedOnly?: boolean;
  /** Only revisions after this one (a page's `next`). */
  afterRevision?: string;
}

export interface ChangeLogEntry {
  time: string;
  revision: string;
  op: 'put' | 'delete';
  key: string;
  /** Bytes of the value put (absent for a delete). */
  valueBytes?: number;
  lease?: string;
  segmentId: string;
}

export interface ChangeLog {
  entries: ChangeLogEntry[];
  /** Revisions the log lost to compaction (a full backup was taken after each). */
  gaps: ChainReport['gaps'];
  /** Segments read (decrypted) and segments in the store. */
  segmentsRead: number;
  segments: number;
  /** With a limit, when more events match: the last revision shown, to pass as afterRevision for the next page. */
  next?: string;
}

export interface ChangeLogDeps {
  store: BackupStore;
  trust: ManifestTrust;
  decrypt: (identities: readonly string[]) => Transform;
}

/**
 * The timeline of the committed change log of `cluster`, oldest first. Every segment manifest is
 * read through the signature check and the whole chain is checked (IntegrityError on a missing
 * or replaced segment) before an event is shown; only segments whose time span meets the
 * filter's are decrypted, each checked against its manifest's size and sha256.
 *
 * With `limit`, at most that many events, except that a revision (a transaction) is never split:
 * its last events are added past the limit. Reading stops there, and `next` is set when another
 * event matches.
 */
export async function readChangeLog(deps: ChangeLogDeps, cluster: string, identities: readonly string[], filter: ChangeLogFilter = {}, limit?: number): Promise<ChangeLog> {
  const { segments, gaps } = await readChain(deps.store, cluster, deps.trust);
  const entries: ChangeLogEntry[] = [];
  let segmentsRead = 0;
  const after = filter.afterRevision === undefined ? undefined : BigInt(filter.afterRevision);
  for (const { manifest } of segments) {
    if ((filter.since && Date.parse(manifest.lastTime) < filter.since.getTime()) || (filter.until && Date.parse(manifest.firstTime) >= filter.until.getTime())) continue;
    if (after !== undefined && BigInt(manifest.lastRevision) <= after) continue;
    segmentsRead++;
    for (const e of await readSegmentEvents(deps, manifest, identities)) {
      const key = keyOf(e);
      const at = Date.parse(e.time);
      if (after !== undefined && BigInt(e.rev) <= after) continue;
      if (filter.prefix !== undefined && !key.startsWith(filter.prefix)) continue;
      if (filter.deletedOnly && e.op !== 'delete') continue;
      if ((filter.since && at < filter.since.getTime()) || (filter.until && at >= filter.until.getTime())) continue;
      const last = entries.at(-1);
      if (limit !== undefined && entries.length >= limit && last && last.revision !== e.rev) return { entries, gaps, segmentsRead, segments: segments.length, next: last.revision };
      entries.push({ time: e.time, revision: e.rev, op: e.op, key, ...(e.value === undefined ? {} : { valueBytes: Buffer.from(e.value, 'base64').length }), ...(e.lease ? { lease: e.lease } : {}), segmentId: manifest.segmentId });
    }
  }
  return { entries, gaps, segmentsRead, segments: segments.length };
}

/** One line per event: time, revision, operation, key (and the value's size for a put). */
export function formatChangeLog(log: ChangeLog): string {
  const lines = log.entries.map((e) => `${e.time}  ${e.revision.padStart(10)}  ${e.op.padEnd(6)}  ${e.key}${e.valueBytes === undefined ? '' : `  (${e.valueBytes} bytes)`}`);
  for (const g of log.gaps) lines.push(`note: revisions ${g.from}-${g.to} are not in the log (etcd had compacted them before they were captured); a full backup was taken instead`);
  lines.push(`${log.entries.length} event(s) from ${log.segmentsRead} of ${log.segments} segment(s)`);
  return `${lines.join('\n')}\n`;
}
