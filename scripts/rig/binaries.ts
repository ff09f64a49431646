/**
 * The one place that resolves the real binaries the tests, rigs, demo and benchmarks run, from
 * the versions pinned in scripts/versions.env. scripts/build-binaries.sh (run by
 * scripts/install-deps.sh) builds them from their Go modules and links them into .cache/:
 *
 *   .cache/etcd-3.6/bin/{etcd,etcdctl,etcdutl}      ETCD_36
 *   .cache/etcd-3.5/bin/{etcd,etcdctl,etcdutl}      ETCD_35
 *   .cache/kubernetes/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubeadm,kubectl}
 *
 * A missing binary throws one line that names it and says how to get it.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VERSIONS_FILE = path.join(REPO, 'scripts/versions.env');

/** The etcd minor versions the suite runs: 3.6 by default, 3.5 for compatibility. */
export type EtcdVersion = '3.6' | '3.5';
export const DEFAULT_ETCD_VERSION: EtcdVersion = '3.6';
export const ETCD_VERSIONS: readonly EtcdVersion[] = ['3.6', '3.5'];

export interface EtcdBinaries {
  /** The minor version asked for. */
  minor: EtcdVersion;
  /** The full pinned version, e.g. 3.6.17. */
  version: string;
  etcd: string;
  etcdctl: string;
  etcdutl: string;
}

export interface KubernetesBinaries {
  /** The full pinned version, e.g. 1.37.2. */
  version: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubeadm: string;
  kubectl: string;
}

const ETCD_KEYS: Record<EtcdVersion, string> = { '3.6': 'ETCD_36', '3.5': 'ETCD_35' };

/** The KEY=VALUE lines of scripts/versions.env (comments and blank lines skipped). */
export function pinnedVersions(): Map<string, string> {
  const pinned = new Map<string, string>();
  for (const [i, raw] of readFileSync(VERSIONS_FILE, 'utf8').split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Z][A-Z0-9_]*)=(\S+)$/.exec(line);
    if (!match) throw new Error(`${VERSIONS_FILE}:${i + 1}: expected KEY=VALUE, got ${JSON.stringify(line)}`);
    pinned.set(match[1]!, match[2]!);
  }
  return pinned;
}

function pinned(key: string): string {
  const value = pinnedVersions().get(key);
  if (value === undefined) throw new Error(`${VERSIONS_FILE} does not pin ${key}`);
  return value;
}

/** The full pinned version of an etcd minor version, e.g. '3.6' -> '3.6.17'. */
export function pinnedEtcdVersion(minor: EtcdVersion): string {
  return pinned(ETCD_KEYS[minor]);
}

/** The etcd image kubeadm would write into the static pod manifest for the pinned default etcd. */
export function etcdImage(): string {
  return `registry.k8s.io/etcd:${pinnedEtcdVersion(DEFAULT_ETCD_VERSION)}-0`;
}

function present(file: string): string {
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`bash scripts/install-deps.sh\` (as root) first`);
  return file;
}

/** etcd, etcdctl and etcdutl of the pinned `minor` version, built by scripts/build-binaries.sh. */
export function etcdBinaries(minor: EtcdVersion = DEFAULT_ETCD_VERSION): EtcdBinaries {
  const version = pinnedEtcdVersion(minor);
  const bin = path.join(REPO, `.cache/etcd-${minor}/bin`);
  return {
    minor,
    version,
    etcd: present(path.join(bin, 'etcd')),
    etcdctl: present(path.join(bin, 'etcdctl')),
    etcdutl: present(path.join(bin, 'etcdutl')),
  };
}

/** The pinned Kubernetes control-plane binaries, kubeadm and kubectl, built by scripts/build-binaries.sh. */
export function kubernetesBinaries(): KubernetesBinaries {
  const version = pinned('KUBERNETES');
  const bin = path.join(REPO, '.cache/kubernetes/bin');
  return {
    version,
    kubeApiserver: present(path.join(bin, 'kube-apiserver')),
    kubeControllerManager: present(path.join(bin, 'kube-controller-manager')),
    kubeScheduler: present(path.join(bin, 'kube-scheduler')),
    kubeadm: present(path.join(bin, 'kubeadm')),
    kubectl: present(path.join(bin, 'kubectl')),
  };
}
