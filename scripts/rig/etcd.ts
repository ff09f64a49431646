import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { acceptsConnections } from '../../src/exec/ports.ts';
import { DEFAULT_ETCD_VERSION, etcdBinaries, type EtcdBinaries, type EtcdVersion } from './binaries.ts';
import { makeKubeadmTree, type KubeadmTree } from './pki.ts';
import { populateRig, type PopulateOptions } from './populate.ts';
import { freePorts } from './ports.ts';
import { hasExited, spawnLogged, stopChild, tail } from './process.ts';

const run = promisify(execFile);

/**
 * kubeadm's initial corruption check, spelled as each version accepts it without a warning: 3.6
 * deprecated `--experimental-initial-corrupt-check` for the feature gate, which 3.5 does not have.
 */
const INITIAL_CORRUPT_CHECK: Record<EtcdVersion, string> = {
  '3.6': '--feature-gates=InitialCorruptCheck=true',
  '3.5': '--experimental-initial-corrupt-check=true',
};

export interface RigMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logFile: string;
  pid: number | undefined;
}

export interface StartOptions {
  tree: KubeadmTree;
  members: 1 | 3;
  /** Default 3.6. */
  version?: EtcdVersion;
  /** Data dirs, logs and (with `restoreFrom`) restored members go here. */
  dataRoot: string;
  names?: string[];
  extraArgs?: string[];
  /** Restore every member from this snapshot file (etcdutl, new token) before starting. */
  restoreFrom?: string;
  /** Spawn detached, to outlive this process (the rig CLI); tests leave this off. */
  detached?: boolean;
}

export interface TlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface EtcdCluster {
  tree: KubeadmTree;
  bins: EtcdBinaries;
  members: RigMember[];
  endpoints: string[];
  tls: TlsFiles;
  /** A TLS client for all members (or the given endpoints). Close it when done. */
  client(endpoints?: string[]): Etcd3;
  /** etcdctl with the client certificate against every member; returns stdout. */
  etcdctl(args: string[]): Promise<string>;
  kill(name: string, signal?: NodeJS.Signals): void;
  /** SIGTERM every member, SIGKILL after 5 s; waits until they are gone. */
  stop(): Promise<void>;
}

export async function startEtcd(options: StartOptions): Promise<EtcdCluster> {
  const bins = etcdBinaries(options.version ?? DEFAULT_ETCD_VERSION);
  const count = options.members;
  const names = options.names ?? Array.from({ length: count }, (_, i) => `m${i + 1}`);
  const ports = await freePorts(count * 2);
  const token = `lifeboat-rig-${process.pid}-${Date.now()}`;
  await mkdir(options.dataRoot, { recursive: true });
  const members: RigMember[] = names.map((name, i) => ({
    name,
    clientUrl: `https://127.0.0.1:${ports[2 * i]}`,
    peerUrl: `https://127.0.0.1:${ports[2 * i + 1]}`,
    dataDir: path.join(options.dataRoot, `${name}.etcd`),
    logFile: path.join(options.dataRoot, `${name}.log`),
    pid: undefined,
  }));
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const { tree } = options;
  const t = tree.etcd;

  if (options.restoreFrom) {
    for (const m of members) {
      await run(bins.etcdutl, ['snapshot', 'restore', options.restoreFrom, '--name', m.name, '--data-dir', m.dataDir, '--initial-cluster', initialCluster, '--initial-cluster-token', token, '--initial-advertise-peer-urls', m.peerUrl]);
    }
  }

  const argsFor = (m: RigMember) => [
    `--name=${m.name}`,
    `--data-dir=${m.dataDir}`,
    `--listen-client-urls=${m.clientUrl}`,
    `--advertise-client-urls=${m.clientUrl}`,
    `--listen-peer-urls=${m.peerUrl}`,
    `--initial-advertise-peer-urls=${m.peerUrl}`,
    `--initial-cluster=${initialCluster}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=${token}`,
    '--client-cert-auth=true',
    `--trusted-ca-file=${t.caCert}`,
    `--cert-file=${t.serverCert}`,
    `--key-file=${t.serverKey}`,
    '--peer-client-cert-auth=true',
    `--peer-trusted-ca-file=${t.caCert}`,
    `--peer-cert-file=${t.peerCert}`,
    `--peer-key-file=${t.peerKey}`,
    '--snapshot-count=10000',
    INITIAL_CORRUPT_CHECK[bins.minor],
    '--logger=zap',
    '--log-outputs=stderr',
    ...(options.extraArgs ?? []),
  ];

  const processes = members.map((m) => {
    const child = spawnLogged(bins.etcd, argsFor(m), m.logFile, { detached: options.detached });
    m.pid = child.pid;
    return child;
  });

  const tls: TlsFiles = { caFile: t.caCert, certFile: t.clientCert, keyFile: t.clientKey };
  const cluster: EtcdCluster = {
    tree,
    bins,
    members,
    endpoints: members.map((m) => m.clientUrl),
    tls,
    client: (endpoints = members.map((m) => m.clientUrl)) => tlsClient(endpoints, tls),
    async etcdctl(args) {
      const { stdout } = await run(bins.etcdctl, [`--endpoints=${cluster.endpoints.join(',')}`, `--cacert=${tls.caFile}`, `--cert=${tls.certFile}`, `--key=${tls.keyFile}`, ...args], {
        maxBuffer: 64 << 20,
      });
      return stdout;
    },
    kill(name, signal = 'SIGKILL') {
      const m = members.find((x) => x.name === name);
      if (m?.pid !== undefined) process.kill(m.pid, signal);
    },
    async stop() {
      await Promise.all(processes.map((child) => stopChild(child)));
    },
  };
  try {
    const deadline = Date.now() + 30_000;
    for (const [i, m] of members.entries()) {
      const child = processes[i]!;
      await waitForLeader(m.clientUrl, tls, () => {
        if (hasExited(child)) throw new Error(`etcd ${m.name} exited with ${child.exitCode ?? child.signalCode}; see ${m.logFile}:\n${tail(m.logFile, 5)}`);
        if (Date.now() > deadline) throw new Error(`etcd ${m.name} not healthy after 30 s; see ${m.logFile}:\n${tail(m.logFile, 5)}`);
      });
    }
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

export interface HostEtcdOptions extends Omit<StartOptions, 'tree' | 'dataRoot'> {
  /** Extra SANs of the etcd certificates (makeKubeadmTree's `hosts`). */
  hosts?: string[];
  clusterName?: string;
  /** Written with populate() before the etcd is handed over. */
  populate?: PopulateOptions;
}

/**
 * A kubeadm node on disk and its etcd: the host root `<dir>/host` (it plays `/`; the kubeadm tree
 * is its /etc/kubernetes) and an etcd with that tree's certificates, its data and logs in
 * `<dir>/etcd`, optionally filled with populate(). Stop it with `etcd.stop()`.
 */
export async function startEtcdHost(dir: string, options: HostEtcdOptions): Promise<{ etcd: EtcdCluster; hostRoot: string }> {
  const { hosts, clusterName, populate, ...start } = options;
  const hostRoot = path.join(dir, 'host');
  const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'), { hosts, clusterName });
  const etcd = await startEtcd({ ...start, tree, dataRoot: path.join(dir, 'etcd') });
  if (populate) {
    try {
      await populateRig(etcd, populate);
    } catch (err) {
      await etcd.stop();
      throw err;
    }
  }
  return { etcd, hostRoot };
}

/** A client of `endpoints` over TLS with these files (kubeadm's serving certificates name localhost). Close it when done. */
export function tlsClient(endpoints: string[], tls: TlsFiles, options: { dialTimeout?: number } = {}): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    credentials: { rootCertificate: readFileSync(tls.caFile), certChain: readFileSync(tls.certFile), privateKey: readFileSync(tls.keyFile) },
    ...(options.dialTimeout === undefined ? {} : { dialTimeout: options.dialTimeout }),
    grpcOptions: { 'grpc.ssl_target_name_override': 'localhost', 'grpc.max_receive_message_length': 64 << 20 },
  });
}

/** One member's Status (its `leader` is '0' while it has none), or undefined if it does not answer within `timeoutMs`. */
export async function memberStatus(endpoint: string, tls: TlsFiles, timeoutMs = 2000): Promise<Awaited<ReturnType<Etcd3['maintenance']['status']>> | undefined> {
  const client = tlsClient([endpoint], tls, { dialTimeout: timeoutMs });
  try {
    return await client.maintenance.status({ deadline: new Date(Date.now() + timeoutMs) });
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

/** Polls the member at `endpoint` until it answers Status with a leader; `giveUp` runs before each try and throws to stop waiting. */
export async function waitForLeader(endpoint: string, tls: TlsFiles, giveUp: () => void, timeoutMs = 2000): Promise<void> {
  const { hostname, port } = new URL(endpoint);
  for (;;) {
    giveUp();
    // The port first: a gRPC client that fails to connect backs off for seconds.
    if (await acceptsConnections(hostname, Number(port))) {
      const status = await memberStatus(endpoint, tls, timeoutMs);
      if (status !== undefined && status.leader !== '0') return;
    }
    await sleep(100);
  }
}
