import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { manifestJson, type StoredManifest } from '../../src/archive/manifest.ts';
import { runBackup, type BackupSettings } from '../../src/backup/run.ts';
import type { Config } from '../../src/config/schema.ts';
import { createEncryptStream } from '../../src/crypto/age.ts';
import { Etcd3SnapshotSource } from '../../src/etcd/etcd3-source.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { archiveKey, formatBackupId, manifestKey, signatureKey } from '../../src/store/layout.ts';
import type { BackupStore } from '../../src/store/store.ts';
import { sampleManifest, sha256 } from './fixtures.ts';
import { quietLog } from './lifeboat.ts';
import { TEST_SIGNER, TEST_TRUST } from './signing.ts';

/**
 * A real backup of `config`'s etcd into `store`, in this process, as `lifeboat backup` takes it
 * (quiet log); `settings` override the config's.
 */
export async function takeBackup(config: Config, store: BackupStore, settings: Partial<BackupSettings> = {}): Promise<StoredManifest> {
  const etcd = new Etcd3SnapshotSource(config.etcd, quietLog);
  try {
    return await runBackup(
      { store, etcd, encrypt: createEncryptStream, log: quietLog, now: () => new Date(), signer: TEST_SIGNER, previous: () => new Catalog(store, config.cluster, { trust: TEST_TRUST }).newestLink() },
      { cluster: config.cluster, node: config.node, kit: config.kit, compression: config.compression, recipients: config.encryption.recipients, progressIntervalSeconds: 10, maxClockSkewSeconds: config.backup.maxClockSkewSeconds, ...settings },
    );
  } finally {
    await etcd.close();
  }
}

/**
 * A committed backup as `runBackup` leaves it, without etcd: a stand-in archive (random bytes,
 * its real size and sha256 in the manifest), then the manifest's signature (by the test key) and
 * the manifest, all written with `retain`. `revision` is the id's and the manifest's etcd revision.
 */
export async function putBackup(store: BackupStore, cluster: string, createdAt: Date, options: { revision?: string; archiveBytes?: number; retain?: boolean } = {}): Promise<StoredManifest> {
  const id = formatBackupId(createdAt, options.revision ?? String(createdAt.getTime() % 1_000_000));
  const archive = randomBytes(options.archiveBytes ?? 1024);
  const key = archiveKey(cluster, id, 'none');
  const retain = options.retain ?? true;
  await store.put(key, Readable.from([archive]), { retain });
  const base = sampleManifest(100, [], id);
  const manifest: StoredManifest = {
    ...base,
    cluster,
    createdAt: createdAt.toISOString(),
    snapshot: { ...base.snapshot, sha256: sha256('snapshot'), dbSha256: sha256('db') },
    ...(options.revision === undefined ? {} : { etcd: { ...base.etcd, revision: options.revision } }),
    archive: { key, size: archive.length, sha256: sha256(archive), compression: { algorithm: 'none', level: 1 }, encryption: { format: 'age', recipients: ['age1test'] } },
    completedAt: createdAt.toISOString(),
  };
  const bytes = Buffer.from(manifestJson(manifest));
  await store.put(signatureKey(cluster, id), Readable.from([TEST_SIGNER.sign(bytes)]), { retain });
  await store.put(manifestKey(cluster, id), Readable.from([bytes]), { retain });
  return manifest;
}
