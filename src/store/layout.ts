import type { CompressionAlgorithm } from '../config/schema.ts';
import { UnsafePathError } from '../errors/errors.ts';

/**
 * Every object key the stores see is made and parsed here, and nowhere else.
 *
 *   <cluster>/backups/<id>/archive.tar.<zst|gz>.age   the encrypted archive, written first
 *   <cluster>/backups/<id>/manifest.json.sig          the manifest's Ed25519 signature, written just before it
 *   <cluster>/backups/<id>/manifest.json              the commit marker, written last
 *   <cluster>/backups/<id>/verification.json          the last check, rewritten by each verify
 *
 * A backup id sorts by creation time and carries the etcd revision:
 * `20261124T033000.123Z-r12345`.
 */
const ID_RE = /^(\d{8}T\d{6}\.\d{3}Z)-r(\d{1,20})$/;
const CLUSTER_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const ARCHIVE_RE = /^archive\.tar(\.zst|\.gz)?\.age$/;
const MANIFEST = 'manifest.json';
const SIGNATURE = 'manifest.json.sig';
const VERIFICATION = 'verification.json';

export type ObjectKind = 'archive' | 'manifest' | 'signature' | 'verification';

/** Every store refuses a key that is not a clean relative path: no `..`, `.`, empty parts or NULs. */
export function assertObjectKey(key: string): string {
  const parts = key.split('/');
  if (key === '' || parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0'))) {
    throw new UnsafePathError(key, `store key "${key}" is not a clean relative path`);
  }
  return key;
}

export interface ParsedKey {
  cluster: string;
  id: string;
  kind: ObjectKind;
  /** Only for archives. */
  compression?: CompressionAlgorithm;
}

const EXTENSION: Record<CompressionAlgorithm, string> = { zstd: '.zst', gzip: '.gz', none: '' };

export function formatBackupId(createdAt: Date, revision: string): string {
  if (!/^\d{1,20}$/.test(revision)) throw new UnsafePathError(revision, `revision "${revision}" is not a number`);
  const iso = createdAt.toISOString(); // 2026-11-24T03:30:00.123Z
  const stamp = iso.replaceAll('-', '').replaceAll(':', '');
  return `${stamp}-r${revision}`;
}

export interface ParsedId {
  createdAt: Date;
  revision: string;
}

export function parseBackupId(id: string): ParsedId | undefined {
  const m = ID_RE.exec(id);
  if (!m?.[1] || !m[2]) return undefined;
  const s = m[1];
  const iso = `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13)}`;
  const createdAt = new Date(iso);
  if (Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== iso) return undefined;
  return { createdAt, revision: m[2] };
}

/** Throws UnsafePathError unless `id` is a backup id: ids come from users and become keys. */
export function assertBackupId(id: string): string {
  if (!parseBackupId(id)) {
    throw new UnsafePathError(id, `"${id}" is not a backup id (expected like 20261124T033000.123Z-r12345)`, {
      hint: 'run `lifeboat list` to see the ids',
    });
  }
  return id;
}

export function assertCluster(cluster: string): string {
  if (!CLUSTER_RE.test(cluster)) throw new UnsafePathError(cluster, `cluster name "${cluster}" is not a DNS label`);
  return cluster;
}

export function backupsPrefix(cluster: string): string {
  return `${assertCluster(cluster)}/backups/`;
}

export function backupPrefix(cluster: string, id: string): string {
  return `${backupsPrefix(cluster)}${assertBackupId(id)}/`;
}

export function archiveKey(cluster: string, id: string, compression: CompressionAlgorithm): string {
  return `${backupPrefix(cluster, id)}archive.tar${EXTENSION[compression]}.age`;
}

export function manifestKey(cluster: string, id: string): string {
  return `${backupPrefix(cluster, id)}${MANIFEST}`;
}

/** The detached signature of the manifest (../signing/trust.ts). */
export function signatureKey(cluster: string, id: string): string {
  return `${backupPrefix(cluster, id)}${SIGNATURE}`;
}

/** The record of the last verification of a backup (../verify/record.ts). */
export function verificationKey(cluster: string, id: string): string {
  return `${backupPrefix(cluster, id)}${VERIFICATION}`;
}

/** The inverse of archiveKey/manifestKey/signatureKey/verificationKey; undefined for any key this layout does not make. */
export function parseKey(key: string): ParsedKey | undefined {
  const parts = key.split('/');
  if (parts.length !== 4) return undefined;
  const [cluster, backups, id, name] = parts as [string, string, string, string];
  if (!CLUSTER_RE.test(cluster) || backups !== 'backups' || !parseBackupId(id)) return undefined;
  if (name === MANIFEST) return { cluster, id, kind: 'manifest' };
  if (name === SIGNATURE) return { cluster, id, kind: 'signature' };
  if (name === VERIFICATION) return { cluster, id, kind: 'verification' };
  const m = ARCHIVE_RE.exec(name);
  if (!m) return undefined;
  const ext = m[1] ?? '';
  const compression = (Object.keys(EXTENSION) as CompressionAlgorithm[]).find((c) => EXTENSION[c] === ext);
  return compression === undefined ? undefined : { cluster, id, kind: 'archive', compression };
}

/** The ids of the committed backups (those with a manifest) among `objects`, newest first. */
export function committedIds(objects: readonly { key: string }[]): string[] {
  const ids = new Set<string>();
  for (const o of objects) {
    const parsed = parseKey(o.key);
    if (parsed?.kind === 'manifest') ids.add(parsed.id);
  }
  return [...ids].sort().reverse();
}

/*
 * The change log (../changes/): segments of etcd events between full backups, beside them.
 *
 *   <cluster>/changes/<first>-<last>/segment.jsonl.zst.age   the encrypted events, written first
 *   <cluster>/changes/<first>-<last>/manifest.json.sig       the manifest's signature
 *   <cluster>/changes/<first>-<last>/manifest.json           the commit marker, written last
 *
 * `<first>` and `<last>` are the segment's first and last etcd revisions, zero-padded to 20
 * digits (a 64-bit revision's width), so segment ids sort by revision.
 */
const SEGMENT_ID_RE = /^(\d{20})-(\d{20})$/;
const SEGMENT_DATA = 'segment.jsonl.zst.age';
const REVISION_WIDTH = 20;

export type SegmentObjectKind = 'data' | 'manifest' | 'signature';

export interface ParsedSegmentKey {
  cluster: string;
  segmentId: string;
  kind: SegmentObjectKind;
}

export function formatSegmentId(firstRevision: string, lastRevision: string): string {
  for (const r of [firstRevision, lastRevision]) {
    if (!/^\d{1,20}$/.test(r)) throw new UnsafePathError(r, `revision "${r}" is not a number`);
  }
  if (BigInt(firstRevision) > BigInt(lastRevision)) throw new UnsafePathError(firstRevision, `segment revisions ${firstRevision}-${lastRevision} are reversed`);
  return `${firstRevision.padStart(REVISION_WIDTH, '0')}-${lastRevision.padStart(REVISION_WIDTH, '0')}`;
}

/** The first and last revision of a segment id (without padding), or undefined for anything else. */
export function parseSegmentId(id: string): { firstRevision: string; lastRevision: string } | undefined {
  const m = SEGMENT_ID_RE.exec(id);
  if (!m?.[1] || !m[2]) return undefined;
  const firstRevision = BigInt(m[1]).toString();
  const lastRevision = BigInt(m[2]).toString();
  return BigInt(firstRevision) <= BigInt(lastRevision) ? { firstRevision, lastRevision } : undefined;
}

export function assertSegmentId(id: string): string {
  if (!parseSegmentId(id)) throw new UnsafePathError(id, `"${id}" is not a change segment id (expected <first revision>-<last revision>, 20 digits each)`);
  return id;
}

export function changesPrefix(cluster: string): string {
  return `${assertCluster(cluster)}/changes/`;
}

function segmentPrefix(cluster: string, id: string): string {
  return `${changesPrefix(cluster)}${assertSegmentId(id)}/`;
}

export function segmentDataKey(cluster: string, id: string): string {
  return `${segmentPrefix(cluster, id)}${SEGMENT_DATA}`;
}

export function segmentManifestKey(cluster: string, id: string): string {
  return `${segmentPrefix(cluster, id)}${MANIFEST}`;
}

export function segmentSignatureKey(cluster: string, id: string): string {
  return `${segmentPrefix(cluster, id)}${SIGNATURE}`;
}

/** The inverse of segmentDataKey/segmentManifestKey/segmentSignatureKey; undefined for any other key. */
export function parseSegmentKey(key: string): ParsedSegmentKey | undefined {
  const parts = key.split('/');
  if (parts.length !== 4) return undefined;
  const [cluster, changes, segmentId, name] = parts as [string, string, string, string];
  if (!CLUSTER_RE.test(cluster) || changes !== 'changes' || !parseSegmentId(segmentId)) return undefined;
  const kind: SegmentObjectKind | undefined = name === SEGMENT_DATA ? 'data' : name === MANIFEST ? 'manifest' : name === SIGNATURE ? 'signature' : undefined;
  return kind && { cluster, segmentId, kind };
}

/** The ids of the committed segments (those with a manifest) among `objects`, oldest first. */
export function committedSegmentIds(objects: readonly { key: string }[]): string[] {
  const ids = new Set<string>();
  for (const o of objects) {
    const parsed = parseSegmentKey(o.key);
    if (parsed?.kind === 'manifest') ids.add(parsed.segmentId);
  }
  return [...ids].sort();
}
