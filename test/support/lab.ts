/**
 * Lifeboat on the lab's hosts, as it runs on a kubeadm control-plane node: the CLI and the
 * daemon run inside a host's namespaces (scripts/lab/hosts.ts), with kubeadm's real paths and
 * Lifeboat's defaults for everything kubeadm decides (etcd on https://127.0.0.1:2379 with the
 * healthcheck client certificate, the kit under /etc/kubernetes, etcd's data dir from its
 * manifest). The store is a directory that every host sees at the same path.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { etcdBinaries, kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { execOnHost, hostPrefix, type HostRun, type LabHost } from '../../scripts/lab/hosts.ts';
import { spawnDaemon, type DaemonProcess } from './daemon.ts';
import { NODE_FLAGS, REPO, writeConfig } from './lifeboat.ts';
import { SIGNING_CONFIG } from './signing.ts';

export interface LabLifeboat {
  /** A folder outside every host's bound dirs, so every host sees it at the same path. */
  work: string;
  storeDir: string;
  recipient: string;
  identityFile?: string;
}

/** A config for Lifeboat on `host`: only what kubeadm does not decide, plus `extra`. */
export function labConfigDoc(host: LabHost, lb: LabLifeboat, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const etcd = etcdBinaries('3.6');
  return {
    cluster: 'lab',
    node: host.name,
    store: { fs: { dir: lb.storeDir } },
    encryption: { recipients: [lb.recipient], ...(lb.identityFile ? { identityFile: lb.identityFile } : {}) },
    signing: SIGNING_CONFIG,
    tools: { etcdutl: etcd.etcdutl, etcd: etcd.etcd, kubeadm: kubernetesBinaries().kubeadm },
    log: { level: 'info' },
    ...extra,
  };
}

/** The Lifeboat CLI on `host`, with a config written for it; resolves with its output (any exit code). */
export async function lifeboatOn(host: LabHost, lb: LabLifeboat, args: string[], extra: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = {}): Promise<HostRun> {
  const config = await writeConfig(path.join(lb.work, 'config', host.name), labConfigDoc(host, lb, extra));
  return execOnHost(host, process.execPath, [...NODE_FLAGS, path.join(REPO, 'src/cli/main.ts'), '--config', config, ...args], {
    env: { PATH: process.env['PATH'], HOME: process.env['HOME'], ...env },
    allowFailure: true,
    timeoutMs: 600_000,
  });
}

/** `lifeboat serve` on `host`; its API on the host's address. */
export async function daemonOn(host: LabHost, lb: LabLifeboat, extra: Record<string, unknown>): Promise<DaemonProcess> {
  const config = await writeConfig(path.join(lb.work, 'config', host.name), labConfigDoc(host, lb, extra));
  return spawnDaemon(host.name, config, {}, hostPrefix(host));
}

export async function writeSecret(file: string, text: string): Promise<string> {
  await writeFile(file, text, { mode: 0o600 });
  return file;
}
