/**
 * A real kubeadm control plane in the lab: real `kubeadm init` on the first host and real
 * `kubeadm join --control-plane` on the others make a stacked-etcd cluster, with the pinned
 * Kubernetes and etcd 3.6 built from source (scripts/build-binaries.sh). Each host runs the lab
 * kubelet (./kubelet-main.ts), which runs the static pods with the real binaries.
 *
 * The apiserver encrypts Secrets at rest (aescbc, a key made per lab), as a production cluster
 * does; kubeadm does not distribute that file, so the lab writes it on every host before kubeadm
 * runs there, as an operator does.
 *
 * kubeadm runs every phase. Preflight errors that only a missing container runtime causes are
 * ignored by name (RUNTIME_PREFLIGHT_ERRORS); nothing else is skipped.
 */
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { etcdBinaries, kubernetesBinaries } from '../rig/binaries.ts';
import { addHost, createLab, destroyLab, execOnHost, spawnOnHost, writeHostsFiles, type HostRun, type Lab, type LabHost } from './hosts.ts';

/** The name of the control-plane endpoint; every host resolves it through its /etc/hosts. */
export const ENDPOINT_NAME = 'cluster-endpoint.lab';
export const CLUSTER_NAME = 'lab';
export const CRI_SOCKET = 'unix:///run/containerd/containerd.sock';

/**
 * The preflight checks that fail only because no container runtime (and so no kubelet binary)
 * is installed: the CRI socket and its version, pulling images, the kubelet's version, and the
 * system verification (which asks the kubelet too).
 */
export const RUNTIME_PREFLIGHT_ERRORS = ['CRI', 'ContainerRuntimeVersion', 'ImagePull', 'KubeletVersion', 'SystemVerification'];

const LAB_BIN = path.resolve(path.dirname(new URL(import.meta.url).pathname));

export interface KubeCluster {
  lab: Lab;
  hosts: LabHost[];
  kubernetesVersion: string;
  /** kubectl on `host` (default the first) with its admin.conf. */
  kubectl(args: string[], options?: { host?: LabHost; input?: string; allowFailure?: boolean }): Promise<HostRun>;
  /** The join material for another control-plane host. */
  join: { token: string; caCertHash: string; certificateKey: string };
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** The lab's network number (10.249.<net>.0/24); one cluster per number at a time. */
  net: number;
  dir: string;
  /** Host names; the first runs `kubeadm init`. */
  names?: string[];
  /** Called with each phase's name and seconds, for the figures. */
  onPhase?: (phase: string, seconds: number) => void;
  /** The lab outlives this process (the lab CLI); stop it with destroyLab. */
  detached?: boolean;
}

function bootstrapToken(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const pick = (n: number) => Array.from(randomBytes(n), (b) => chars[b % chars.length]).join('');
  return `${pick(6)}.${pick(16)}`;
}

function encryptionConfig(): string {
  return stringify({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources: ['secrets'], providers: [{ aescbc: { keys: [{ name: 'key1', secret: randomBytes(32).toString('base64') }] } }, { identity: {} }] }],
  });
}

const ENCRYPTION_FILE = '/etc/kubernetes/enc/encryption-config.yaml';

function clusterConfiguration(version: string): Record<string, unknown> {
  return {
    apiVersion: 'kubeadm.k8s.io/v1beta4',
    kind: 'ClusterConfiguration',
    clusterName: CLUSTER_NAME,
    kubernetesVersion: `v${version}`,
    controlPlaneEndpoint: `${ENDPOINT_NAME}:6443`,
    networking: { podSubnet: '10.244.0.0/16', serviceSubnet: '10.96.0.0/12' },
    apiServer: {
      extraArgs: [{ name: 'encryption-provider-config', value: ENCRYPTION_FILE }],
      extraVolumes: [{ name: 'encryption-config', hostPath: path.dirname(ENCRYPTION_FILE), mountPath: path.dirname(ENCRYPTION_FILE), readOnly: true, pathType: 'DirectoryOrCreate' }],
    },
    etcd: { local: { dataDir: '/var/lib/etcd' } },
  };
}

function nodeRegistration(host: LabHost): Record<string, unknown> {
  return { name: host.name, criSocket: CRI_SOCKET, ignorePreflightErrors: RUNTIME_PREFLIGHT_ERRORS };
}

/** sha256 of the CA's SubjectPublicKeyInfo, as `kubeadm join --discovery-token-ca-cert-hash` wants. */
export function caCertHash(caPem: string | Buffer): string {
  return `sha256:${createHash('sha256').update(createPublicKey(caPem).export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

/** Starts the lab kubelet on `host`. */
export function startKubelet(host: LabHost, detached = false): void {
  const kube = kubernetesBinaries();
  const args = [path.join(LAB_BIN, 'kubelet-main.ts'), '--log-dir', host.logDir, '--etcd', etcdBinaries('3.6').etcd, '--kube-bin-dir', path.dirname(kube.kubeadm), '--node-ip', host.address];
  spawnOnHost(host, process.execPath, args, path.join(host.logDir, 'kubelet.out'), { detached });
}

/**
 * Adds host `name` (10.249.<net>.<octet>) with nothing of Kubernetes on it yet: empty
 * `/etc/kubernetes` and `/var/lib/etcd`, the lab kubelet running, and ENDPOINT_NAME resolving on
 * every host of the lab to `endpoint` (default: this host's address, as the runbook has the
 * endpoint point at the host that restores a fresh control plane).
 */
export async function addBareHost(lab: Lab, name: string, octet: number, endpoint?: string): Promise<LabHost> {
  const host = await addHost(lab, name, octet);
  lab.aliases.set(ENDPOINT_NAME, endpoint ?? host.address);
  await writeHostsFiles(lab);
  startKubelet(host);
  return host;
}

async function timed<T>(phase: string, options: ClusterOptions, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await work();
  options.onPhase?.(phase, (performance.now() - start) / 1000);
  return result;
}

/** Runs kubeadm on `host` with `args`, its output in `<logDir>/kubeadm-<what>.log`. */
export async function kubeadm(host: LabHost, what: string, args: string[]): Promise<HostRun> {
  const result = await execOnHost(host, kubernetesBinaries().kubeadm, args, { allowFailure: true, timeoutMs: 600_000 });
  await writeFile(path.join(host.logDir, `kubeadm-${what}.log`), `${result.stdout}\n--- stderr\n${result.stderr}`);
  if (result.code !== 0) throw new Error(`kubeadm ${what} on ${host.name} failed (exit ${result.code}); see ${host.logDir}/kubeadm-${what}.log:\n${(result.stderr || result.stdout).trim().split('\n').slice(-20).join('\n')}`);
  return result;
}

/** Writes the lab's encryption config on `host` (the same key everywhere). */
async function placeEncryptionConfig(host: LabHost, text: string): Promise<void> {
  const file = path.join(host.dir, ENCRYPTION_FILE);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, text, { mode: 0o600 });
}

/** A new lab with `names` hosts, a real kubeadm cluster across them. */
export async function startKubeCluster(options: ClusterOptions): Promise<KubeCluster> {
  const names = options.names ?? ['cp-1', 'cp-2', 'cp-3'];
  const kube = kubernetesBinaries();
  const version = kube.version;
  const lab = await timed('lab', options, () => createLab(options.net, options.dir));
  const hosts: LabHost[] = [];
  try {
    for (const [i, name] of names.entries()) hosts.push(await addHost(lab, name, 11 + i));
    const first = hosts[0]!;
    // Every host resolves the endpoint name to the first host (no load balancer in the lab).
    lab.aliases.set(ENDPOINT_NAME, first.address);
    await writeHostsFiles(lab);
    const encryption = encryptionConfig();
    for (const h of hosts) {
      await placeEncryptionConfig(h, encryption);
      startKubelet(h, options.detached);
    }

    const join = { token: bootstrapToken(), caCertHash: '', certificateKey: randomBytes(32).toString('hex') };
    const initConfig = path.join(first.dir, 'kubeadm-init.yaml');
    await writeFile(
      initConfig,
      [
        {
          apiVersion: 'kubeadm.k8s.io/v1beta4',
          kind: 'InitConfiguration',
          bootstrapTokens: [{ token: join.token, ttl: '24h0m0s', usages: ['signing', 'authentication'], groups: ['system:bootstrappers:kubeadm:default-node-token'] }],
          certificateKey: join.certificateKey,
          localAPIEndpoint: { advertiseAddress: first.address, bindPort: 6443 },
          nodeRegistration: nodeRegistration(first),
        },
        clusterConfiguration(version),
      ]
        .map((d) => stringify(d))
        .join('---\n'),
    );
    await timed('kubeadm init', options, () => kubeadm(first, 'init', ['init', '--config', initConfig, '--upload-certs', '-v=1']));
    join.caCertHash = caCertHash(await readFile(path.join(first.dir, 'etc/kubernetes/pki/ca.crt')));

    for (const h of hosts.slice(1)) {
      const joinConfig = path.join(h.dir, 'kubeadm-join.yaml');
      await writeFile(
        joinConfig,
        stringify({
          apiVersion: 'kubeadm.k8s.io/v1beta4',
          kind: 'JoinConfiguration',
          discovery: { bootstrapToken: { apiServerEndpoint: `${ENDPOINT_NAME}:6443`, token: join.token, caCertHashes: [join.caCertHash] } },
          controlPlane: { localAPIEndpoint: { advertiseAddress: h.address, bindPort: 6443 }, certificateKey: join.certificateKey },
          nodeRegistration: nodeRegistration(h),
        }),
      );
      await timed(`kubeadm join ${h.name}`, options, () => kubeadm(h, `join`, ['join', '--config', joinConfig, '-v=1']));
    }

    const cluster: KubeCluster = {
      lab,
      hosts,
      kubernetesVersion: version,
      join,
      kubectl: (args, o = {}) => adminKubectl(o.host ?? first, args, o),
      stop: () => destroyLab(options.net),
    };
    await timed('ready', options, () => waitForNodes(cluster, names));
    return cluster;
  } catch (err) {
    if (process.env['LIFEBOAT_LAB_KEEP'] !== '1') await destroyLab(options.net);
    throw err;
  }
}

/** kubectl on `host` with its /etc/kubernetes/admin.conf; rejects on failure unless `allowFailure`. */
export function adminKubectl(host: LabHost, args: string[], options: { input?: string | undefined; allowFailure?: boolean | undefined } = {}): Promise<HostRun> {
  return execOnHost(host, kubernetesBinaries().kubectl, ['--kubeconfig', '/etc/kubernetes/admin.conf', ...args], { input: options.input, allowFailure: options.allowFailure, timeoutMs: 120_000 });
}

/** Waits until every apiserver answers /readyz and every host's Node object exists. */
export async function waitForNodes(cluster: KubeCluster, names: string[], timeoutMs = 120_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ready = await Promise.all(cluster.hosts.map((h) => cluster.kubectl(['get', '--raw', '/readyz'], { host: h, allowFailure: true })));
    const nodes = await cluster.kubectl(['get', 'nodes', '-o', 'name'], { allowFailure: true });
    const have = new Set(nodes.stdout.split('\n').map((l) => l.replace(/^node\//, '').trim()));
    if (ready.every((r) => r.code === 0 && r.stdout.trim() === 'ok') && names.every((n) => have.has(n))) return;
    if (Date.now() > until) throw new Error(`the lab cluster is not ready after ${timeoutMs / 1000} s: readyz ${ready.map((r) => r.stdout.trim() || r.stderr.trim()).join(' | ')}; nodes ${[...have].join(',')}`);
    await sleep(500);
  }
}
