import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import type { PopulateOptions } from '../../scripts/rig/populate.ts';
import { makeApiPki, type ApiPki } from './api-pki.ts';
import { spawnDaemon, type DaemonProcess } from './daemon.ts';
import { configDoc, writeConfig } from './lifeboat.ts';

export const TRIO = ['cp-1', 'cp-2', 'cp-3'] as const;

export interface DaemonTrio {
  cluster: EtcdCluster;
  pki: ApiPki;
  storeDir: string;
  tokens: { viewer: string; operator: string };
  daemons: DaemonProcess[];
  /** Each daemon's config file, by name. */
  configFiles: Map<string, string>;
  /** SIGKILLs every daemon, waits for them, and stops etcd. */
  stop(): Promise<void>;
}

/**
 * Three `lifeboat serve` processes (cp-1, cp-2, cp-3) on a 3-member TLS etcd, each told only its
 * own member as on a kubeadm node, sharing one directory store, with a viewer and an operator
 * token and client certificates of O=lifeboat-operators as operators. `daemon`, and `api` (made
 * from the API's PKI), are merged into each daemon's config; schedules default to off. `config`
 * adds other top-level sections (e.g. `changes`). With `identity`, each daemon has the age
 * identity (encryption.identityFile) and etcd 3.6 (tools), so that it can drill.
 */
export async function startDaemonTrio(work: string, options: { populate: PopulateOptions; daemon?: Record<string, unknown>; api?: (pki: ApiPki) => Record<string, unknown>; config?: Record<string, unknown>; identity?: boolean }): Promise<DaemonTrio> {
  const { etcd: cluster, hostRoot } = await startEtcdHost(work, { members: 3, hosts: ['m1', 'm2', 'm3'], populate: options.populate });
  const daemons: DaemonProcess[] = [];
  const stop = async () => {
    for (const d of daemons) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
    await cluster.stop();
  };
  try {
    const pki = await makeApiPki(path.join(work, 'api-pki'));
    const tokens = { viewer: generateToken(), operator: generateToken() };
    const tokensFile = path.join(work, 'tokens');
    await writeFile(tokensFile, `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'oncall')}\n`, { mode: 0o600 });
    const storeDir = path.join(work, 'store');
    const { recipient, identity } = await generateIdentity();
    const identityFile = path.join(work, 'identity.txt');
    if (options.identity) await writeFile(identityFile, identityFileText(identity, recipient, new Date()), { mode: 0o600 });
    const drilling = options.identity ? { encryption: { recipients: [recipient], identityFile }, tools: { etcdutl: etcdBinaries('3.6').etcdutl, etcd: etcdBinaries('3.6').etcd } } : {};
    const configFiles = new Map<string, string>();
    for (const [i, name] of TRIO.entries()) {
      const doc = configDoc(cluster, hostRoot, storeDir, [recipient], {
        ...options.config,
        ...drilling,
        node: name,
        etcd: { endpoints: [cluster.endpoints[i]], tls: cluster.tls, dialTimeoutMs: 3000 },
        retention: { afterBackup: false },
        daemon: {
          stateDir: path.join(work, `state-${name}`),
          schedules: { backup: 'off', prune: 'off', drill: 'off' },
          shutdownGraceSeconds: 5,
          ...options.daemon,
        },
        api: {
          listen: { host: '127.0.0.1', port: 0 },
          tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: pki.ca.cert },
          tokensFile,
          clientCertRoles: [{ o: 'lifeboat-operators', role: 'operator' }],
          ...options.api?.(pki),
        },
        metrics: { listen: { host: '127.0.0.1', port: 0 } },
        log: { level: 'info' },
      });
      const file = await writeConfig(work, doc);
      configFiles.set(name, file);
      daemons.push(await spawnDaemon(name, file));
    }
    return { cluster, pki, storeDir, tokens, daemons, configFiles, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
