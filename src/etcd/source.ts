import type { EtcdFacts } from '../archive/manifest.ts';

/** Where snapshots come from. The etcd3 implementation is beside this file. */
export interface SnapshotSource {
  /**
   * Asks every reachable member for its Status and picks the one to snapshot: healthy (no
   * errors, not a learner), a follower before the leader, then the newest revision. Right after
   * its Status, counts that member's keys at exactly that revision (`keyCount`,
   * `registryKeyCount`); when counting fails the facts lack the counts.
   */
  chooseMember(): Promise<EtcdFacts>;
  /** Starts the snapshot from that member; resolves once the first bytes (and the size) arrive. */
  openSnapshot(member: EtcdFacts, signal?: AbortSignal): Promise<OpenSnapshot>;
  /**
   * One key's value on that member at exactly `member.revision` (a serializable read, like the
   * counts), or undefined when the key did not exist then. EtcdUnavailableError when the member
   * does not answer or the revision was compacted. Optional: a source without it cannot give the
   * backup what it reads from etcd besides the snapshot (the kubeadm ClusterConfiguration).
   */
  readKey?(member: EtcdFacts, key: string): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

export interface OpenSnapshot {
  /** The size of the database; the stream carries it plus a 32-byte sha256 trailer. */
  dbSize: number;
  /** Raw bytes, as `etcdctl snapshot save` would write them. Errors are EtcdUnavailableError. */
  chunks: AsyncIterable<Buffer>;
}

/** The snapshot file is the database followed by sha256(database). */
export const TRAILER_BYTES = 32;
