/**
 * The test lab from the command line (as root, after scripts/install-deps.sh):
 *
 *   npm run lab -- start [--dir DIR] [--net N] [--fill-mib M]   three hosts, a real kubeadm cluster
 *   npm run lab -- stop [--net N]                               remove everything the lab made
 *
 * `start` prints how to reach each host and leaves the lab running; its processes outlive this
 * command, and `stop` removes them by PID with every namespace, veth, bridge and mount point.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startKubeCluster } from './cluster.ts';
import { fillCluster } from './fill.ts';
import { destroyLab } from './hosts.ts';

const USAGE = `usage:
  npm run lab -- start [--dir DIR] [--net N] [--fill-mib M]
  npm run lab -- stop [--net N]

start  makes hosts cp-1..cp-3 (10.249.N.11-13, each its own network, mount and UTS namespaces),
       runs real kubeadm init on cp-1 and kubeadm join --control-plane on the others, and fills
       the cluster through kubectl (M MiB of bulk ConfigMaps on top). Default N: 30.
stop   removes every process, namespace, veth, bridge and mount point lab N made.

Run a command on a host:  nsenter -t <holder pid> -n -m -u -- kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes`;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { dir: { type: 'string' }, net: { type: 'string', default: '30' }, 'fill-mib': { type: 'string', default: '0' }, help: { type: 'boolean', short: 'h' } },
});
const net = Number(values.net);
const command = positionals[0];
if (values.help || (command !== 'start' && command !== 'stop') || !Number.isInteger(net)) {
  console.log(USAGE);
  process.exit(values.help ? 0 : 2);
}

if (command === 'stop') {
  await destroyLab(net);
  console.log(`lab ${net} removed`);
} else {
  const dir = values.dir ?? (await mkdtemp(path.join(tmpdir(), 'lifeboat-lab-')));
  const cluster = await startKubeCluster({ net, dir, onPhase: (phase, s) => console.log(`${phase}: ${s.toFixed(1)} s`), detached: true });
  const filled = await fillCluster(cluster, { targetMiB: Number(values['fill-mib']) });
  for (const h of cluster.hosts) console.log(`${h.name}  ${h.address}  holder pid ${h.holder}  files ${h.dir}  logs ${h.logDir}`);
  console.log(`filled: ${filled.namespaces.join(', ')}; token for ${filled.tokenNamespace}/reader in ${path.join(dir, 'token')}`);
  await writeFile(path.join(dir, 'token'), filled.token, { mode: 0o600 });
  console.log(`stop it with: npm run lab -- stop --net ${net}`);
  process.exit(0);
}
