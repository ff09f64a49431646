/**
 * The real lab: three hosts in their own network and mount namespaces, a real kubeadm control
 * plane across them (Kubernetes and etcd 3.6 built from source), filled through kubectl.
 * Nothing here is simulated except the kubelet (scripts/lab/kubelet-main.ts says what it does
 * not prove).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { etcdBinaries, kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { startKubeCluster, waitForNodes, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects, type FillResult } from '../../scripts/lab/fill.ts';
import { execOnHost } from '../../scripts/lab/hosts.ts';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import type { DaemonProcess } from '../support/daemon.ts';
import { daemonOn, lifeboatOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { runCli } from '../support/lifeboat.ts';

let work: string;
let cluster: KubeCluster;
let filled: FillResult;
let lb: LabLifeboat;
let pki: ApiPki;
const phases: string[] = [];
const daemons: DaemonProcess[] = [];
const restorer = generateToken();
const key = await generateIdentity();

/** etcdctl on `host` against its own member, with kubeadm's healthcheck client certificate. */
function etcdctl(host: KubeCluster['hosts'][number], args: string[]) {
  return execOnHost(host, etcdBinaries('3.6').etcdctl, [
    '--command-timeout=15s',
    '--endpoints=https://127.0.0.1:2379',
    '--cacert=/etc/kubernetes/pki/etcd/ca.crt',
    '--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt',
    '--key=/etc/kubernetes/pki/etcd/healthcheck-client.key',
    ...args,
  ], { timeoutMs: 20_000 });
}

/** Who the apiserver says `token` is, asked from `host` with only the token (no kubeconfig, no admin certificate). */
async function whoami(host: KubeCluster['hosts'][number], token: string): Promise<string> {
  const args = ['--kubeconfig=', '--server=https://cluster-endpoint.lab:6443', '--certificate-authority=/etc/kubernetes/pki/ca.crt', `--token=${token}`, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'];
  return (await execOnHost(host, kubernetesBinaries().kubectl, args, { env: { PATH: process.env['PATH'] } })).stdout;
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-lab-'));
  const start = performance.now();
  cluster = await startKubeCluster({ net: 21, dir: work, onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  filled = await fillCluster(cluster, { namespaces: 3, targetMiB: 50 });
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  pki = await makeApiPki(path.join(work, 'api-pki'), cluster.hosts.map((h) => `IP:${h.address}`));
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(restorer, 'restorer', 'dr-team')}\n`);
  console.log(`# lab: ${phases.join(', ')}; whole start and fill ${((performance.now() - start) / 1000).toFixed(1)} s`);
});

after(async () => {
  for (const d of daemons) d.child.kill('SIGKILL');
  await Promise.all(daemons.map((d) => d.exited));
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('kube-apiserver, kubeadm and kubectl report the pinned Kubernetes version, and etcd reports 3.6', async () => {
  const pinned = `v${kubernetesBinaries().version}`;
  const version = JSON.parse((await cluster.kubectl(['version', '-o', 'json'])).stdout) as { clientVersion: { gitVersion: string }; serverVersion: { gitVersion: string } };
  assert.equal(version.serverVersion.gitVersion, pinned);
  assert.equal(version.clientVersion.gitVersion, pinned);
  const raw = JSON.parse((await cluster.kubectl(['get', '--raw', '/version'])).stdout) as { gitVersion: string };
  assert.equal(raw.gitVersion, pinned);
  const kubeadm = await execOnHost(cluster.hosts[0]!, kubernetesBinaries().kubeadm, ['version', '-o', 'short']);
  assert.equal(kubeadm.stdout.trim(), pinned);
  const status = JSON.parse((await etcdctl(cluster.hosts[0]!, ['endpoint', 'status', '-w', 'json'])).stdout) as { Status: { version: string; dbSize: number } }[];
  assert.equal(status[0]!.Status.version, etcdBinaries('3.6').version);
  assert.ok(status[0]!.Status.dbSize >= 50 << 20, `the database holds ${status[0]!.Status.dbSize} bytes, filled through kubectl to at least 50 MiB`);
});

test('kubeadm init and two kubeadm join --control-plane make three stacked etcd members, apiservers and Nodes', async () => {
  const members = JSON.parse((await etcdctl(cluster.hosts[1]!, ['member', 'list', '-w', 'json'])).stdout) as { members: { name: string; clientURLs: string[] }[] };
  assert.deepEqual(members.members.map((m) => m.name).sort(), ['cp-1', 'cp-2', 'cp-3']);
  for (const h of cluster.hosts) assert.ok(members.members.some((m) => m.clientURLs.includes(`https://${h.address}:2379`)), `member of ${h.name} serves on its own address`);
  const nodes = JSON.parse((await cluster.kubectl(['get', 'nodes', '-o', 'json'])).stdout) as { items: { metadata: { name: string; labels: Record<string, string> } }[] };
  assert.deepEqual(nodes.items.map((n) => n.metadata.name).sort(), ['cp-1', 'cp-2', 'cp-3']);
  for (const n of nodes.items) assert.ok('node-role.kubernetes.io/control-plane' in n.metadata.labels, `${n.metadata.name} is marked control-plane by kubeadm`);
  // Every apiserver answers through its own host.
  for (const h of cluster.hosts) assert.equal((await cluster.kubectl(['get', '--raw', '/readyz'], { host: h })).stdout.trim(), 'ok');
  // kubeadm keeps its ClusterConfiguration only in the cluster, not in a file.
  const cm = JSON.parse((await cluster.kubectl(['get', 'configmap', 'kubeadm-config', '-n', 'kube-system', '-o', 'json'])).stdout) as { data: { ClusterConfiguration: string } };
  assert.match(cm.data.ClusterConfiguration, /controlPlaneEndpoint: cluster-endpoint\.lab:6443/);
});

test('Secrets are encrypted at rest by the apiserver, and readable through it', async () => {
  const raw = await etcdctl(cluster.hosts[0]!, ['get', `/registry/secrets/${filled.namespaces[0]}/credentials`, '--print-value-only']);
  assert.ok(raw.stdout.startsWith('k8s:enc:aescbc:v1:key1:'), `stored value starts ${JSON.stringify(raw.stdout.slice(0, 24))}`);
  const secret = JSON.parse((await cluster.kubectl(['get', 'secret', 'credentials', '-n', filled.namespaces[0]!, '-o', 'json'])).stdout) as { data: { user: string } };
  assert.equal(Buffer.from(secret.data.user, 'base64').toString(), 'user-1');
});

test('the filled objects read back, and the minted token authenticates', async () => {
  const objects = await snapshotObjects(cluster);
  assert.equal([...objects.keys()].filter((k) => k.startsWith('Widget/')).length, 3);
  assert.deepEqual([...objects.keys()].filter((k) => k.startsWith('Namespace/')).sort(), [...filled.namespaces, 'bulk'].map((n) => `Namespace//${n}`).sort());
  assert.ok([...objects.keys()].filter((k) => k.startsWith('ConfigMap/bulk/')).length >= 57, 'the bulk ConfigMaps that make 50 MiB');
  assert.equal(await whoami(cluster.hosts[1]!, filled.token), `system:serviceaccount:${filled.tokenNamespace}:reader`);
});

/** The error lines the daemons logged, for a failure message. */
function daemonErrors(): string {
  return daemons.flatMap((d) => d.logs.filter((l) => (l['level'] as number) >= 50).map((l) => `${d.name}: ${JSON.stringify(l)}`)).join('\n');
}

/** The daemon settings of a lab host: its API on its own address, schedules off (the test asks). */
function daemonSettings(host: KubeCluster['hosts'][number]): Record<string, unknown> {
  return {
    daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 } },
    api: { listen: { host: host.address, port: 8443 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile: path.join(work, 'tokens') },
    metrics: { listen: { host: '127.0.0.1', port: 9464 } },
    client: { url: `https://${host.address}:8443`, caFile: pki.ca.cert },
  };
}

test('a backup on a real kubeadm host, then restore apply --all in place through the daemons: every object is back, Secrets are readable, the old token authenticates', async () => {
  const before = await snapshotObjects(cluster);
  const made = await lifeboatOn(cluster.hosts[1]!, lb, ['backup']);
  assert.equal(made.code, 0, made.stderr);
  const backup = await new Catalog(new FsStore(lb.storeDir), 'lab').resolve('latest');
  const roles = new Set(backup.kit.files.map((f) => f.role));
  for (const role of ['pki', 'static-pod-manifest', 'encryption-provider-config', 'cluster-configuration']) assert.ok(roles.has(role as never), `the kit holds the ${role} files: ${JSON.stringify(backup.kit.missing)}`);
  assert.equal(backup.etcd.version, etcdBinaries('3.6').version);
  // A drill of it on another host: restored into a throwaway etcd 3.6 and counted.
  const drilled = await lifeboatOn(cluster.hosts[2]!, lb, ['drill', 'latest']);
  assert.equal(drilled.code, 0, drilled.stderr);

  // Changes after the backup, which the restore takes back.
  await cluster.kubectl(['delete', 'namespace', filled.namespaces[1]!, '--wait=false']);
  await cluster.kubectl(['create', 'namespace', 'made-after-backup']);

  for (const h of cluster.hosts) daemons.push(await daemonOn(h, lb, daemonSettings(h)));
  const applied = await runCli(['restore', 'apply', '--all', '--backup', backup.backupId, '--mode', 'in-place'], {
    LIFEBOAT_CLIENT__URL: `https://${cluster.hosts[0]!.address}:8443`,
    LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert,
    LIFEBOAT_CLIENT__TOKEN: restorer,
  });
  assert.equal(applied.code, 0, applied.stdout + applied.stderr + daemonErrors());
  assert.match(applied.stdout, /restore done on every member/);

  await waitForNodes(cluster, cluster.hosts.map((h) => h.name));
  for (const h of cluster.hosts) assert.deepEqual(await snapshotObjects(cluster, h), before, `kubectl on ${h.name} reads back every object as it was`);
  const after = await cluster.kubectl(['get', 'namespace', 'made-after-backup'], { allowFailure: true });
  assert.notEqual(after.code, 0, 'the namespace made after the backup is gone');
  const secret = JSON.parse((await cluster.kubectl(['get', 'secret', 'credentials', '-n', filled.namespaces[1]!, '-o', 'json'])).stdout) as { data: { user: string } };
  assert.equal(Buffer.from(secret.data.user, 'base64').toString(), 'user-2');
  assert.equal(await whoami(cluster.hosts[2]!, filled.token), `system:serviceaccount:${filled.tokenNamespace}:reader`, 'the token minted before the backup still authenticates');
  // A watch from before the restore is told to relist.
  const watched = await etcdctl(cluster.hosts[0]!, ['watch', `--rev=${backup.etcd.revision}`, '/registry/']).then(
    () => '',
    (err: Error) => err.message,
  );
  assert.match(watched, /required revision has been compacted/);
});
