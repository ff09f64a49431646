import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ArchiveError } from '../errors/errors.ts';

/**
 * Archive format v1.
 *
 * The archive is one tar stream: `manifest.json` (an ArchiveManifest) first, then every kit file
 * under `kit/<path on the host>`, then `etcd/snapshot.db` (the snapshot exactly as
 * `etcdctl snapshot save` writes it, sha256 trailer included). It is compressed, then encrypted
 * with age.
 *
 * The store keeps a StoredManifest beside the archive: the same facts plus what is known only
 * once the archive is written (the snapshot's and the ciphertext's sha256 and size). It holds no
 * secret, so integrity can be checked without an identity. Writing it commits the backup.
 */
export const FORMAT = 'lifeboat-archive';
export const FORMAT_VERSION = 1;
export const MANIFEST_ENTRY = 'manifest.json';
export const SNAPSHOT_ENTRY = 'etcd/snapshot.db';
export const KIT_PREFIX = 'kit/';

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Uint64 = Type.String({ pattern: '^[0-9]{1,20}$', description: 'a uint64 as a decimal string' });
const Size = Type.Integer({ minimum: 0 });
const Timestamp = Type.String({ pattern: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.source, description: 'RFC 3339, UTC' });

/** The parts of the recovery kit, in the order they are listed. */
export const KIT_ROLES = ['pki', 'static-pod-manifest', 'cluster-configuration', 'encryption-provider-config', 'extra'] as const;
export const KitRole = Type.Union(KIT_ROLES.map((r) => Type.Literal(r)));
export type KitRole = (typeof KIT_ROLES)[number];

/**
 * Where a kit file's content came from: the file at its path on the host, or (for the
 * cluster-configuration) a key of a ConfigMap read from etcd at the snapshot's revision.
 */
export const KitSourceSchema = Type.Union([
  Type.Object({ from: Type.Literal('file') }),
  Type.Object({
    from: Type.Literal('configmap'),
    namespace: Type.String(),
    name: Type.String(),
    /** The ConfigMap's data key that held the content. */
    dataKey: Type.String(),
    /** The etcd key the ConfigMap was read from. */
    etcdKey: Type.String(),
    revision: Uint64,
    /** How the kube-apiserver had stored it. */
    encoding: Type.Union([Type.Literal('protobuf'), Type.Literal('json')]),
  }),
]);
export type KitSource = Static<typeof KitSourceSchema>;

export const KitFileSchema = Type.Object({
  /** The entry name in the archive: `kit/` + the path on the host, without its leading `/`. */
  entry: Type.String(),
  /** The absolute path on the host (relative to the kit's host root). */
  path: Type.String(),
  role: KitRole,
  size: Size,
  mode: Type.Integer({ minimum: 0, maximum: 0o7777 }),
  sha256: Sha256,
  /**
   * Recorded for the cluster-configuration. Absent: the file at `path` (and every kit file of a
   * manifest written before the source was recorded).
   */
  source: Type.Optional(KitSourceSchema),
});
export type KitFile = Static<typeof KitFileSchema>;

export const MissingKitFileSchema = Type.Object({
  path: Type.String(),
  role: KitRole,
  reason: Type.String(),
});

export const MemberSchema = Type.Object({
  id: Uint64,
  name: Type.String(),
  peerURLs: Type.Array(Type.String()),
  clientURLs: Type.Array(Type.String()),
  isLearner: Type.Boolean(),
});
export type Member = Static<typeof MemberSchema>;

export const EtcdFactsSchema = Type.Object({
  /** The member the snapshot was streamed from. */
  memberId: Uint64,
  memberName: Type.String(),
  endpoint: Type.String(),
  /** From Status, just before the snapshot: the snapshot holds at least this revision. */
  revision: Uint64,
  version: Type.String(),
  dbSize: Size,
  dbSizeInUse: Size,
  leaderId: Uint64,
  raftTerm: Uint64,
  clusterId: Uint64,
  members: Type.Array(MemberSchema),
  /**
   * Keys at `revision`, counted on the same member right after its Status (a count-only range).
   * Optional: manifests written before it was recorded lack it. A restore drill checks it.
   */
  keyCount: Type.Optional(Size),
  /** Of those, the keys under `/registry/` (Kubernetes' objects). */
  registryKeyCount: Type.Optional(Size),
});
export type EtcdFacts = Static<typeof EtcdFactsSchema>;

const SnapshotSchema = Type.Object({
  entry: Type.Literal(SNAPSHOT_ENTRY),
  /** dbSize + the 32-byte sha256 trailer. */
  size: Size,
});

export const ArchiveManifestSchema = Type.Object({
  format: Type.Literal(FORMAT),
  version: Type.Literal(FORMAT_VERSION),
  backupId: Type.String(),
  cluster: Type.String(),
  node: Type.String(),
  createdAt: Timestamp,
  tool: Type.Object({ name: Type.Literal('lifeboat'), version: Type.String() }),
  etcd: EtcdFactsSchema,
  snapshot: SnapshotSchema,
  kit: Type.Object({
    hostRoot: Type.String(),
    files: Type.Array(KitFileSchema),
    missing: Type.Array(MissingKitFileSchema),
  }),
});
export type ArchiveManifest = Static<typeof ArchiveManifestSchema>;

export const ManifestLinkSchema = Type.Object({ backupId: Type.String(), sha256: Sha256 });
export type ManifestLink = Static<typeof ManifestLinkSchema>;

export const StoredManifestSchema = Type.Composite([
  Type.Omit(ArchiveManifestSchema, ['snapshot']),
  Type.Object({
    snapshot: Type.Composite([
      SnapshotSchema,
      Type.Object({
        /** sha256 of the whole snapshot.db, trailer included. */
        sha256: Sha256,
        /** sha256 of the database alone, as carried in the snapshot's own trailer. */
        dbSha256: Sha256,
      }),
    ]),
    archive: Type.Object({
      key: Type.String(),
      size: Size,
      /** sha256 of the stored (encrypted) object. */
      sha256: Sha256,
      compression: Type.Object({
        algorithm: Type.Union([Type.Literal('zstd'), Type.Literal('gzip'), Type.Literal('none')]),
        level: Type.Integer(),
      }),
      encryption: Type.Object({ format: Type.Literal('age'), recipients: Type.Array(Type.String()) }),
    }),
    completedAt: Timestamp,
    /**
     * The backup committed just before this one, when there was one: its id and the sha256 of
     * its manifest object's bytes. The chain makes a deleted or swapped backup visible. Absent
     * in a cluster's first backup, and in manifests written before the chain was recorded.
     */
    previous: Type.Optional(ManifestLinkSchema),
  }),
]);
export type StoredManifest = Static<typeof StoredManifestSchema>;

/** The kit roles a backup lacks (a role with any missing file), in KIT_ROLES order; [] when its kit is complete. */
export function missingKitRoles(manifest: Pick<ArchiveManifest, 'kit'>): KitRole[] {
  const missing = new Set(manifest.kit.missing.map((m) => m.role));
  return KIT_ROLES.filter((r) => missing.has(r));
}

/** The bytes a backup's archive unpacks to: the snapshot and every kit file. */
export function contentBytes(manifest: Pick<ArchiveManifest, 'snapshot' | 'kit'>): number {
  return manifest.snapshot.size + manifest.kit.files.reduce((n, f) => n + f.size, 0);
}

/** The ArchiveManifest part of a StoredManifest, as it must appear inside the archive. */
export function archivePart(stored: StoredManifest): ArchiveManifest {
  const { archive: _archive, completedAt: _completedAt, previous: _previous, snapshot, ...rest } = stored;
  return { ...rest, snapshot: { entry: snapshot.entry, size: snapshot.size } };
}

function parseWith<T extends TSchema>(schema: T, text: string, what: string): Static<T> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ArchiveError(`${what} is not JSON: ${(err as Error).message}`);
  }
  if (typeof doc === 'object' && doc !== null && 'format' in doc && 'version' in doc) {
    const { format, version } = doc as { format: unknown; version: unknown };
    if (format === FORMAT && version !== FORMAT_VERSION) {
      throw new ArchiveError(`${what} is format version ${String(version)}; this Lifeboat reads version ${FORMAT_VERSION}`, {
        hint: 'use a Lifeboat release that knows this version',
      });
    }
  }
  const first = Value.Errors(schema, doc).First();
  if (first) throw new ArchiveError(`${what} is invalid at ${first.path || '/'}: ${first.message}`);
  return doc as Static<T>;
}

export function parseArchiveManifest(text: string): ArchiveManifest {
  return parseWith(ArchiveManifestSchema, text, 'the archive manifest');
}

export function parseStoredManifest(text: string, key: string): StoredManifest {
  return parseWith(StoredManifestSchema, text, `manifest ${key}`);
}

/** Stable JSON: manifests are compared byte for byte after a round trip. */
export function manifestJson(manifest: ArchiveManifest | StoredManifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}
