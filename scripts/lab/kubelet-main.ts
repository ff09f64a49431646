/**
 * The lab's kubelet, run inside a lab host (its own network, mount and UTS namespaces):
 *
 *   node scripts/lab/kubelet-main.ts --log-dir DIR --etcd BIN --kube-bin-dir DIR --node-ip ADDRESS
 *
 * It runs the static pods of `/etc/kubernetes/manifests` with the real etcd, kube-apiserver,
 * kube-controller-manager and kube-scheduler (./static-pods.ts), serves the kubelet health
 * endpoint that kubeadm waits on (`http://127.0.0.1:10248/healthz`), and does the TLS bootstrap,
 * Node registration, node Lease and mirror pods of ./node-agent.ts. SIGTERM stops every pod, then exits 0.
 *
 * What it does not prove: there is no container runtime, so no image is pulled, no pod other
 * than the four static control-plane pods runs, and the Node is never Ready.
 */
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { StandInKubelet } from './static-pods.ts';
import { checkNodeAgentTools, runNodeAgent } from './node-agent.ts';

const { values } = parseArgs({
  options: {
    'log-dir': { type: 'string' },
    etcd: { type: 'string' },
    'kube-bin-dir': { type: 'string' },
    'node-ip': { type: 'string' },
  },
});
const logDir = values['log-dir'];
const etcd = values.etcd;
const kubeBin = values['kube-bin-dir'];
const nodeIP = values['node-ip'];
if (!logDir || !etcd || !kubeBin || !nodeIP) {
  console.error('usage: kubelet-main.ts --log-dir DIR --etcd BIN --kube-bin-dir DIR --node-ip ADDRESS');
  process.exit(2);
}

const node = hostname();
const log = (line: string) => appendFileSync(path.join(logDir, 'kubelet.log'), `${new Date().toISOString()} ${line}\n`);
await checkNodeAgentTools();

const components = Object.fromEntries(['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].map((c) => [c, path.join(kubeBin, c)]));
const kubelet = await StandInKubelet.start({ components: { etcd, ...components }, logDir });

const health = createServer((req, res) => {
  if (req.url === '/healthz') res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
  else res.writeHead(404).end();
});
await new Promise<void>((resolve, reject) => {
  health.once('error', reject);
  health.listen(10248, '127.0.0.1', () => resolve());
});
log(`kubelet on ${node}: healthz on 127.0.0.1:10248, static pods from /etc/kubernetes/manifests`);

let stopping = false;
const running = (file: string) => kubelet.pods().some((p) => p.file === file && p.state === 'running');
const agent = runNodeAgent(node, nodeIP, running, () => stopping, log);

process.once('SIGTERM', () => {
  stopping = true;
  log('SIGTERM: stopping every pod');
  void (async () => {
    health.close();
    await kubelet.stop();
    await agent;
    process.exit(0);
  })();
});
