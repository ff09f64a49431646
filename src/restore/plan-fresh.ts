import path from 'node:path';
import { isIP } from 'node:net';
import { Value } from '@sinclair/typebox/value';
import { BadRequestError } from '../errors/errors.ts';
import { checkKitTarget } from './kit-policy.ts';
import { APISERVER_MANIFEST, ETCD_MANIFEST } from './manifests.ts';
import { isMountPoint } from './mounts.ts';
import { FRESH_STEPS, RestorePlanSchema, type MemberRef, type RestorePlan } from './plan-model.ts';
import { compareExisting, dataDirLayout, downtime, exists, kubeadmInitArgs, leaseAddresses, nonEmptyDir, PEER_PORT, type PlanBase } from './plan-parts.ts';

/** Kit roles a fresh control plane places on the host (kubeadm writes the static pod manifests itself; see createPlan for the ClusterConfiguration). */
const PLACED_ROLES: readonly string[] = ['pki', 'encryption-provider-config', 'cluster-configuration', 'extra'];

const DEFAULT_DATA_DIR = '/var/lib/etcd';

/**
 * The plan of a fresh control plane on this host: the backup's etcd restored here as a single
 * member, the kit's PKI and files placed, `kubeadm init` run with the kit's ClusterConfiguration;
 * the other hosts join afterwards with the command the restore returns.
 */
export async function planFresh(base: PlanBase): Promise<RestorePlan> {
  const { ctx, config, backup, members, selfName, id, warnings, onHost, common, selfPart } = base;
  const k8s = config.kit.kubernetesDir;
  const manifestsDir = config.restore.manifestsDir;
  const clusterConfig = backup.kit.files.find((f) => f.role === 'cluster-configuration');
  if (!clusterConfig) {
    throw new BadRequestError('/mode', `backup ${backup.backupId} holds no kubeadm ClusterConfiguration (${config.kit.clusterConfiguration} was missing when it was made); fresh-control-plane needs one`, {
      hint: 'restore in place, or pick a backup whose kit has the ClusterConfiguration',
    });
  }
  for (const pki of ['pki/ca.crt', 'pki/ca.key', 'pki/etcd/ca.crt', 'pki/etcd/ca.key']) {
    if (!backup.kit.files.some((f) => f.path === path.posix.join(k8s, pki))) {
      throw new BadRequestError('/backup', `backup ${backup.backupId} lacks ${path.posix.join(k8s, pki)} in its kit; a fresh control plane needs the cluster's CAs`);
    }
  }
  const named = members.find((m) => m.name === selfName);
  const advertise = config.restore.advertiseAddress ?? (named ? new URL(named.peerURL).hostname.replace(/^\[|\]$/g, '') : undefined);
  if (advertise === undefined) {
    throw new BadRequestError('/members', `this host (${selfName}) is not among the members ${members.map((m) => m.name).join(', ')}, and restore.advertiseAddress is not set`, {
      hint: `add {name: "${selfName}", peerURL: "https://<this host's address>:${PEER_PORT}"} to members, or set restore.advertiseAddress`,
    });
  }
  const self: MemberRef = named ?? { name: selfName, peerURL: `https://${isIP(advertise) === 6 ? `[${advertise}]` : advertise}:${PEER_PORT}` };
  const dataDir = config.restore.etcdDataDir === 'auto' ? DEFAULT_DATA_DIR : config.restore.etcdDataDir;
  // A data dir that is a mount point (a dedicated disk) cannot be renamed: its member/ is swapped.
  const mount = (await exists(onHost(dataDir))) && (await (ctx.isMountPoint ?? isMountPoint)(onHost(dataDir)));
  const layout = dataDirLayout(dataDir, id, mount ? 'member' : 'dir');
  if (mount) warnings.push(`${dataDir} is a mount point: the snapshot is restored inside it and its member/ directory is swapped`);
  const setAside: RestorePlan['setAside'] = [];
  if (mount ? await exists(onHost(layout.live)) : await nonEmptyDir(onHost(dataDir))) setAside.push({ from: layout.live, to: layout.aside, what: 'an etcd data dir already on this host' });
  const files: RestorePlan['files'] = [];
  // A ClusterConfiguration read from the kubeadm-config ConfigMap goes to kubeadm init only: a
  // file kubeadm never wrote would win over the ConfigMap in later backups, and go stale at the
  // next `kubeadm upgrade`.
  const placed = backup.kit.files.filter((k) => PLACED_ROLES.includes(k.role) && !(k.role === 'cluster-configuration' && k.source?.from === 'configmap'));
  for (const f of placed) {
    checkKitTarget(config.kit, f);
    const existing = await compareExisting(onHost(f.path), f);
    files.push({ path: f.path, role: f.role, sha256: f.sha256, mode: f.mode, size: f.size, existing });
    if (existing === 'differs') setAside.push({ from: f.path, to: `${f.path}.lifeboat-aside-${id}`, what: `a different ${f.role} file already on this host` });
  }
  for (const name of [ETCD_MANIFEST, APISERVER_MANIFEST]) {
    if (await exists(onHost(path.posix.join(manifestsDir, name)))) {
      warnings.push(`${path.posix.join(manifestsDir, name)} already exists: kubeadm init refuses to overwrite it; run \`kubeadm reset\` first or restore in place`);
    }
  }
  const kubeadmConfig = path.posix.join(k8s, 'lifeboat', `kubeadm-${id}.yaml`);
  const joinLater = members.filter((m) => m.name !== self.name).map((m) => m.name);
  const plan: RestorePlan = {
    ...common,
    mode: 'fresh-control-plane',
    node: self.name,
    members: [self],
    leaseCleanupBy: self.name,
    keepLeaseAddresses: leaseAddresses([self], advertise),
    self: selfPart(self, [self], dataDir, layout),
    files,
    manifests: [
      { path: kubeadmConfig, action: 'write', detail: `InitConfiguration (${self.name}, ${advertise}) + the kit's ClusterConfiguration with etcd.local.dataDir ${dataDir}` },
      { path: path.posix.join(manifestsDir, ETCD_MANIFEST), action: 'write', detail: 'by kubeadm init, on the restored data dir' },
      { path: path.posix.join(manifestsDir, APISERVER_MANIFEST), action: 'write', detail: 'by kubeadm init' },
    ],
    setAside,
    kubeadm: {
      command: config.tools.kubeadm,
      configPath: kubeadmConfig,
      initArgs: kubeadmInitArgs(kubeadmConfig, dataDir, config.restore.kubeadm.ignorePreflightErrors),
      advertiseAddress: advertise,
      ...(config.restore.kubeadm.criSocket === undefined ? {} : { criSocket: config.restore.kubeadm.criSocket }),
      joinLater,
    },
    steps: [...FRESH_STEPS],
    ...downtime('fresh-control-plane', backup, config, 1),
    warnings,
  };
  return Value.Parse(RestorePlanSchema, plan);
}
