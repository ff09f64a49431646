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
import { startKubeCluster, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects, type FillResult } from '../../scripts/lab/fill.ts';
import { execOnHost } from '../../scripts/lab/hosts.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { lifeboatOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { etcdctlOn, whoami } from '../support/restore-nodes.ts';
import { TEST_TRUST } from '../support/signing.ts';

let work: string;
let cluster: KubeCluster;
let filled: FillResult;
let lb: LabLifeboat;
const phases: string[] = [];
const key = await generateIdentity();

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-lab-'));
  const start = performance.now();
  cluster = await startKubeCluster({ net: 21, dir: work, onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  filled = await fillCluster(cluster, { namespaces: 3, targetMiB: 50 });
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  console.log(`# lab: ${phases.join(', ')}; whole start and fill ${((performance.now() - start) / 1000).toFixed(1)} s`);
});

after(async () => {
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
  const status = JSON.parse((await etcdctlOn(cluster.hosts[0]!, ['endpoint', 'status', '-w', 'json'])).stdout) as { Status: { version: string; dbSize: number } }[];
  assert.equal(status[0]!.Status.version, etcdBinaries('3.6').version);
  assert.ok(status[0]!.Status.dbSize >= 50 << 20, `the database holds ${status[0]!.Status.dbSize} bytes, filled through kubectl to at least 50 MiB`);
});

test('kubeadm init and two kubeadm join --control-plane make three stacked etcd members, apiservers and Nodes', async () => {
  const members = JSON.parse((await etcdctlOn(cluster.hosts[1]!, ['member', 'list', '-w', 'json'])).stdout) as { members: { name: string; clientURLs: string[] }[] };
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
  const raw = await etcdctlOn(cluster.hosts[0]!, ['get', `/registry/secrets/${filled.namespaces[0]}/credentials`, '--print-value-only']);
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

test('a backup on a real kubeadm host holds the whole kit, the ClusterConfiguration from the kubeadm-config ConfigMap among it, and a drill of it passes on another host', async () => {
  const made = await lifeboatOn(cluster.hosts[1]!, lb, ['backup']);
  assert.equal(made.code, 0, made.stderr);
  const backup = await new Catalog(new FsStore(lb.storeDir), 'lab', { trust: TEST_TRUST }).resolve('latest');
  const roles = new Set(backup.kit.files.map((f) => f.role));
  for (const role of ['pki', 'static-pod-manifest', 'encryption-provider-config', 'cluster-configuration']) assert.ok(roles.has(role as never), `the kit holds the ${role} files: ${JSON.stringify(backup.kit.missing)}`);
  assert.deepEqual(backup.kit.missing.filter((m) => m.role !== 'extra'), []);
  assert.equal(backup.etcd.version, etcdBinaries('3.6').version);
  const drilled = await lifeboatOn(cluster.hosts[2]!, lb, ['drill', 'latest']);
  assert.equal(drilled.code, 0, drilled.stderr);
});
