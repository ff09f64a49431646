import type { Etcd3 } from 'etcd3';
import { startEtcdHost, type EtcdCluster } from '../rig/etcd.ts';
import { populate } from '../rig/populate.ts';
import { MiB } from './measure.ts';
import type { Teardown } from './teardown.ts';

export interface FilledEtcd {
  etcd: EtcdCluster;
  /** Plays `/`: the kubeadm tree is at `<hostRoot>/etc/kubernetes`. */
  hostRoot: string;
  /** The database size reached (bytes), at least the target. */
  dbSize: number;
  /** etcdctl's endpoint and TLS flags, as a user would pass them on a kubeadm node. */
  etcdctlFlags: string[];
}

/**
 * A single-member TLS etcd 3.6 (the pinned default) with a kubeadm-shaped tree under `<dir>/host`, filled with
 * Kubernetes-shaped keys (values 1–100 KiB, about 3.3:1 compressible) until its database is
 * at least `targetBytes`. Stopped by `teardown`.
 */
export async function startFilledEtcd(dir: string, targetBytes: number, teardown: Teardown): Promise<FilledEtcd> {
  // etcd's recommended maximum is 8 GiB: the quota is above it, so that an 8 GiB database fits.
  const { etcd, hostRoot } = await startEtcdHost(dir, { members: 1, extraArgs: ['--quota-backend-bytes=12884901888'] });
  teardown.add('stop etcd', () => etcd.stop());
  const dbSize = await fillTo(etcd, targetBytes);
  const etcdctlFlags = [`--endpoints=${etcd.endpoints[0]}`, `--cacert=${etcd.tls.caFile}`, `--cert=${etcd.tls.certFile}`, `--key=${etcd.tls.keyFile}`];
  return { etcd, hostRoot, dbSize, etcdctlFlags };
}

/**
 * Puts Kubernetes-shaped keys (values 1–100 KiB, about 3.3:1 compressible) through a client of
 * `rig` until the database is at least `targetBytes`; returns the size reached.
 */
export async function fillTo(rig: { client(): Etcd3 }, targetBytes: number): Promise<number> {
  const client = rig.client();
  try {
    let dbSize = 0;
    const t0 = performance.now();
    for (let batch = 0; dbSize < targetBytes; batch++) {
      const keys = Math.max(1000, Math.ceil((targetBytes - dbSize) / (51 * 1024)));
      await populate(client, { keys, valueBytes: [1024, 100 * 1024], seed: 1000 + batch, prefix: `/registry/b${batch}`, concurrency: 64 });
      dbSize = Number((await client.maintenance.status()).dbSize);
      console.error(`populated: database ${(dbSize / MiB).toFixed(0)} MiB after ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    return dbSize;
  } finally {
    client.close();
  }
}
