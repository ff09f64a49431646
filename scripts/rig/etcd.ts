import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { freePorts } from './ports.ts';
import type { KubeadmTree } from './pki.ts';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export type EtcdVersion = '3.5' | '3.4';

export interface EtcdBinaries {
  version: EtcdVersion;
  etcd: string;
  etcdctl: string;
  /** Only 3.5 has etcdutl. */
  etcdutl?: string;
}

/** etcd 3.5 from Debian trixie (unpacked by scripts/install-deps.sh), or bookworm's 3.4. */
export function etcdBinaries(version: EtcdVersion): EtcdBinaries {
  const dir = version === '3.5' ? path.join(REPO, '.cache/etcd-3.5/usr/bin') : '/usr/bin';
  const bins: EtcdBinaries = { version, etcd: path.join(dir, 'etcd'), etcdctl: path.join(dir, 'etcdctl') };
  if (version === '3.5') bins.etcdutl = path.join(dir, 'etcdutl');
  for (const b of [bins.etcd, bins.etcdctl, bins.etcdutl]) {
    if (b !== undefined && !existsSync(b)) throw new Error(`${b} is missing: run scripts/install-deps.sh (as root) first`);
  }
  return bins;
}

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

export interface EtcdCluster {
  tree: KubeadmTree;
  bins: EtcdBinaries;
  members: RigMember[];
  endpoints: string[];
  tls: { caFile: string; certFile: string; keyFile: string };
  /** A TLS client for all members (or the given endpoints). Close it when done. */
  client(endpoints?: string[]): Etcd3;
  /** etcdctl with the client certificate against every member; returns stdout. */
  etcdctl(args: string[]): Promise<string>;
  kill(name: string, signal?: NodeJS.Signals): void;
  /** Restart a stopped member on its data dir. */
  start(name: string): Promise<void>;
  /** SIGTERM every member, SIGKILL after 5 s; waits until they are gone. */
  stop(): Promise<void>;
}

/** Our children, killed by PID if this process exits without stopping them. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export async function startEtcd(options: StartOptions): Promise<EtcdCluster> {
  const bins = etcdBinaries(options.version ?? '3.5');
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
      const tool = bins.etcdutl ?? bins.etcdctl;
      await run(tool, ['snapshot', 'restore', options.restoreFrom, '--name', m.name, '--data-dir', m.dataDir, '--initial-cluster', initialCluster, '--initial-cluster-token', token, '--initial-advertise-peer-urls', m.peerUrl], {
        env: { ...process.env, ETCDCTL_API: '3' },
      });
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
    '--experimental-initial-corrupt-check=true',
    '--logger=zap',
    '--log-outputs=stderr',
    ...(options.extraArgs ?? []),
  ];

  const spawnMember = (m: RigMember) => {
    const log = openSync(m.logFile, 'a');
    const child = spawn(bins.etcd, argsFor(m), { stdio: ['ignore', log, log], detached: options.detached ?? false });
    closeSync(log);
    m.pid = child.pid;
    if (options.detached) child.unref();
    else {
      children.add(child);
      child.once('exit', () => children.delete(child));
    }
    return child;
  };
  const processes = new Map<string, ChildProcess>();
  for (const m of members) processes.set(m.name, spawnMember(m));

  const tls = { caFile: t.caCert, certFile: t.clientCert, keyFile: t.clientKey };
  const credentials = { rootCertificate: readFileSync(tls.caFile), certChain: readFileSync(tls.certFile), privateKey: readFileSync(tls.keyFile) };
  const client = (endpoints = members.map((m) => m.clientUrl)) =>
    new Etcd3({
      hosts: endpoints,
      credentials,
      grpcOptions: { 'grpc.ssl_target_name_override': 'localhost', 'grpc.max_receive_message_length': 64 << 20 },
    });

  const waitHealthy = async (which: RigMember[]) => {
    const deadline = Date.now() + 30_000;
    const check = (m: RigMember) => {
      const exited = processes.get(m.name)?.exitCode;
      if (exited !== null && exited !== undefined) {
        throw new Error(`etcd ${m.name} exited with ${exited}; see ${m.logFile}:\n${tail(m.logFile)}`);
      }
      if (Date.now() > deadline) throw new Error(`etcd ${m.name} not healthy after 30 s; see ${m.logFile}:\n${tail(m.logFile)}`);
    };
    for (const m of which) {
      // Wait for the port first: a gRPC client that fails to connect backs off for seconds.
      while (!(await listening(m.clientUrl))) {
        check(m);
        await new Promise((r) => setTimeout(r, 50));
      }
      for (;;) {
        check(m);
        const c = client([m.clientUrl]);
        try {
          const status = await c.maintenance.status({ deadline: new Date(Date.now() + 2000) });
          if (status.leader !== '0') break;
        } catch {
          // no leader yet
        } finally {
          c.close();
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  const cluster: EtcdCluster = {
    tree,
    bins,
    members,
    endpoints: members.map((m) => m.clientUrl),
    tls,
    client,
    async etcdctl(args) {
      const { stdout } = await run(bins.etcdctl, [`--endpoints=${cluster.endpoints.join(',')}`, `--cacert=${tls.caFile}`, `--cert=${tls.certFile}`, `--key=${tls.keyFile}`, ...args], {
        env: { ...process.env, ETCDCTL_API: '3' },
        maxBuffer: 64 << 20,
      });
      return stdout;
    },
    kill(name, signal = 'SIGKILL') {
      const m = members.find((x) => x.name === name);
      if (m?.pid !== undefined) process.kill(m.pid, signal);
    },
    async start(name) {
      const m = members.find((x) => x.name === name);
      if (!m) throw new Error(`no member ${name}`);
      processes.set(m.name, spawnMember(m));
      await waitHealthy([m]);
    },
    async stop() {
      await Promise.all(
        [...processes.values()].map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              const force = setTimeout(() => child.kill('SIGKILL'), 5000);
              child.once('exit', () => {
                clearTimeout(force);
                resolve();
              });
              child.kill('SIGTERM');
            }),
        ),
      );
    },
  };
  try {
    await waitHealthy(members);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

function listening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-5).join('\n');
  } catch {
    return '';
  }
}
