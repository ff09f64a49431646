import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { parseAllDocuments } from 'yaml';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { createDecryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import type { JoinInstructions } from '../../src/restore/kubeadm.ts';
import type { StepName } from '../../src/restore/plan.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { startEtcd, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { recordedCalls, writeKubeadmStandIn } from '../../scripts/rig/kubeadm-standin.ts';
import { StandInKubelet } from '../../scripts/rig/kubelet.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { populate } from '../../scripts/rig/populate.ts';
import { freePorts } from '../../scripts/rig/ports.ts';
import { takeBackup } from '../support/backups.ts';
import { configOf, ETCDUTL, quietLog } from '../support/lifeboat.ts';

/**
 * Fresh-control-plane restore into an empty temp root: the stand-in kubeadm
 * (scripts/rig/kubeadm-standin.ts) writes the static pod manifests as kubeadm init would, and
 * the stand-in kubelet (scripts/rig/kubelet.ts) runs the real etcd they describe.
 */
let work: string;
let srcRoot: string;
let source: EtcdCluster;
let storeDir: string;
let backup: StoredManifest;
let snapshotKeys: Map<string, Buffer>;
const key = await generateIdentity();
const kubelets: StandInKubelet[] = [];

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-fresh-'));
  storeDir = path.join(work, 'store');
  srcRoot = path.join(work, 'old-host');
  const tree = await makeKubeadmTree(path.join(srcRoot, 'etc/kubernetes'), { clusterName: 'prod' });
  source = await startEtcd({ tree, members: 1, dataRoot: path.join(work, 'old-etcd') });
  const client = source.client();
  try {
    await populate(client, { keys: 1000, valueBytes: [64, 1024], seed: 5 });
    for (const ip of ['10.0.0.1', '10.0.0.2', '127.0.0.1']) await client.put(`/registry/masterleases/${ip}`).value(`{"ip":"${ip}"}`);
    await client.put('/registry/minions/cp-old').value('{"kind":"Node","metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}');
    await client.put('/registry/leases/kube-node-lease/cp-old').value('{"kind":"Lease"}');
    await client.put('/registry/minions/worker-1').value('{"kind":"Node","metadata":{"labels":{}}}');
    snapshotKeys = new Map((await client.getAll().exec()).kvs.map((kv) => [kv.key.toString(), kv.value]));
  } finally {
    client.close();
  }
  const config = configOf({ cluster: 'it', node: 'cp-1', etcd: { endpoints: source.endpoints, tls: source.tls }, kit: { hostRoot: srcRoot }, store: { fs: { dir: storeDir } }, encryption: { recipients: [key.recipient] } });
  backup = await takeBackup(config, new FsStore(storeDir));
  await source.stop(); // the old control plane is gone
});

after(async () => {
  await Promise.all(kubelets.map((k) => k.stop()));
  await source?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function freshHost(name: string) {
  const root = path.join(work, name, 'root');
  await mkdir(root, { recursive: true });
  const [etcdClient, etcdPeer, apiserver] = (await freePorts(3)) as [number, number, number];
  const kubeadm = writeKubeadmStandIn({ dir: path.join(work, name, 'kubeadm'), root, ports: { etcdClient, etcdPeer, apiserver } });
  const pki = path.join(root, 'etc/kubernetes/pki');
  const config = configOf({
    cluster: 'it',
    node: 'cp-new',
    etcd: { endpoints: [`https://127.0.0.1:${etcdClient}`], tls: { caFile: path.join(pki, 'etcd/ca.crt'), certFile: path.join(pki, 'etcd/healthcheck-client.crt'), keyFile: path.join(pki, 'etcd/healthcheck-client.key') }, dialTimeoutMs: 3000 },
    kit: { hostRoot: root },
    store: { fs: { dir: storeDir } },
    encryption: { recipients: [key.recipient] },
    tools: { etcdutl: ETCDUTL, etcd: source.bins.etcd, kubeadm: kubeadm.command },
    restore: { advertiseAddress: '127.0.0.1', deleteStaleNodes: true, etcdWaitSeconds: 30, apiserverWaitSeconds: 30 },
    daemon: { stateDir: path.join(work, name, 'state') },
  });
  const store = new FsStore(storeDir);
  const engine = new RestoreEngine({ store, catalog: new Catalog(store, config.cluster), decrypt: createDecryptStream, exec: processExecutor, log: quietLog, config });
  const members = [{ name: 'cp-new', peerURL: `https://127.0.0.1:${etcdPeer}` }, { name: 'cp-2', peerURL: 'https://10.0.0.2:2380' }];
  return { root, config, engine, kubeadm, members, ports: { etcdClient, etcdPeer, apiserver }, pki };
}

async function treeDigest(root: string): Promise<string> {
  const hash = createHash('sha256');
  for (const f of (await readdir(root, { recursive: true })).sort()) {
    const p = path.join(root, f);
    const s = await stat(p);
    hash.update(`${f} ${s.mode}\n`);
    if (s.isFile()) hash.update(await readFile(p));
  }
  return hash.digest('hex');
}

test('a fresh-control-plane dry run restores for real and leaves the empty host empty', async () => {
  const host = await freshHost('dry');
  const before = await treeDigest(host.root);
  const plan = await host.engine.plan({ backup: 'latest', mode: 'fresh-control-plane', members: host.members, dryRun: true });
  const view = await host.engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity] });
  assert.equal(view.state, 'done');
  const dry = view.journal.result.dryRun as { etcd: { revision: string; keyCount: number }; wouldRun: string[]; wouldWait: string[] };
  assert.ok(BigInt(dry.etcd.revision) >= BigInt(plan.targetRevision));
  assert.equal(dry.etcd.keyCount, snapshotKeys.size);
  assert.deepEqual(dry.wouldRun, [
    `${host.kubeadm.command} init --config /etc/kubernetes/lifeboat/kubeadm-${plan.id}.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd`,
    `${host.kubeadm.command} init phase upload-certs --upload-certs --config /etc/kubernetes/lifeboat/kubeadm-${plan.id}.yaml`,
    `${host.kubeadm.command} token create --print-join-command`,
  ]);
  assert.deepEqual(view.journal.result.cleanup, { kept: ['127.0.0.1'], removed: ['10.0.0.1', '10.0.0.2'], staleNodes: ['cp-old'], nodesDeleted: [], dryRun: true });
  assert.match((view.journal.result.kubeadmConfig as { text: string }).text, /name: cp-new/);
  assert.equal(await treeDigest(host.root), before);
  assert.deepEqual(await readdir(host.root), []);
  assert.deepEqual(recordedCalls(host.kubeadm.argvLog), [], 'kubeadm was not run');
  await assert.rejects(stat(plan.dryRunRoot!), { code: 'ENOENT' });
});

test('fresh-control-plane into an empty root: PKI byte-identical, etcd restored and serving, kubeadm called as expected, stale leases removed', async () => {
  const host = await freshHost('fresh');
  const kubelet = await StandInKubelet.start({ root: host.root, etcd: source.bins.etcd, logDir: path.join(work, 'fresh', 'logs') });
  kubelets.push(kubelet);
  const plan = await host.engine.plan({ backup: backup.backupId, mode: 'fresh-control-plane', members: host.members });
  assert.deepEqual(plan.members, [host.members[0]]);
  assert.deepEqual(plan.kubeadm?.joinLater, ['cp-2']);
  const phases: StepName[] = [];
  const view = await host.engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity], report: (p) => phases.push(p) });
  assert.equal(view.state, 'done', JSON.stringify(view.journal.steps));
  assert.deepEqual(phases, plan.steps);

  // The PKI and the encryption config, byte for byte and mode for mode, as in the backup's kit.
  const placed = backup.kit.files.filter((f) => f.role === 'pki' || f.role === 'encryption-provider-config');
  assert.ok(placed.length >= 9);
  for (const f of placed) {
    const [got, want] = await Promise.all([readFile(path.join(host.root, f.path)), readFile(path.join(srcRoot, f.path))]);
    assert.ok(got.equals(want), f.path);
    assert.equal((await stat(path.join(host.root, f.path))).mode & 0o7777, f.mode, `${f.path} mode`);
  }

  // kubeadm: init with the written config and the one preflight error ignored, then the join material.
  const configPath = `/etc/kubernetes/lifeboat/kubeadm-${plan.id}.yaml`;
  assert.deepEqual(recordedCalls(host.kubeadm.argvLog), [
    ['init', '--config', configPath, '--ignore-preflight-errors=DirAvailable--var-lib-etcd'],
    ['init', 'phase', 'upload-certs', '--upload-certs', '--config', configPath],
    ['token', 'create', '--print-join-command'],
  ]);
  const docs = parseAllDocuments(await readFile(path.join(host.root, configPath), 'utf8')) as unknown as { toJS(): Record<string, unknown> }[];
  const [init, clusterConfig] = docs.map((d) => d.toJS()) as [{ nodeRegistration: { name: string }; localAPIEndpoint: { advertiseAddress: string } }, { clusterName: string; etcd: { local: { dataDir: string } } }];
  assert.equal(init.nodeRegistration.name, 'cp-new');
  assert.equal(init.localAPIEndpoint.advertiseAddress, '127.0.0.1');
  assert.equal(clusterConfig.clusterName, 'prod');
  assert.equal(clusterConfig.etcd.local.dataDir, '/var/lib/etcd');

  // etcd, started by the kubelet from kubeadm's manifest on the restored data dir, serves the snapshot.
  assert.equal(kubelet.pods().find((p) => p.component === 'etcd')?.state, 'running');
  const client = new Etcd3({
    hosts: `https://127.0.0.1:${host.ports.etcdClient}`,
    credentials: { rootCertificate: await readFile(path.join(host.pki, 'etcd/ca.crt')), certChain: await readFile(path.join(host.pki, 'etcd/healthcheck-client.crt')), privateKey: await readFile(path.join(host.pki, 'etcd/healthcheck-client.key')) },
    grpcOptions: { 'grpc.ssl_target_name_override': 'localhost', 'grpc.max_receive_message_length': 64 << 20 },
  });
  try {
    const res = await client.getAll().exec();
    const keys = new Map(res.kvs.map((kv) => [kv.key.toString(), kv.value]));
    assert.ok(BigInt(res.header.revision) >= BigInt(backup.etcd.revision) + BigInt(plan.bumpRevision));
    const expected = new Map(snapshotKeys);
    for (const gone of ['/registry/masterleases/10.0.0.1', '/registry/masterleases/10.0.0.2', '/registry/minions/cp-old', '/registry/leases/kube-node-lease/cp-old']) {
      assert.ok(expected.delete(gone), gone);
      assert.equal(keys.has(gone), false, `${gone} was removed`);
    }
    assert.equal(keys.size, expected.size);
    for (const [k, v] of expected) assert.deepEqual(keys.get(k), v, k);
  } finally {
    client.close();
  }
  assert.deepEqual(view.journal.result.cleanup, { kept: ['127.0.0.1'], removed: ['10.0.0.1', '10.0.0.2'], staleNodes: ['cp-old'], nodesDeleted: ['cp-old'], dryRun: false });

  // The join command for the other control-plane hosts carries the restored cluster CA's hash.
  const join = view.journal.result.join as JoinInstructions;
  const ca = new X509Certificate(await readFile(path.join(srcRoot, 'etc/kubernetes/pki/ca.crt')));
  const caHash = createHash('sha256').update(ca.publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
  assert.match(join.command, new RegExp(`^kubeadm join cp\\.example\\.internal:6443 --token [0-9a-f]{6}\\.[0-9a-f]{16} --discovery-token-ca-cert-hash sha256:${caHash} --control-plane --certificate-key [0-9a-f]{64}$`));
  assert.deepEqual(join.hosts, ['cp-2']);
  assert.ok(join.before.length >= 3);
  await assert.rejects(stat(path.join(plan.staging, 'archive')), { code: 'ENOENT' });
});
