import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterRoots, NodeRoot } from '../../scripts/rig/cluster-roots.ts';

/** The keys under `prefix` that one member serves (a serializable read of that member alone), and its revision. */
export async function keysOf(cluster: ClusterRoots, node: NodeRoot, prefix = ''): Promise<{ keys: Map<string, Buffer>; revision: bigint }> {
  const client = cluster.client([node.name]);
  try {
    const range = prefix === '' ? client.getAll() : client.getAll().prefix(prefix);
    const res = await range.serializable(true).exec();
    return { keys: new Map(res.kvs.map((kv) => [kv.key.toString(), kv.value])), revision: BigInt(res.header.revision) };
  } finally {
    client.close();
  }
}

/** A digest of what must not change while nothing live is touched: manifests, PKI, which data dirs exist, and the member's files. */
export async function liveDigest(node: NodeRoot): Promise<string> {
  const hash = createHash('sha256');
  const k8s = path.join(node.root, 'etc/kubernetes');
  for (const f of (await readdir(k8s, { recursive: true })).sort()) {
    const p = path.join(k8s, f);
    const s = await stat(p);
    hash.update(`${f} ${s.mode}\n`);
    if (s.isFile()) hash.update(await readFile(p));
  }
  hash.update((await readdir(path.join(node.root, 'var/lib'))).sort().join(','));
  hash.update((await readdir(path.join(node.dataDir, 'member'))).sort().join(','));
  return hash.digest('hex');
}
