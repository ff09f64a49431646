import { Document, isMap, parseAllDocuments } from 'yaml';
import { ConfigError, ToolError } from '../errors/errors.ts';
import type { Static } from '@sinclair/typebox';
import type { JoinInstructionsSchema } from './journal-model.ts';

/**
 * The kubeadm config a fresh control plane is initialised with: an InitConfiguration for this
 * host (its name and address) followed by the kit's ClusterConfiguration (cluster name,
 * version, controlPlaneEndpoint, networking, apiServer and etcd extraArgs all kept), with
 * etcd.local.dataDir set to the restored data dir. Other documents of the kit's file
 * (KubeletConfiguration, KubeProxyConfiguration) are kept; an InitConfiguration or
 * JoinConfiguration in it (the old host's, with its bootstrap tokens) is dropped, except that
 * its nodeRegistration settings other than the name (criSocket, taints, kubeletExtraArgs) carry over.
 */
export interface KubeadmConfigInput {
  name: string;
  advertiseAddress: string;
  dataDir: string;
  /** nodeRegistration.criSocket; default: the kit's InitConfiguration's, else kubeadm detects it. */
  criSocket?: string | undefined;
  /** The kit file's path, for errors. */
  source: string;
}

const FIELD = '/kit/clusterConfiguration';

export function kubeadmConfig(kitText: string, input: KubeadmConfigInput): { text: string; notes: string[] } {
  const docs = parseAllDocuments(kitText);
  if (!Array.isArray(docs)) throw new ConfigError(FIELD, `${input.source} is not YAML`);
  const notes: string[] = [];
  const bad = docs.find((d) => d.errors.length > 0);
  if (bad) throw new ConfigError(FIELD, `${input.source} is not valid YAML: ${bad.errors[0]!.message.split('\n')[0]}`);
  const kind = (d: Document) => (isMap(d.contents) ? String(d.get('kind') ?? '') : '');
  const cluster = docs.find((d) => kind(d) === 'ClusterConfiguration');
  if (!cluster) throw new ConfigError(FIELD, `${input.source} has no ClusterConfiguration document`);
  const apiVersion = String(cluster.get('apiVersion') ?? 'kubeadm.k8s.io/v1beta3');
  if (cluster.getIn(['etcd', 'external']) !== undefined) {
    throw new ConfigError(FIELD, `${input.source} uses external etcd; Lifeboat restores kubeadm's local etcd`);
  }
  const previousDataDir = cluster.getIn(['etcd', 'local', 'dataDir']);
  if (previousDataDir !== undefined && previousDataDir !== input.dataDir) notes.push(`etcd.local.dataDir was ${String(previousDataDir)}; set to ${input.dataDir}, where the snapshot was restored`);
  cluster.setIn(['etcd', 'local', 'dataDir'], input.dataDir);

  const old = docs.find((d) => kind(d) === 'InitConfiguration');
  const registration = old?.getIn(['nodeRegistration']);
  const nodeRegistration: Record<string, unknown> = isMap(registration) ? (registration.toJSON() as Record<string, unknown>) : {};
  if (old) notes.push('the kit\'s InitConfiguration was replaced (its bootstrap tokens dropped); its nodeRegistration settings were kept');
  const bindPort = old?.getIn(['localAPIEndpoint', 'bindPort']);
  const init = {
    apiVersion,
    kind: 'InitConfiguration',
    localAPIEndpoint: { advertiseAddress: input.advertiseAddress, bindPort: typeof bindPort === 'number' ? bindPort : 6443 },
    nodeRegistration: { ...nodeRegistration, name: input.name, ...(input.criSocket === undefined ? {} : { criSocket: input.criSocket }) },
  };
  const kept = docs.filter((d) => !['InitConfiguration', 'JoinConfiguration', ''].includes(kind(d)));
  const text = [new Document(init).toString({ lineWidth: 0 }), ...kept.map((d) => d.toString({ lineWidth: 0 }))].map((t) => t.replace(/^---\n/, '').trimEnd()).join('\n---\n') + '\n';
  return { text, notes };
}

/** The certificate key `kubeadm init phase upload-certs --upload-certs` prints. */
export function parseCertificateKey(stdout: string): string {
  const key = stdout.split('\n').map((l) => l.trim()).find((l) => /^[0-9a-f]{64}$/.test(l));
  if (!key) throw new ToolError(`kubeadm init phase upload-certs printed no certificate key: ${stdout.slice(0, 300)}`);
  return key;
}

/** The `kubeadm join ...` line `kubeadm token create --print-join-command` prints. */
export function parseJoinCommand(stdout: string): string {
  const line = stdout.split('\n').map((l) => l.trim()).reverse().find((l) => l.startsWith('kubeadm join '));
  if (!line) throw new ToolError(`kubeadm token create printed no join command: ${stdout.slice(0, 300)}`);
  return line;
}

export type JoinInstructions = Static<typeof JoinInstructionsSchema>;

export interface JoinOptions {
  now: Date;
  hosts: string[];
  dataDir: string;
  controlPlaneEndpoint?: string | undefined;
  /** Files every control-plane host needs that kubeadm join does not bring (the encryption config). */
  copyFiles?: readonly string[];
  /** What this host's kubeadm init was given beyond the kit (restore.kubeadm). */
  criSocket?: string | undefined;
  ignorePreflightErrors?: readonly string[];
}

export function joinInstructions(join: string, certificateKey: string, opts: JoinOptions): JoinInstructions {
  const expires = new Date(opts.now.getTime() + 2 * 3600_000);
  const endpoint = opts.controlPlaneEndpoint ?? /^kubeadm join (\S+)/.exec(join)?.[1] ?? 'the control-plane endpoint';
  const copy = opts.copyFiles ?? [];
  const flags = [...(opts.criSocket ? [`--cri-socket ${opts.criSocket}`] : []), ...(opts.ignorePreflightErrors?.length ? [`--ignore-preflight-errors=${opts.ignorePreflightErrors.join(',')}`] : [])];
  return {
    command: `${join} --control-plane --certificate-key ${certificateKey}`,
    certificateKeyExpiresAt: expires.toISOString(),
    hosts: opts.hosts,
    before: [
      `Make ${endpoint} (DNS or the load balancer) point at this host until the others have joined.`,
      `On each other control-plane host, first move its old etcd data aside (mv ${opts.dataDir} ${opts.dataDir}.pre-restore): \`kubeadm reset\` deletes it, and it belongs to the old cluster.`,
      'Then run `kubeadm reset -f` there, so that kubeadm join finds a clean host.',
      ...(copy.length ? [`Copy ${copy.join(', ')} from this host to the same path on each of them, mode 0600 (kubeadm join brings the certificates, not this): their kube-apiserver does not start without it.`] : []),
      ...(flags.length ? [`This host's kubeadm init was given ${flags.join(' and ')} (restore.kubeadm): add the same flags to the command below on hosts that need them.`] : []),
      `Join them one at a time with the command below, before ${expires.toISOString()} (the certificate key expires; run \`kubeadm init phase upload-certs --upload-certs\` here for a new one).`,
      'After each join, wait until `kubectl get nodes` shows the host Ready and `etcdctl member list` shows it started.',
    ],
  };
}
