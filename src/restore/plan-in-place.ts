import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { BadRequestError, ConfigError } from '../errors/errors.ts';
import { APISERVER_MANIFEST, ETCD_MANIFEST, etcdFacts, localClientURL, StaticPod } from './manifests.ts';
import { isMountPoint } from './mounts.ts';
import { IN_PLACE_STEPS, initialCluster, RestorePlanSchema, type RestorePlan } from './plan-model.ts';
import { dataDirLayout, downtime, exists, leaseAddresses, type PlanBase } from './plan-parts.ts';

/**
 * The in-place plan of this node: a member of the running cluster, restored from the backup
 * with every other member (`lifeboat restore apply --all` runs the plans of all of them). Reads
 * this node's etcd static pod manifest for its data dir, URLs and token.
 */
export async function planInPlace(base: PlanBase): Promise<RestorePlan> {
  const { input, ctx, config, backup, members, selfName, id, staging, clusterToken, warnings, onHost, common, selfPart } = base;
  const manifestsDir = config.restore.manifestsDir;
  const selfIndex = members.findIndex((m) => m.name === selfName);
  const etcdManifest = path.posix.join(manifestsDir, ETCD_MANIFEST);
  const apiserverManifest = path.posix.join(manifestsDir, APISERVER_MANIFEST);
  let pod: StaticPod;
  try {
    pod = await StaticPod.read(onHost(etcdManifest), etcdManifest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ConfigError('/restore/manifestsDir', `${etcdManifest} does not exist: an in-place restore needs this node's etcd static pod manifest`, {
        hint: 'run it on a kubeadm control-plane node, set restore.manifestsDir and kit.hostRoot, or use mode fresh-control-plane',
      });
    }
    throw err;
  }
  const facts = etcdFacts(pod);
  if (selfIndex < 0) {
    const byManifest = facts.name !== undefined && members.some((m) => m.name === facts.name) ? ` (this node's etcd manifest says --name=${facts.name})` : '';
    throw new BadRequestError('/node', `this node, ${selfName}, is not among the members ${members.map((m) => m.name).join(', ')}${byManifest}`, {
      hint: 'pass node (the member this node is), or set node in the config',
    });
  }
  const self = members[selfIndex]!;
  if (facts.name !== undefined && facts.name !== self.name) warnings.push(`the etcd manifest says --name=${facts.name}; the restored member is named ${self.name}`);
  const manifestPeer = facts.initialAdvertisePeerURLs[0]?.toString().replace(/\/$/, '');
  if (manifestPeer !== undefined && manifestPeer !== self.peerURL) {
    warnings.push(`the etcd manifest advertises peer URL ${manifestPeer}, the plan gives ${self.peerURL}: the member must listen there (--listen-peer-urls is not changed)`);
  }
  if (facts.initialClusterToken !== undefined && facts.initialClusterToken === clusterToken) {
    throw new BadRequestError('/clusterToken', `${clusterToken} is the token of the running cluster (${etcdManifest}); a restored cluster needs a new one`);
  }
  if (facts.dataDir === undefined) throw new ConfigError('/restore/manifestsDir', `${etcdManifest} has no --data-dir flag`);
  const dataDir = config.restore.etcdDataDir === 'auto' ? facts.hostDataDir : config.restore.etcdDataDir;
  if (dataDir === undefined) {
    throw new ConfigError('/restore/etcdDataDir', `${etcdManifest}: --data-dir=${facts.dataDir} is on no hostPath volume, so the data would live inside the container`, {
      hint: 'fix the manifest (kubeadm mounts the etcd-data hostPath at the data dir) or set restore.etcdDataDir',
    });
  }
  if (facts.hostDataDir !== undefined && facts.hostDataDir !== dataDir) {
    warnings.push(`restore.etcdDataDir is ${dataDir} but the manifest's etcd-data hostPath holds ${facts.hostDataDir}; the manifest is pointed at ${dataDir}`);
  }
  const clientURL = localClientURL(facts)?.toString().replace(/\/$/, '');
  if (clientURL === undefined) throw new ConfigError('/restore/manifestsDir', `${etcdManifest} has no --listen-client-urls or --advertise-client-urls`);
  const hasApiserver = await exists(onHost(apiserverManifest));
  if (!hasApiserver) warnings.push(`${apiserverManifest} does not exist on this node: stop-apiserver and start-apiserver do nothing here`);
  const hasDataDir = await exists(onHost(dataDir));
  const mount = hasDataDir && (await (ctx.isMountPoint ?? isMountPoint)(onHost(dataDir)));
  const layout = dataDirLayout(dataDir, id, mount ? 'member' : 'dir');
  if (mount) warnings.push(`${dataDir} is a mount point: its member/ directory is swapped instead of the directory itself`);
  if (!hasDataDir) warnings.push(`${dataDir} does not exist on this node: there is nothing to set aside`);
  const leaseCleanupBy = input.leaseCleanupBy ?? members[0]!.name;
  if (!members.some((m) => m.name === leaseCleanupBy)) throw new BadRequestError('/leaseCleanupBy', `${leaseCleanupBy} is not a member`);
  const edits = [
    `--name=${self.name}`,
    `--initial-cluster=${initialCluster(members)}`,
    `--initial-cluster-token=${clusterToken}`,
    '--initial-cluster-state=new',
    `--initial-advertise-peer-urls=${self.peerURL}`,
    `--data-dir=${facts.dataDir} on hostPath ${dataDir}`,
  ];
  const stage = (name: string) => path.join(staging, 'manifests', name);
  const manifests: RestorePlan['manifests'] = [
    ...(hasApiserver ? [{ path: apiserverManifest, action: 'move-out' as const, detail: `to ${stage(APISERVER_MANIFEST)}; wait until the apiserver's secure port closes` }] : []),
    { path: etcdManifest, action: 'move-out', detail: `to ${stage(ETCD_MANIFEST)}; wait until etcd's client and peer ports close` },
    { path: etcdManifest, action: 'edit', detail: edits.join(' ') },
    { path: etcdManifest, action: 'put-back', detail: 'the edited manifest; wait until the member serves, then for a healthy quorum' },
    ...(hasApiserver ? [{ path: apiserverManifest, action: 'put-back' as const, detail: 'unchanged; wait for /readyz' }] : []),
  ];
  const plan: RestorePlan = {
    ...common,
    mode: 'in-place',
    node: self.name,
    members,
    leaseCleanupBy,
    keepLeaseAddresses: leaseAddresses(members, config.restore.advertiseAddress),
    self: selfPart(self, members, dataDir, layout, clientURL),
    files: [],
    manifests,
    setAside: [{ from: layout.live, to: layout.aside, what: 'the old etcd data' }],
    steps: [...IN_PLACE_STEPS],
    ...downtime('in-place', backup, config, members.length),
    warnings,
  };
  return Value.Parse(RestorePlanSchema, plan);
}
