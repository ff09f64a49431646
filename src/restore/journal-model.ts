import { Type, type Static } from '@sinclair/typebox';

/**
 * What a restore's journal keeps besides its steps: the facts that later steps (and a resumed
 * or rolled-back apply) need, and the results it reports. Every field is optional: a step adds
 * its own, and a journal is read back at any point of the restore. Readers use these types; no
 * field is read through a cast.
 */
export const RestoreFactsSchema = Type.Object({
  /** fetch: the archive was downloaded, decrypted and every hash checked into the staging dir. */
  fetched: Type.Optional(Type.Boolean()),
  /** fetch: `etcdutl snapshot status` of the fetched snapshot (after the replay, in a point-in-time restore). */
  snapshot: Type.Optional(Type.Object({ revision: Type.Number(), totalKey: Type.Number(), bytes: Type.Number() })),
  /** fetch, point in time: the change log replayed onto the backup's snapshot. */
  replayed: Type.Optional(Type.Object({ targetRevision: Type.String(), events: Type.Integer(), transactions: Type.Integer(), leases: Type.Integer(), seconds: Type.Number() })),
  /** stop-etcd: the live revision just before etcd was stopped (in place). */
  revisionBeforeStop: Type.Optional(Type.String()),
  /** restore-snapshot: the identity (device:inode) of the restored data dir, so a swap can be resumed. */
  restored: Type.Optional(Type.String()),
  /** start-etcd: sha256 of the etcd manifest Lifeboat wrote. */
  etcdManifestSha256: Type.Optional(Type.String()),
  /** A throwaway etcd running now (lease cleanup, dry run): its PID, so a later process can stop it. */
  throwawayPid: Type.Optional(Type.Integer({ minimum: 1 })),
  /** place-files: files that differed from the kit, moved aside (host paths). */
  setAsideFiles: Type.Optional(Type.Array(Type.Object({ path: Type.String(), aside: Type.String() }))),
  /** place-files: files placed where there was none, journaled before each is written (rollback removes them). */
  placedFiles: Type.Optional(Type.Array(Type.String())),
});
export type RestoreFacts = Static<typeof RestoreFactsSchema>;

export const QuorumSchema = Type.Object({
  leader: Type.String(),
  revision: Type.String(),
  members: Type.Array(Type.Object({ name: Type.String(), clientURL: Type.String(), revision: Type.String() })),
});

export const LeaseCleanupSchema = Type.Object({
  /** Master leases of addresses in the new member set. */
  kept: Type.Array(Type.String()),
  /** Master leases of other addresses: removed (or, in a dry run, to be removed). */
  removed: Type.Array(Type.String()),
  /** Control-plane Node objects whose names are not members. */
  staleNodes: Type.Array(Type.String()),
  /** Of those, deleted (restore.deleteStaleNodes). */
  nodesDeleted: Type.Array(Type.String()),
  dryRun: Type.Boolean(),
});

export const JoinInstructionsSchema = Type.Object({
  /** Run on each other control-plane host. Holds a bootstrap token and the certificate key: a secret. */
  command: Type.String(),
  /** The uploaded certificates (and so the key) are deleted after two hours. */
  certificateKeyExpiresAt: Type.String(),
  hosts: Type.Array(Type.String()),
  before: Type.Array(Type.String()),
});

export const DryRunResultSchema = Type.Object({
  wouldWait: Type.Array(Type.String()),
  wouldRun: Type.Array(Type.String()),
  /** The restored member, served by a throwaway etcd. */
  etcd: Type.Optional(Type.Object({ revision: Type.String(), keyCount: Type.Number(), targetRevision: Type.String(), serves: Type.Boolean() })),
  /** The live etcd manifest against the one the restore would write. */
  etcdManifestDiff: Type.Optional(Type.String()),
});
export type DryRunResult = Static<typeof DryRunResultSchema>;

export const RestoreResultSchema = Type.Object({
  quorum: Type.Optional(QuorumSchema),
  cleanup: Type.Optional(LeaseCleanupSchema),
  kubeadmConfig: Type.Optional(Type.Object({ path: Type.String(), text: Type.String(), notes: Type.Array(Type.String()) })),
  kubeadmInit: Type.Optional(Type.Object({ args: Type.Array(Type.String()), output: Type.String() })),
  join: Type.Optional(JoinInstructionsSchema),
  dryRun: Type.Optional(DryRunResultSchema),
});
export type RestoreResult = Static<typeof RestoreResultSchema>;
