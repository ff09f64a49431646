import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { etcdImage } from './binaries.ts';

const run = promisify(execFile);

/** Absolute paths of a kubeadm-shaped /etc/kubernetes made under a temp root. */
export interface KubeadmTree {
  /** Plays /etc/kubernetes. */
  root: string;
  pki: string;
  etcd: {
    caCert: string;
    caKey: string;
    serverCert: string;
    serverKey: string;
    peerCert: string;
    peerKey: string;
    /** O=system:masters, CN=kube-etcd-healthcheck-client: what Lifeboat uses. */
    clientCert: string;
    clientKey: string;
  };
  manifests: string;
  clusterConfiguration: string;
  encryptionConfig: string;
}

interface Cert {
  subject: string;
  ca?: boolean;
  sans?: string[];
  usage?: 'server' | 'client' | 'both';
}

/** RSA-2048 in PKCS#1 form, as kubeadm writes it, mode 0600. */
async function key(file: string): Promise<void> {
  await run('openssl', ['genrsa', '-traditional', '-out', file, '2048']);
  await chmod(file, 0o600);
}

async function cert(work: string, file: string, keyFile: string, spec: Cert, issuer?: { cert: string; key: string }): Promise<void> {
  const ext = [
    spec.ca ? 'basicConstraints=critical,CA:TRUE' : 'basicConstraints=critical,CA:FALSE',
    spec.ca ? 'keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign' : 'keyUsage=critical,digitalSignature,keyEncipherment',
  ];
  if (spec.usage) ext.push(`extendedKeyUsage=${{ server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[spec.usage]}`);
  if (spec.sans?.length) ext.push(`subjectAltName=${spec.sans.join(',')}`);
  const config = path.join(work, `${path.basename(file)}-${randomBytes(3).toString('hex')}.cnf`);
  await writeFile(config, `[req]\ndistinguished_name=dn\nprompt=no\n[dn]\n[ext]\n${ext.join('\n')}\n`);
  const args = ['req', '-x509', '-new', '-key', keyFile, '-subj', spec.subject, '-days', '3650', '-config', config, '-extensions', 'ext', '-out', file];
  if (issuer) args.push('-CA', issuer.cert, '-CAkey', issuer.key);
  await run('openssl', args);
}

async function pair(work: string, base: string, spec: Cert, issuer?: { cert: string; key: string }): Promise<{ cert: string; key: string }> {
  await key(`${base}.key`);
  await cert(work, `${base}.crt`, `${base}.key`, spec, issuer);
  return { cert: `${base}.crt`, key: `${base}.key` };
}

/**
 * Writes a kubeadm-shaped tree under `root` (which plays /etc/kubernetes): the PKI, static pod
 * manifests, an EncryptionConfiguration named by the apiserver manifest, and a kubeadm
 * ClusterConfiguration. `hosts` are extra SANs of the etcd serving and peer certificates.
 * With `shareCasWith`, the CAs (and the service-account key pair) are copied from that tree and
 * only the leaf certificates are new, as on the control-plane nodes of one kubeadm cluster.
 * `etcd` and `apiserver` shape the static pod manifests (defaults: one member cp-1 on 10.0.0.1).
 */
export async function makeKubeadmTree(
  root: string,
  opts: { hosts?: string[]; clusterName?: string; shareCasWith?: KubeadmTree; etcd?: EtcdPodOptions; apiserver?: ApiserverPodOptions } = {},
): Promise<KubeadmTree> {
  const pki = path.join(root, 'pki');
  const etcdDir = path.join(pki, 'etcd');
  const manifests = path.join(root, 'manifests');
  await mkdir(etcdDir, { recursive: true, mode: 0o755 });
  await mkdir(manifests, { recursive: true });
  await mkdir(path.join(root, 'enc'), { recursive: true });
  if (opts.shareCasWith) {
    for (const f of CA_FILES) {
      await copyFile(path.join(opts.shareCasWith.pki, f), path.join(pki, f));
      await chmod(path.join(pki, f), (await stat(path.join(opts.shareCasWith.pki, f))).mode & 0o777);
    }
  } else {
    const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-pki-'));
    try {
      await Promise.all([
        pair(work, path.join(etcdDir, 'ca'), { subject: '/CN=etcd-ca', ca: true }),
        pair(work, path.join(pki, 'ca'), { subject: '/CN=kubernetes', ca: true }),
        pair(work, path.join(pki, 'front-proxy-ca'), { subject: '/CN=front-proxy-ca', ca: true }),
        key(path.join(pki, 'sa.key')),
      ]);
      await run('openssl', ['rsa', '-in', path.join(pki, 'sa.key'), '-pubout', '-out', path.join(pki, 'sa.pub')]);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  await issueLeafCerts(pki, { hosts: opts.hosts ?? [] });

  const encryptionConfig = path.join(root, 'enc', 'enc.yaml');
  await writeFile(
    encryptionConfig,
    `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: ${randomBytes(32).toString('base64')}\n      - identity: {}\n`,
    { mode: 0o600 },
  );
  const clusterName = opts.clusterName ?? 'lifeboat-test';
  const clusterConfiguration = path.join(root, 'kubeadm-config.yaml');
  await writeFile(
    clusterConfiguration,
    `apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nclusterName: ${clusterName}\nkubernetesVersion: v1.30.4\ncontrolPlaneEndpoint: cp.example.internal:6443\ncertificatesDir: /etc/kubernetes/pki\netcd:\n  local:\n    dataDir: /var/lib/etcd\nnetworking:\n  dnsDomain: cluster.local\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\napiServer:\n  extraArgs:\n    encryption-provider-config: /etc/kubernetes/enc/enc.yaml\n`,
  );
  await writeFile(path.join(manifests, 'etcd.yaml'), etcdStaticPod(opts.etcd));
  await writeFile(path.join(manifests, 'kube-apiserver.yaml'), apiserverStaticPod(opts.apiserver));
  await writeFile(path.join(manifests, 'kube-controller-manager.yaml'), staticPod('kube-controller-manager', 'registry.k8s.io/kube-controller-manager:v1.30.4', ['kube-controller-manager', '--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt', '--cluster-signing-key-file=/etc/kubernetes/pki/ca.key', '--kubeconfig=/etc/kubernetes/controller-manager.conf', '--root-ca-file=/etc/kubernetes/pki/ca.crt', '--service-account-private-key-file=/etc/kubernetes/pki/sa.key'], [['k8s-certs', '/etc/kubernetes/pki', 'DirectoryOrCreate']]));
  await writeFile(path.join(manifests, 'kube-scheduler.yaml'), staticPod('kube-scheduler', 'registry.k8s.io/kube-scheduler:v1.30.4', ['kube-scheduler', '--kubeconfig=/etc/kubernetes/scheduler.conf', '--leader-elect=true'], [['kubeconfig', '/etc/kubernetes/scheduler.conf', 'FileOrCreate']]));

  return {
    root,
    pki,
    etcd: {
      caCert: path.join(etcdDir, 'ca.crt'),
      caKey: path.join(etcdDir, 'ca.key'),
      serverCert: path.join(etcdDir, 'server.crt'),
      serverKey: path.join(etcdDir, 'server.key'),
      peerCert: path.join(etcdDir, 'peer.crt'),
      peerKey: path.join(etcdDir, 'peer.key'),
      clientCert: path.join(etcdDir, 'healthcheck-client.crt'),
      clientKey: path.join(etcdDir, 'healthcheck-client.key'),
    },
    manifests,
    clusterConfiguration,
    encryptionConfig,
  };
}

function staticPod(name: string, image: string, command: string[], volumes: [string, string, string][]): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    'metadata:',
    `  name: ${name}`,
    '  namespace: kube-system',
    '  labels:',
    `    component: ${name}`,
    '    tier: control-plane',
    'spec:',
    '  hostNetwork: true',
    '  priorityClassName: system-node-critical',
    '  containers:',
    `    - name: ${name}`,
    `      image: ${image}`,
    '      command:',
    ...command.map((c) => `        - ${c}`),
    '      volumeMounts:',
    ...volumes.flatMap(([v, p]) => [`        - name: ${v}`, `          mountPath: ${p}`]),
    '  volumes:',
    ...volumes.flatMap(([v, p, t]) => [`    - name: ${v}`, '      hostPath:', `        path: ${p}`, `        type: ${t}`]),
    '',
  ].join('\n');
}

/** The CA key pairs (and the service-account key pair) all control-plane nodes of a cluster share. */
const CA_FILES = ['ca.crt', 'ca.key', 'front-proxy-ca.crt', 'front-proxy-ca.key', 'sa.key', 'sa.pub', 'etcd/ca.crt', 'etcd/ca.key'] as const;

/**
 * Issues kubeadm's leaf certificates from the CAs in `pki` (as `kubeadm init phase certs`
 * does): etcd server, peer and healthcheck-client, apiserver-etcd-client, apiserver and
 * front-proxy-client. With `keepExisting`, a certificate whose files exist is kept ("Using
 * existing ..."), like kubeadm.
 */
export async function issueLeafCerts(pki: string, opts: { hosts?: string[]; keepExisting?: boolean } = {}): Promise<void> {
  const etcdDir = path.join(pki, 'etcd');
  const etcdCa = { cert: path.join(etcdDir, 'ca.crt'), key: path.join(etcdDir, 'ca.key') };
  const kubeCa = { cert: path.join(pki, 'ca.crt'), key: path.join(pki, 'ca.key') };
  const frontProxyCa = { cert: path.join(pki, 'front-proxy-ca.crt'), key: path.join(pki, 'front-proxy-ca.key') };
  const sans = ['DNS:localhost', 'IP:127.0.0.1', 'IP:0:0:0:0:0:0:0:1', ...(opts.hosts ?? []).map((h) => `DNS:${h}`)];
  const leaves: [string, Cert, { cert: string; key: string }][] = [
    [path.join(etcdDir, 'server'), { subject: '/CN=etcd-server', sans, usage: 'both' }, etcdCa],
    [path.join(etcdDir, 'peer'), { subject: '/CN=etcd-peer', sans, usage: 'both' }, etcdCa],
    [path.join(etcdDir, 'healthcheck-client'), { subject: '/O=system:masters/CN=kube-etcd-healthcheck-client', usage: 'client' }, etcdCa],
    [path.join(pki, 'apiserver-etcd-client'), { subject: '/O=system:masters/CN=kube-apiserver-etcd-client', usage: 'client' }, etcdCa],
    [path.join(pki, 'apiserver'), { subject: '/CN=kube-apiserver', sans: ['DNS:kubernetes', 'DNS:localhost', 'IP:127.0.0.1'], usage: 'server' }, kubeCa],
    [path.join(pki, 'front-proxy-client'), { subject: '/CN=front-proxy-client', usage: 'client' }, frontProxyCa],
  ];
  const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-pki-'));
  try {
    await Promise.all(
      leaves.map(async ([base, spec, issuer]) => {
        if (opts.keepExisting && (await stat(`${base}.crt`).then(() => true, () => false))) return;
        await pair(work, base, spec, issuer);
      }),
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface EtcdPodOptions {
  name?: string;
  /** The host's address: advertise and peer URLs use it. */
  address?: string;
  clientPort?: number;
  peerPort?: number;
  /** `--initial-cluster`; default: this member alone. */
  initialCluster?: string;
  initialClusterState?: 'new' | 'existing';
  initialClusterToken?: string;
  metricsPort?: number;
  dataDir?: string;
  /** More `--flag=value` items. */
  extraArgs?: string[];
}

/**
 * An etcd static pod manifest as kubeadm writes it (flags sorted by name; the data dir and the
 * etcd PKI on hostPath volumes mounted at the same paths). The defaults give the manifest of a
 * single member cp-1 on 10.0.0.1 with kubeadm's ports.
 */
export function etcdStaticPod(o: EtcdPodOptions = {}): string {
  const name = o.name ?? 'cp-1';
  const address = o.address ?? '10.0.0.1';
  const client = o.clientPort ?? 2379;
  const peer = o.peerPort ?? 2380;
  const dataDir = o.dataDir ?? '/var/lib/etcd';
  const peerUrl = `https://${address}:${peer}`;
  const listenClient = [...new Set([`https://127.0.0.1:${client}`, `https://${address}:${client}`])].join(',');
  const flags = [
    `--advertise-client-urls=https://${address}:${client}`,
    '--cert-file=/etc/kubernetes/pki/etcd/server.crt',
    '--client-cert-auth=true',
    `--data-dir=${dataDir}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${o.initialCluster ?? `${name}=${peerUrl}`}`,
    ...(o.initialClusterState ? [`--initial-cluster-state=${o.initialClusterState}`] : []),
    ...(o.initialClusterToken ? [`--initial-cluster-token=${o.initialClusterToken}`] : []),
    '--key-file=/etc/kubernetes/pki/etcd/server.key',
    `--listen-client-urls=${listenClient}`,
    ...(o.metricsPort ? [`--listen-metrics-urls=http://127.0.0.1:${o.metricsPort}`] : []),
    `--listen-peer-urls=${peerUrl}`,
    `--name=${name}`,
    '--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt',
    '--peer-client-cert-auth=true',
    '--peer-key-file=/etc/kubernetes/pki/etcd/peer.key',
    '--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
    '--snapshot-count=10000',
    '--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
    ...(o.extraArgs ?? []),
  ];
  const byName = (f: string) => f.slice(2).split('=')[0]!;
  flags.sort((a, b) => (byName(a) < byName(b) ? -1 : byName(a) > byName(b) ? 1 : 0));
  return staticPod('etcd', etcdImage(), ['etcd', ...flags], [['etcd-data', dataDir, 'DirectoryOrCreate'], ['etcd-certs', '/etc/kubernetes/pki/etcd', 'DirectoryOrCreate']]);
}

export interface ApiserverPodOptions {
  address?: string;
  /** `--secure-port`; absent by default (kube-apiserver's default is 6443). */
  securePort?: number;
  bindAddress?: string;
  etcdServers?: string;
}

/** A kube-apiserver static pod manifest as kubeadm writes it. */
export function apiserverStaticPod(o: ApiserverPodOptions = {}): string {
  const flags = [
    `--advertise-address=${o.address ?? '10.0.0.1'}`,
    ...(o.bindAddress ? [`--bind-address=${o.bindAddress}`] : []),
    '--client-ca-file=/etc/kubernetes/pki/ca.crt',
    '--encryption-provider-config=/etc/kubernetes/enc/enc.yaml',
    '--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt',
    '--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt',
    '--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key',
    `--etcd-servers=${o.etcdServers ?? 'https://127.0.0.1:2379'}`,
    ...(o.securePort ? [`--secure-port=${o.securePort}`] : []),
    '--service-account-key-file=/etc/kubernetes/pki/sa.pub',
    '--service-account-signing-key-file=/etc/kubernetes/pki/sa.key',
    '--tls-cert-file=/etc/kubernetes/pki/apiserver.crt',
    '--tls-private-key-file=/etc/kubernetes/pki/apiserver.key',
  ];
  return staticPod('kube-apiserver', 'registry.k8s.io/kube-apiserver:v1.30.4', ['kube-apiserver', ...flags], [['k8s-certs', '/etc/kubernetes/pki', 'DirectoryOrCreate'], ['enc', '/etc/kubernetes/enc', 'DirectoryOrCreate']]);
}
