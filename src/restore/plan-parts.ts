import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Static } from '@sinclair/typebox';
import type { KitFile, StoredManifest } from '../archive/manifest.ts';
import { initialCluster, type DowntimePartSchema, type MemberRef, type PlanContext, type RestoreConfig, type RestoreMode, type RestorePlan, type RestoreRequest } from './plan-model.ts';

/** What both modes' plans start from: computed once by createPlan (plan.ts). */
export interface PlanBase {
  input: RestoreRequest;
  ctx: PlanContext;
  config: RestoreConfig;
  backup: StoredManifest;
  members: MemberRef[];
  selfName: string;
  id: string;
  staging: string;
  clusterToken: string;
  /** Added to by each mode; the plan carries them. */
  warnings: string[];
  /** A host path as a local path (under kit.hostRoot). */
  onHost: (hostPath: string) => string;
  /** The fields every plan has. */
  common: Pick<RestorePlan, 'id' | 'createdAt' | 'cluster' | 'dryRun' | 'backupId' | 'backup' | 'confirmationToken' | 'clusterToken' | 'bumpRevision' | 'targetRevision' | 'bump' | 'staging' | 'dryRunRoot'>;
  /** The plan's `self`: this member, its data dir, and the exact etcdutl argv that restores it for `cluster`. */
  selfPart: (self: MemberRef, cluster: MemberRef[], dataDir: string, layout: DataDirLayout, clientURL?: string) => RestorePlan['self'];
}

/** etcd's peer port, as kubeadm sets it. */
export const PEER_PORT = 2380;

/** `lifeboat-<backup time>-r<revision>-<random>`: new for every restore, and says where it came from. */
export function newClusterToken(backupId: string): string {
  return `lifeboat-${backupId.toLowerCase().replace(/[^a-z0-9-]/g, '')}-${randomBytes(4).toString('hex')}`;
}

export function etcdutlArgv(command: string, snapshot: string, self: MemberRef, members: MemberRef[], token: string, bump: number, dataDir: string): { command: string; args: string[] } {
  return {
    command,
    args: [
      'snapshot', 'restore', snapshot,
      '--name', self.name,
      '--initial-cluster', initialCluster(members),
      '--initial-cluster-token', token,
      '--initial-advertise-peer-urls', self.peerURL,
      '--bump-revision', String(bump),
      '--mark-compacted',
      '--data-dir', dataDir,
    ],
  };
}

/**
 * kubeadm's preflight check for a non-empty etcd data dir is named after its path; `ignore`
 * (restore.kubeadm.ignorePreflightErrors) adds more checks by name.
 */
export function kubeadmInitArgs(configPath: string, dataDir: string, ignore: readonly string[] = []): string[] {
  const checks = [...new Set([`DirAvailable-${dataDir.replaceAll('/', '-')}`, ...ignore])];
  return ['init', '--config', configPath, `--ignore-preflight-errors=${checks.join(',')}`];
}

export interface DataDirLayout {
  swap: 'dir' | 'member';
  /** Where etcdutl restores to. */
  restoreDir: string;
  /** What is swapped: the live data (dir or its member/), the restored counterpart, and where the old one goes. */
  live: string;
  incoming: string;
  aside: string;
  failed: string;
}

/**
 * The paths of a restore's data dir swap. Normally the data dir itself is renamed aside and the
 * restored dir renamed into place. A data dir that is a mount point (a dedicated disk, as etcd
 * operators often do) cannot be renamed, so its `member/` subdir is swapped instead, with the
 * restore made inside the mount (etcd logs and ignores the other entries of its data dir).
 */
export function dataDirLayout(dataDir: string, id: string, swap: 'dir' | 'member'): DataDirLayout {
  if (swap === 'dir') {
    const restoreDir = `${dataDir}.lifeboat-restore-${id}`;
    return {
      swap,
      restoreDir,
      live: dataDir,
      incoming: restoreDir,
      aside: `${dataDir}.lifeboat-aside-${id}`,
      failed: `${dataDir}.lifeboat-failed-${id}`,
    };
  }
  const restoreDir = path.posix.join(dataDir, `lifeboat-restore-${id}`);
  return {
    swap,
    restoreDir,
    live: path.posix.join(dataDir, 'member'),
    incoming: path.posix.join(restoreDir, 'member'),
    aside: path.posix.join(dataDir, `member.lifeboat-aside-${id}`),
    failed: path.posix.join(dataDir, `member.lifeboat-failed-${id}`),
  };
}

/**
 * Master leases are keyed by the apiserver's advertise address, which kubeadm also uses for
 * etcd's peer URL: the peer URL hosts (and restore.advertiseAddress) are the addresses kept.
 */
export function leaseAddresses(members: MemberRef[], advertise: string | undefined): string[] {
  const hosts = members.map((m) => new URL(m.peerURL).hostname.replace(/^\[|\]$/g, ''));
  if (advertise) hosts.push(advertise);
  return [...new Set(hosts)];
}

/**
 * Figures from /work/shared/notes/measured.md (measured) and typical kubelet and kube-apiserver
 * behaviour (assumed). The expected downtime is the time the Kubernetes API is unavailable.
 */
const DOWNTIME = {
  /** etcdutl snapshot restore (3.5), seconds per GB of database: measured. */
  restorePerGB: 2.7,
  /** A restored etcd serves this long after it starts: measured. */
  etcdServes: 1.7,
  /** The kubelet notices a manifest change (inotify) and stops a static pod gracefully: assumed. */
  kubeletStop: 10,
  /** The kubelet notices a manifest and starts the container: assumed. */
  kubeletStart: 5,
  /** kube-apiserver becomes ready (caches filled) once etcd serves: assumed. */
  apiserverReady: 30,
  /** kubeadm init on a host with the images present, up to the static pods: assumed. */
  kubeadmInit: 60,
} as const;

export function downtime(mode: RestoreMode, backup: StoredManifest, config: RestoreConfig, members: number) {
  const gb = backup.etcd.dbSize / 1e9;
  const restore = Math.max(1, Math.round(DOWNTIME.restorePerGB * gb * 10) / 10);
  const restorePart = { what: `etcdutl snapshot restore of ${Math.round(gb * 1000) / 1000} GB (${DOWNTIME.restorePerGB} s/GB)`, seconds: restore, basis: 'measured' } as const;
  const parts: Static<typeof DowntimePartSchema>[] =
    mode === 'in-place'
      ? [
          { what: 'kubelet stops kube-apiserver, then etcd', seconds: 2 * DOWNTIME.kubeletStop, basis: 'assumed' },
          restorePart,
          { what: 'kubelet starts the restored etcd', seconds: DOWNTIME.kubeletStart, basis: 'assumed' },
          { what: `the restored etcd serves (${members} member${members === 1 ? '' : 's'})`, seconds: DOWNTIME.etcdServes, basis: 'measured' },
          { what: 'kubelet starts kube-apiserver and it becomes ready', seconds: DOWNTIME.kubeletStart + DOWNTIME.apiserverReady, basis: 'assumed' },
        ]
      : [
          restorePart,
          { what: 'lease cleanup on a throwaway etcd', seconds: DOWNTIME.etcdServes + 1, basis: 'measured' },
          { what: 'kubeadm init up to the static pods', seconds: DOWNTIME.kubeadmInit, basis: 'assumed' },
          { what: 'kube-apiserver becomes ready', seconds: DOWNTIME.apiserverReady, basis: 'assumed' },
        ];
  const expected = Math.round(parts.reduce((n, p) => n + p.seconds, 0));
  const waits = mode === 'in-place'
    ? 2 * config.restore.etcdWaitSeconds + config.restore.etcdWaitSeconds + 2 * config.restore.apiserverWaitSeconds
    : config.restore.etcdWaitSeconds + 3 * config.restore.apiserverWaitSeconds;
  return { expectedDowntimeSeconds: expected, worstCaseDowntimeSeconds: Math.round(restore + waits), downtime: parts };
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

export async function nonEmptyDir(p: string): Promise<boolean> {
  return readdir(p).then((e) => e.length > 0, () => false);
}

export async function compareExisting(local: string, file: KitFile): Promise<'absent' | 'identical' | 'differs'> {
  let content: Buffer;
  try {
    content = await readFile(local);
  } catch {
    return 'absent';
  }
  return createHash('sha256').update(content).digest('hex') === file.sha256 ? 'identical' : 'differs';
}

export function stamp(d: Date): string {
  return d.toISOString().replaceAll('-', '').replaceAll(':', '');
}
