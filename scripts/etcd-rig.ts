/**
 * A real TLS etcd for people and scripts (the demo, manual testing).
 *
 *   npm run etcd-rig -- start --dir DIR [--members 1|3] [--version 3.6|3.5] [--populate N]
 *   npm run etcd-rig -- stop --dir DIR
 *
 * (Node 24: npm scripts run the node dev dependency.)
 *
 * `start` writes a kubeadm-shaped tree to DIR/host/etc/kubernetes (PKI, static pod manifests,
 * encryption config, ClusterConfiguration), starts etcd (3.6 by default, or 3.5, at the versions
 * pinned in scripts/versions.env) with kubeadm's TLS flags on free 127.0.0.1 ports, detached,
 * optionally writes N Kubernetes-shaped keys, and records endpoints, PIDs and cert paths in
 * DIR/rig.json. `stop` stops exactly those PIDs.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeKubeadmTree } from './rig/pki.ts';
import { DEFAULT_ETCD_VERSION, ETCD_VERSIONS, type EtcdVersion } from './rig/binaries.ts';
import { startEtcd } from './rig/etcd.ts';
import { populate } from './rig/populate.ts';

const USAGE = `usage:
  npm run etcd-rig -- start --dir DIR [--members 1|3] [--version 3.6|3.5] [--populate N]
  npm run etcd-rig -- stop --dir DIR

start  makes DIR/host/etc/kubernetes (kubeadm-shaped PKI and manifests), starts a TLS etcd
       with client-cert auth on free 127.0.0.1 ports (detached), optionally writes N keys,
       and writes DIR/rig.json (endpoints, PIDs, cert paths). --version picks etcd 3.6
       (default) or 3.5, as pinned in scripts/versions.env.
stop   stops the PIDs recorded in DIR/rig.json (SIGTERM, then SIGKILL after 5 s).

example:
  npm run etcd-rig -- start --dir /tmp/rig --members 3 --populate 1000
  npm run etcd-rig -- stop --dir /tmp/rig`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string' },
    members: { type: 'string', default: '1' },
    version: { type: 'string', default: DEFAULT_ETCD_VERSION },
    populate: { type: 'string', default: '0' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const command = positionals[0];
if (values.help || !command || !values.dir || !['start', 'stop'].includes(command)) {
  console.log(USAGE);
  process.exit(values.help ? 0 : 2);
}
const dir = path.resolve(values.dir);
const stateFile = path.join(dir, 'rig.json');

interface RigState {
  endpoints: string[];
  pids: number[];
  hostRoot: string;
  kubernetesDir: string;
  tls: { caFile: string; certFile: string; keyFile: string };
  logs: string[];
}

if (command === 'start') {
  const members = Number(values.members);
  if (members !== 1 && members !== 3) throw new Error('--members must be 1 or 3');
  const version = values.version as EtcdVersion;
  if (!ETCD_VERSIONS.includes(version)) throw new Error(`--version must be ${ETCD_VERSIONS.join(' or ')}`);
  await mkdir(dir, { recursive: true });
  const hostRoot = path.join(dir, 'host');
  const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'));
  const cluster = await startEtcd({ tree, members, version, dataRoot: path.join(dir, 'data'), detached: true });
  const keys = Number(values.populate);
  if (keys > 0) {
    const client = cluster.client();
    await populate(client, { keys, valueBytes: [100, 4096] });
    client.close();
  }
  const state: RigState = {
    endpoints: cluster.endpoints,
    pids: cluster.members.map((m) => m.pid!),
    hostRoot,
    kubernetesDir: tree.root,
    tls: cluster.tls,
    logs: cluster.members.map((m) => m.logFile),
  };
  await writeFile(stateFile, `${JSON.stringify(state, null, 2)}\n`);
  console.log(JSON.stringify(state, null, 2));
} else {
  const state = JSON.parse(await readFile(stateFile, 'utf8')) as RigState;
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const pid of state.pids) if (alive(pid)) process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 5000;
  while (state.pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const pid of state.pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await rm(stateFile, { force: true });
  console.log(`stopped etcd ${state.pids.join(', ')}`);
}
