/**
 * A kubeadm control plane of N nodes on one machine, for restore tests: one host root per node
 * (`<base>/<name>/root`, playing `/`), each with a kubeadm tree (`/etc/kubernetes`: shared CAs,
 * its own leaf certificates, static pod manifests for etcd and kube-apiserver) and a stand-in
 * kubelet (./kubelet.ts) running what the manifests describe. Every URL is on 127.0.0.1 with
 * ports free at that moment; each member's data dir is `/var/lib/etcd` under its root (the
 * kubelet creates it, DirectoryOrCreate, and etcd bootstraps the cluster in it).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import type { Etcd3 } from 'etcd3';
import { DEFAULT_ETCD_VERSION, etcdBinaries, type EtcdVersion } from './binaries.ts';
import { tlsClient, waitForLeader, type TlsFiles } from './etcd.ts';
import { StandInKubelet } from './kubelet.ts';
import { makeKubeadmTree, type KubeadmTree } from './pki.ts';
import { freePorts } from './ports.ts';

export interface NodeRoot {
  name: string;
  /** The host root (plays `/`). */
  root: string;
  tree: KubeadmTree;
  clientUrl: string;
  peerUrl: string;
  apiserverPort: number;
  /** The data dir on the host, as a local path. */
  dataDir: string;
  /** The etcd client certificate (healthcheck-client) of this node, as local paths. */
  tls: TlsFiles;
  logDir: string;
  kubelet: StandInKubelet | undefined;
}

export interface ClusterRoots {
  nodes: NodeRoot[];
  /** The initial cluster token the members bootstrapped with. */
  token: string;
  etcd: string;
  /** A TLS client for the given members (default: all). Close it when done. */
  client(names?: string[]): Etcd3;
  /** Waits until every member answers with a leader, and every apiserver's /readyz with 200. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every kubelet and what it runs. */
  stop(): Promise<void>;
}

/** `version` of etcd: default 3.6. */
export async function startClusterRoots(opts: { base: string; names?: string[]; version?: EtcdVersion }): Promise<ClusterRoots> {
  const names = opts.names ?? ['cp-1', 'cp-2', 'cp-3'];
  const bins = etcdBinaries(opts.version ?? DEFAULT_ETCD_VERSION);
  const ports = await freePorts(names.length * 3);
  const token = `lifeboat-rig-${process.pid}-${Date.now()}`;
  const peerUrl = (i: number) => `https://127.0.0.1:${ports[3 * i + 1]}`;
  const initialCluster = names.map((n, i) => `${n}=${peerUrl(i)}`).join(',');
  const nodes: NodeRoot[] = [];
  let first: KubeadmTree | undefined;
  for (const [i, name] of names.entries()) {
    const root = path.join(opts.base, name, 'root');
    const clientPort = ports[3 * i]!;
    const tree: KubeadmTree = await makeKubeadmTree(path.join(root, 'etc/kubernetes'), {
      hosts: names,
      ...(first ? { shareCasWith: first } : {}),
      etcd: { name, address: '127.0.0.1', clientPort, peerPort: ports[3 * i + 1]!, initialCluster, initialClusterState: 'new', initialClusterToken: token },
      apiserver: { address: '127.0.0.1', securePort: ports[3 * i + 2]!, bindAddress: '127.0.0.1', etcdServers: `https://127.0.0.1:${clientPort}` },
    });
    first ??= tree;
    nodes.push({
      name,
      root,
      tree,
      clientUrl: `https://127.0.0.1:${clientPort}`,
      peerUrl: peerUrl(i),
      apiserverPort: ports[3 * i + 2]!,
      dataDir: path.join(root, 'var/lib/etcd'),
      tls: { caFile: tree.etcd.caCert, certFile: tree.etcd.clientCert, keyFile: tree.etcd.clientKey },
      logDir: path.join(opts.base, name, 'logs'),
      kubelet: undefined,
    });
  }
  await mkdir(opts.base, { recursive: true });
  for (const node of nodes) node.kubelet = await StandInKubelet.start({ root: node.root, etcd: bins.etcd, logDir: node.logDir });

  const client = (which = names) => tlsClient(nodes.filter((n) => which.includes(n.name)).map((n) => n.clientUrl), nodes[0]!.tls, { dialTimeout: 2000 });

  const cluster: ClusterRoots = {
    nodes,
    token,
    etcd: bins.etcd,
    client,
    async waitHealthy(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (const node of nodes) {
        await waitForLeader(node.clientUrl, node.tls, () => {
          if (Date.now() > until) throw new Error(`etcd ${node.name} not healthy after ${timeoutMs} ms; see ${node.logDir}: ${JSON.stringify(node.kubelet?.pods())}`);
        }, 1000);
        for (;;) {
          if ((await readyz(node)) === 200) break;
          if (Date.now() > until) throw new Error(`apiserver of ${node.name} not ready after ${timeoutMs} ms; see ${node.logDir}`);
          await sleep(100);
        }
      }
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kubelet?.stop()));
    },
  };
  try {
    await cluster.waitHealthy();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** The status of GET /readyz on a node's apiserver (its CA), or undefined when nothing answers. */
export function readyz(node: NodeRoot): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: node.apiserverPort, path: '/readyz', ca: readFileSync(path.join(node.tree.pki, 'ca.crt')), servername: 'kubernetes', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(undefined));
    req.end();
  });
}
