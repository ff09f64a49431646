import { createHash } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ArchiveError, IntegrityError, NotFoundError } from '../errors/errors.ts';
import type { ManifestTrust, TrustVerdict } from '../signing/trust.ts';
import { changesPrefix, committedSegmentIds, parseSegmentId, segmentDataKey, segmentManifestKey, segmentSignatureKey } from '../store/layout.ts';
import type { BackupStore } from '../store/store.ts';
import { Revision, Timestamp } from './format.ts';

export const SEGMENT_FORMAT = 'lifeboat-changes';
export const SEGMENT_FORMAT_VERSION = 1;

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });

/**
 * What commits a segment of the change log (written last, signed like a backup's manifest). The
 * `previous` link is the sha256 of the previous segment's manifest bytes: with the signatures,
 * a missing, swapped or edited segment shows in the chain without an age key (checkChain).
 * `gap` says which revisions before `firstRevision` were lost: etcd had compacted them before
 * they were captured; a full backup was asked for at once.
 */
export const SegmentManifestSchema = Type.Object(
  {
    format: Type.Literal(SEGMENT_FORMAT),
    version: Type.Literal(SEGMENT_FORMAT_VERSION),
    segmentId: Type.String(),
    cluster: Type.String(),
    node: Type.String(),
    createdAt: Timestamp,
    firstRevision: Revision,
    lastRevision: Revision,
    firstTime: Timestamp,
    lastTime: Timestamp,
    events: Type.Integer({ minimum: 1 }),
    data: Type.Object(
      {
        key: Type.String(),
        size: Type.Integer({ minimum: 0 }),
        sha256: Sha256,
        /** The JSON lines' bytes before compression. */
        plainBytes: Type.Integer({ minimum: 0 }),
        compression: Type.Object({ algorithm: Type.Literal('zstd'), level: Type.Integer() }, { additionalProperties: false }),
        encryption: Type.Object({ format: Type.Literal('age'), recipients: Type.Array(Type.String()) }, { additionalProperties: false }),
      },
      { additionalProperties: false },
    ),
    previous: Type.Optional(Type.Object({ segmentId: Type.String(), sha256: Sha256 }, { additionalProperties: false })),
    gap: Type.Optional(Type.Object({ from: Revision, to: Revision }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
export type SegmentManifest = Static<typeof SegmentManifestSchema>;

export interface TrustedSegment {
  manifest: SegmentManifest;
  /** sha256 of the manifest object's bytes: what the next segment's `previous` names. */
  sha256: string;
  verdict: TrustVerdict;
}

export function segmentManifestJson(manifest: SegmentManifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

export function parseSegmentManifest(text: string, key: string): SegmentManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ArchiveError(`segment manifest ${key} is not JSON: ${(err as Error).message}`);
  }
  const first = Value.Errors(SegmentManifestSchema, doc).First();
  if (first) throw new ArchiveError(`segment manifest ${key} is invalid at ${first.path || '/'}: ${first.message}`);
  return doc as SegmentManifest;
}

const MAX_MANIFEST_BYTES = 1 << 20;
const MAX_SIGNATURE_BYTES = 1024;

/**
 * Reads segment `id`'s manifest and signature, both bounded, and accepts it as a backup's manifest
 * is accepted (../store/trusted-manifest.ts): the signature first (SignatureError, before a byte
 * is parsed), then the schema, then the location: its id, cluster, revisions and data key must
 * be those of where it is stored (ArchiveError).
 */
export async function readTrustedSegment(store: BackupStore, cluster: string, trust: ManifestTrust, id: string): Promise<TrustedSegment> {
  const key = segmentManifestKey(cluster, id);
  const bytes = await readCapped(store, key, MAX_MANIFEST_BYTES);
  if (!bytes) throw new NotFoundError(`no change segment ${id} in cluster ${cluster} (${store.description})`);
  const signature = await readCapped(store, segmentSignatureKey(cluster, id), MAX_SIGNATURE_BYTES);
  const verdict = trust.check(`segment manifest ${key}`, bytes, signature);
  const manifest = parseSegmentManifest(bytes.toString('utf8'), key);
  const revisions = parseSegmentId(id)!;
  if (manifest.segmentId !== id || manifest.cluster !== cluster || manifest.firstRevision !== revisions.firstRevision || manifest.lastRevision !== revisions.lastRevision || manifest.data.key !== segmentDataKey(cluster, id)) {
    throw new ArchiveError(`segment manifest ${key} describes segment ${manifest.segmentId} (revisions ${manifest.firstRevision}-${manifest.lastRevision}) of cluster ${manifest.cluster} with data ${manifest.data.key}, not the one it is stored as: refusing it`);
  }
  return { manifest, sha256: createHash('sha256').update(bytes).digest('hex'), verdict };
}

/** The committed segment ids of `cluster`, oldest first. */
export async function segmentIds(store: BackupStore, cluster: string): Promise<string[]> {
  return committedSegmentIds(await store.list(changesPrefix(cluster)));
}

async function readCapped(store: BackupStore, key: string, max: number): Promise<Buffer | undefined> {
  let body;
  try {
    body = await store.get(key);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new ArchiveError(`${key} is over ${max} bytes: not a Lifeboat object; refusing it`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Every committed segment of `cluster`, oldest first, each manifest read through its signature
 * check, and the chain between them checked (checkChain): what every reader of the log starts from.
 */
export async function readChain(store: BackupStore, cluster: string, trust: ManifestTrust): Promise<{ segments: TrustedSegment[]; gaps: ChainReport['gaps'] }> {
  const segments: TrustedSegment[] = [];
  for (const id of await segmentIds(store, cluster)) segments.push(await readTrustedSegment(store, cluster, trust, id));
  return { segments, gaps: checkChain(segments).gaps };
}

export interface ChainReport {
  /** Revisions etcd had compacted before they were captured, as the segments record them. */
  gaps: { from: string; to: string; before: string }[];
}

/**
 * Checks that `segments` (oldest first) follow each other: each names the one before it by the
 * sha256 of its manifest bytes, and starts at the revision after it ends, or records the gap
 * between. The oldest may name a segment that retention deleted. An IntegrityError names the
 * first break: a segment missing (deleted, or never committed) or a manifest replaced.
 */
export function checkChain(segments: readonly Pick<TrustedSegment, 'manifest' | 'sha256'>[]): ChainReport {
  const gaps: ChainReport['gaps'] = [];
  for (const [i, { manifest }] of segments.entries()) {
    if (manifest.gap) gaps.push({ ...manifest.gap, before: manifest.segmentId });
    if (i === 0) continue;
    const prev = segments[i - 1]!;
    const expected = BigInt(prev.manifest.lastRevision) + 1n;
    if (manifest.previous?.segmentId !== prev.manifest.segmentId) {
      throw new IntegrityError(`change segment ${manifest.segmentId} follows ${manifest.previous?.segmentId ?? 'nothing'}, but the segment before it in the store is ${prev.manifest.segmentId}: a segment is missing or was added`);
    }
    if (manifest.previous.sha256 !== prev.sha256) {
      throw new IntegrityError(`change segment ${manifest.segmentId} follows ${prev.manifest.segmentId} with manifest sha256 ${manifest.previous.sha256}, but that manifest now has sha256 ${prev.sha256}: a manifest was replaced`);
    }
    const start = manifest.gap ? BigInt(manifest.gap.from) : BigInt(manifest.firstRevision);
    const end = manifest.gap ? BigInt(manifest.gap.to) + 1n : start;
    if (start !== expected || end !== BigInt(manifest.firstRevision)) {
      throw new IntegrityError(`change segment ${manifest.segmentId} starts at revision ${manifest.firstRevision}${manifest.gap ? ` after a gap of ${manifest.gap.from}-${manifest.gap.to}` : ''}, but the segment before it ended at ${prev.manifest.lastRevision}`);
    }
  }
  return { gaps };
}
