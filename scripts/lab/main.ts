/**
 * The test lab from the command line (as root, after scripts/install-deps.sh):
 *
 *   npm run lab -- start [--dir DIR] [--net N] [--fill-mib M]   three hosts, a real kubeadm cluster
 *   npm run lab -- exec [--net N] HOST -- COMMAND...              run a command on a host
 *   npm run lab -- stop [--net N]                               remove everything the lab made
 *
 * `start` prints each host and leaves the lab running; its processes outlive this command.
 * `exec` runs a command on a host. `stop` removes the lab's processes by PID with every
 * namespace, veth, bridge and mount point.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startKubeCluster } from './cluster.ts';
import { fillCluster } from './fill.ts';
import { spawn } from 'node:child_process';
import { etcdBinaries, kubernetesBinaries } from '../rig/binaries.ts';
import { destroyLab, hostPrefix, recordedHosts } from './hosts.ts';

const USAGE = `usage:
  npm run lab -- start [--dir DIR] [--net N] [--hosts 1|3] [--fill-mib M]
  npm run lab -- exec [--net N] HOST -- COMMAND [ARGS...]
  npm run lab -- stop [--net N]

start  makes hosts cp-1..cp-3 (or --hosts of them; 10.249.N.11-13, each its own network, mount and UTS namespaces),
       runs real kubeadm init on cp-1 and kubeadm join --control-plane on the others, and fills
       the cluster through kubectl (M MiB of bulk ConfigMaps on top). Default N: 30.
exec   runs COMMAND on HOST (its network, mount and UTS namespaces), with the built kubectl, kubeadm,
       etcdctl and etcdutl first on PATH and KUBECONFIG=/etc/kubernetes/admin.conf:
         npm run lab -- exec cp-1 -- kubectl get nodes
stop   removes every process, namespace, veth, bridge and mount point lab N made.`;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { dir: { type: 'string' }, net: { type: 'string', default: '30' }, hosts: { type: 'string' }, 'fill-mib': { type: 'string', default: '0' }, help: { type: 'boolean', short: 'h' } },
});
const net = Number(values.net);
const command = positionals[0];
if (values.help || !['start', 'exec', 'stop'].includes(command ?? '') || !Number.isInteger(net)) {
  console.log(USAGE);
  process.exit(values.help ? 0 : 2);
}

if (command === 'stop') {
  await destroyLab(net);
  console.log(`lab ${net} removed`);
} else if (command === 'exec') {
  const [name, ...argv] = positionals.slice(1);
  const host = (await recordedHosts(net)).find((h) => h.name === name);
  if (!host || argv.length === 0) {
    console.error(host ? 'exec: no command given' : `exec: lab ${net} has no host ${name ?? '(none given)'}; start it first`);
    process.exit(2);
  }
  const bins = [path.dirname(kubernetesBinaries().kubectl), path.dirname(etcdBinaries().etcdctl)];
  const child = spawn(hostPrefix(host)[0]!, [...hostPrefix(host).slice(1), ...argv], { stdio: 'inherit', env: { ...process.env, PATH: [...bins, process.env['PATH']].join(':'), KUBECONFIG: '/etc/kubernetes/admin.conf' } });
  child.once('exit', (code) => process.exit(code ?? 1));
} else {
  const dir = values.dir ?? (await mkdtemp(path.join(tmpdir(), 'lifeboat-lab-')));
  const cluster = await startKubeCluster({ net, dir, names: values.hosts === undefined ? undefined : Array.from({ length: Number(values.hosts) }, (_, i) => `cp-${i + 1}`), onPhase: (phase, s) => console.log(`${phase}: ${s.toFixed(1)} s`), detached: true });
  const filled = await fillCluster(cluster, { targetMiB: Number(values['fill-mib']) });
  for (const h of cluster.hosts) console.log(`${h.name}  ${h.address}  files ${h.dir}  logs ${h.logDir}`);
  console.log(`filled: ${filled.namespaces.join(', ')}; token for ${filled.tokenNamespace}/reader in ${path.join(dir, 'token')}`);
  await writeFile(path.join(dir, 'token'), filled.token, { mode: 0o600 });
  console.log(`stop it with: npm run lab -- stop --net ${net}`);
  process.exit(0);
}
