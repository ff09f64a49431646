/**
 * A stand-in kubeadm for tests (kubeadm is not available on these machines). Run as an
 * executable through the wrapper that writeKubeadmStandIn() writes, which fixes its options:
 *
 *   node kubeadm-standin.ts --root R --state S --etcd-client-port C --etcd-peer-port P
 *        --apiserver-port A -- <kubeadm arguments>
 *
 * Every call appends its kubeadm arguments (one JSON array per line) to `S/argv.jsonl`. It
 * understands:
 *
 * - `init --config F [--ignore-preflight-errors=...]`: reads F (a host path, under R), fails
 *   like kubeadm's preflight when the etcd data dir is not empty or a static pod manifest
 *   exists (unless ignored, by name or `all`), issues the leaf certificates from the CAs under
 *   certificatesDir as `kubeadm init phase certs` does (existing ones kept; missing CAs are an
 *   error here, where kubeadm would make new ones), then writes `etcd.yaml` as
 *   `kubeadm init phase etcd local` would (this host's name and address, the config's data
 *   dir and extraArgs, a single-member initial cluster) and `kube-apiserver.yaml`. The ports
 *   are the wrapper's, not kubeadm's fixed 2379, 2380 and 6443: tests run on free ports.
 * - `init phase upload-certs --upload-certs`: prints a certificate key, as kubeadm does.
 * - `token create --print-join-command`: prints a join command with a token and the real
 *   discovery hash of the cluster CA (sha256 of its public key).
 *
 * Anything else exits 1.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { apiserverStaticPod, etcdStaticPod, issueLeafCerts } from './pki.ts';

export interface StandInPorts {
  etcdClient: number;
  etcdPeer: number;
  apiserver: number;
}

/** Writes `<dir>/kubeadm`, a shell wrapper that runs this stand-in for host root `root`; returns its path. */
export function writeKubeadmStandIn(opts: { dir: string; root: string; ports: StandInPorts }): { command: string; argvLog: string } {
  mkdirSync(opts.dir, { recursive: true });
  const script = fileURLToPath(import.meta.url);
  const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const command = path.join(opts.dir, 'kubeadm');
  writeFileSync(
    command,
    `#!/bin/sh\nexec ${q(process.execPath)} ${q(script)} --root ${q(opts.root)} --state ${q(opts.dir)} --etcd-client-port ${opts.ports.etcdClient} --etcd-peer-port ${opts.ports.etcdPeer} --apiserver-port ${opts.ports.apiserver} -- "$@"\n`,
  );
  chmodSync(command, 0o755);
  return { command, argvLog: path.join(opts.dir, 'argv.jsonl') };
}

/** Every recorded call's arguments, in order. */
export function recordedCalls(argvLog: string): string[][] {
  if (!existsSync(argvLog)) return [];
  return readFileSync(argvLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function main(argv: string[]): void {
  const sep = argv.indexOf('--');
  const own = argv.slice(0, sep);
  const args = argv.slice(sep + 1);
  const opt = (name: string) => {
    const i = own.indexOf(`--${name}`);
    if (i < 0 || own[i + 1] === undefined) fail(`kubeadm stand-in: missing --${name}`);
    return own[i + 1]!;
  };
  const root = opt('root');
  const state = opt('state');
  const ports = { etcdClient: Number(opt('etcd-client-port')), etcdPeer: Number(opt('etcd-peer-port')), apiserver: Number(opt('apiserver-port')) };
  appendFileSync(path.join(state, 'argv.jsonl'), `${JSON.stringify(args)}\n`);
  const onHost = (p: string) => path.join(root, p);
  const flag = (name: string) => {
    const eq = args.find((a) => a.startsWith(`--${name}=`));
    if (eq) return eq.slice(name.length + 3);
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  /** Flags of the commands above that take a separate value. */
  const valued = ['--config', '--ignore-preflight-errors'];
  const words = args.filter((a, i) => !a.startsWith('-') && !valued.includes(args[i - 1] ?? ''));

  if (words[0] === 'init' && words[1] === 'phase' && words[2] === 'upload-certs') {
    if (!args.includes('--upload-certs')) fail('kubeadm stand-in: upload-certs without --upload-certs does nothing');
    process.stdout.write(`[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace\n[upload-certs] Using certificate key:\n${randomBytes(32).toString('hex')}\n`);
    return;
  }
  if (words[0] === 'token' && words[1] === 'create' && args.includes('--print-join-command')) {
    const ca = new X509Certificate(readFileSync(onHost('/etc/kubernetes/pki/ca.crt')));
    const hash = createHash('sha256').update(ca.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
    const saved = path.join(state, 'control-plane-endpoint');
    const endpoint = existsSync(saved) ? readFileSync(saved, 'utf8').trim() : `127.0.0.1:${ports.apiserver}`;
    const token = `${randomBytes(3).toString('hex')}.${randomBytes(8).toString('hex')}`;
    process.stdout.write(`kubeadm join ${endpoint} --token ${token} --discovery-token-ca-cert-hash sha256:${hash} \n`);
    return;
  }
  if (words[0] === 'init' && words.length === 1) {
    const config = flag('config');
    if (!config) fail('kubeadm stand-in: init needs --config');
    const docs = parseAllDocuments(readFileSync(onHost(config), 'utf8'));
    if (!Array.isArray(docs)) fail(`kubeadm stand-in: ${config} is not YAML`);
    const byKind = (k: string) => docs.map((d) => d.toJS() as Record<string, unknown>).find((d) => d?.kind === k);
    const init = byKind('InitConfiguration') as { nodeRegistration?: { name?: string }; localAPIEndpoint?: { advertiseAddress?: string } } | undefined;
    const cluster = byKind('ClusterConfiguration') as { certificatesDir?: string; controlPlaneEndpoint?: string; etcd?: { local?: { dataDir?: string; extraArgs?: Record<string, string> | { name: string; value: string }[] } } } | undefined;
    if (!init || !cluster) fail(`kubeadm stand-in: ${config} needs an InitConfiguration and a ClusterConfiguration`);
    const name = init.nodeRegistration?.name ?? fail('kubeadm stand-in: nodeRegistration.name is required');
    const address = init.localAPIEndpoint?.advertiseAddress ?? fail('kubeadm stand-in: localAPIEndpoint.advertiseAddress is required');
    const dataDir = cluster.etcd?.local?.dataDir ?? '/var/lib/etcd';
    const pki = cluster.certificatesDir ?? '/etc/kubernetes/pki';
    const manifests = '/etc/kubernetes/manifests';

    const ignored = args.filter((a) => a.startsWith('--ignore-preflight-errors')).flatMap((a) => (a.includes('=') ? a.split('=')[1]! : args[args.indexOf(a) + 1] ?? '').split(',')).map((s) => s.toLowerCase());
    const checks: [string, boolean, string][] = [
      [`DirAvailable-${dataDir.replaceAll('/', '-')}`, existsSync(onHost(dataDir)) && readdirSync(onHost(dataDir)).length > 0, `${dataDir} is not empty`],
      ...['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'].map((c): [string, boolean, string] => [
        `FileAvailable-${`${manifests}/${c}.yaml`.replaceAll('/', '-')}`,
        existsSync(onHost(`${manifests}/${c}.yaml`)),
        `${manifests}/${c}.yaml already exists`,
      ]),
    ];
    const errors = checks.filter(([check, failed]) => failed && !ignored.includes('all') && !ignored.includes(check.toLowerCase()));
    if (errors.length > 0) {
      fail(`[preflight] Running pre-flight checks\nerror execution phase preflight: [preflight] Some fatal errors occurred:\n${errors.map(([check, , msg]) => `\t[ERROR ${check}]: ${msg}`).join('\n')}\n[preflight] If you know what you are doing, you can make a check non-fatal with \`--ignore-preflight-errors=...\``);
    }
    for (const ca of ['ca.crt', 'ca.key', 'etcd/ca.crt', 'etcd/ca.key', 'front-proxy-ca.crt', 'front-proxy-ca.key']) {
      if (!existsSync(onHost(path.posix.join(pki, ca)))) fail(`kubeadm stand-in: ${path.posix.join(pki, ca)} is missing (kubeadm would make a new CA, which a restore must not let happen)`);
    }
    const extra = cluster.etcd?.local?.extraArgs;
    const extraArgs = Array.isArray(extra) ? extra.map((e) => `--${e.name}=${e.value}`) : Object.entries(extra ?? {}).map(([k, v]) => `--${k}=${v}`);
    writeFileSync(path.join(state, 'control-plane-endpoint'), cluster.controlPlaneEndpoint ?? `${address}:${ports.apiserver}`);
    issueLeafCerts(onHost(pki), { hosts: [name], keepExisting: true })
      .then(() => {
        mkdirSync(onHost(manifests), { recursive: true });
        writeFileSync(onHost(`${manifests}/etcd.yaml`), etcdStaticPod({ name, address, clientPort: ports.etcdClient, peerPort: ports.etcdPeer, dataDir, extraArgs }), { mode: 0o600 });
        writeFileSync(onHost(`${manifests}/kube-apiserver.yaml`), apiserverStaticPod({ address, securePort: ports.apiserver, bindAddress: '127.0.0.1', etcdServers: `https://127.0.0.1:${ports.etcdClient}` }), { mode: 0o600 });
        process.stdout.write(`[init] Using Kubernetes version: v1.30.4\n[certs] Using existing ca certificate authority\n[etcd] Creating static Pod manifest for local etcd in "${manifests}"\n[control-plane] Creating static Pod manifest for "kube-apiserver"\n\nYour Kubernetes control-plane has initialized successfully!\n`);
      })
      .catch((err: unknown) => fail(`kubeadm stand-in: ${(err as Error).message}`));
    return;
  }
  fail(`kubeadm stand-in: unsupported: kubeadm ${args.join(' ')}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
