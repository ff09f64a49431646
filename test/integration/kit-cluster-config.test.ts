import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { createServers, type Servers } from '../../src/api/server.ts';
import { tokenLine } from '../../src/api/tokens.ts';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import type { Config } from '../../src/config/schema.ts';
import { createDecryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { EtcdUnavailableError } from '../../src/errors/errors.ts';
import { Etcd3SnapshotSource } from '../../src/etcd/etcd3-source.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { KUBEADM_CONFIGMAP_ETCD_KEY } from '../../src/kit/cluster-config.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import { extractBackup } from '../../src/restore/extract.ts';
import { kubeadmConfig } from '../../src/restore/kubeadm.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { verifyBackup } from '../../src/verify/verify.ts';
import { kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { freePorts } from '../../scripts/rig/ports.ts';
import { apiRig, type ApiRig } from '../support/api-daemon.ts';
import { makeApiPki } from '../support/api-pki.ts';
import { CLUSTER_CONFIGURATION, storedConfigMap } from '../support/kube-proto.ts';
import { configDoc, configOf, ETCDUTL, quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { TEST_TRUST } from '../support/signing.ts';

/**
 * A kubeadm cluster keeps its ClusterConfiguration only in the ConfigMap kube-system/kubeadm-config
 * (kubeadm init writes no file of it). Against a real etcd holding that ConfigMap in the
 * apiserver's protobuf encoding: the daemon's backups (through the API, as an operator asks for
 * them) carry it from the ConfigMap, and a backup without it shows in the API, the metrics and
 * `lifeboat list`.
 */

const TOKENS = { viewer: 'kit-viewer-token', operator: 'kit-operator-token' };
let work: string;
let hostRoot: string;
let etcd: EtcdCluster;
let config: Config;
let configFile: string;
let rig: ApiRig;
let servers: Servers;
let identityFile: string;
let storeDir: string;
/** The first test's backup, whose ClusterConfiguration came from the ConfigMap. */
let fromConfigMap: StoredManifest | undefined;
const key = await generateIdentity();

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-kit-cc-'));
  ({ etcd, hostRoot } = await startEtcdHost(work, { members: 1 }));
  // As after a real `kubeadm init`: no ClusterConfiguration file on the host.
  await rm(path.join(hostRoot, 'etc/kubernetes/kubeadm-config.yaml'));
  const pki = await makeApiPki(path.join(work, 'pki'));
  const tokensFile = path.join(work, 'tokens');
  await writeFile(tokensFile, `${tokenLine(TOKENS.viewer, 'viewer', 'v')}\n${tokenLine(TOKENS.operator, 'operator', 'o')}\n`);
  identityFile = path.join(work, 'identity.txt');
  await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  storeDir = path.join(work, 'store');
  const doc = configDoc(etcd, hostRoot, storeDir, [key.recipient], {
    daemon: { stateDir: path.join(work, 'state') },
    api: { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    log: { level: 'error' },
  });
  config = configOf(doc);
  configFile = await writeConfig(work, doc);
  const store = new FsStore(storeDir);
  rig = apiRig({ config, log: quietLog, store, catalog: new Catalog(store, config.cluster, { trust: TEST_TRUST }) });
  servers = await createServers(rig.deps);
});

after(async () => {
  await servers?.close();
  await etcd?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function api<T>(method: 'GET' | 'POST', url: string, role: keyof typeof TOKENS = 'viewer'): Promise<{ status: number; body: T }> {
  const res = await servers.api.inject({ method, url, headers: { authorization: `Bearer ${TOKENS[role]}` } });
  return { status: res.statusCode, body: res.json() as T };
}

interface Entry {
  manifest: StoredManifest;
  kitMissing?: string[];
}

/** A backup through the API, as an operator asks for one; resolves with its stored manifest. */
async function backupViaApi(): Promise<StoredManifest> {
  const submitted = await api<{ job: { id: string } }>('POST', '/v1/backups', 'operator');
  assert.equal(submitted.status, 202);
  await rig.runner.settled();
  const { body } = await api<{ job: { state: string; result?: { backupId: string }; error?: { message: string } } }>('GET', `/v1/jobs/${submitted.body.job.id}`);
  assert.equal(body.job.state, 'succeeded', body.job.error?.message);
  return (await api<Entry>('GET', `/v1/backups/${body.job.result!.backupId}`)).body.manifest;
}

async function kitGauge(): Promise<number> {
  const text = await rig.metrics.render();
  const m = /^lifeboat_backup_kit_missing\{role="cluster-configuration",cluster="it"\} (\S+)$/m.exec(text);
  assert.ok(m, 'the gauge is exported');
  return Number(m[1]);
}

async function putConfigMap(value: Buffer): Promise<string> {
  const client = etcd.client();
  try {
    const res = await client.put(KUBEADM_CONFIGMAP_ETCD_KEY).value(value).exec();
    return res.header.revision;
  } finally {
    client.close();
  }
}

test('the ClusterConfiguration comes from the protobuf ConfigMap in etcd at the snapshot revision, and restores from the archive', async () => {
  const putAt = await putConfigMap(storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION, ClusterStatus: '' } }));
  const manifest = await backupViaApi();
  fromConfigMap = manifest;
  assert.ok(BigInt(manifest.etcd.revision) >= BigInt(putAt));
  const cc = manifest.kit.files.find((f) => f.role === 'cluster-configuration');
  assert.deepEqual(cc?.source, {
    from: 'configmap',
    namespace: 'kube-system',
    name: 'kubeadm-config',
    dataKey: 'ClusterConfiguration',
    etcdKey: '/registry/configmaps/kube-system/kubeadm-config',
    revision: manifest.etcd.revision,
    encoding: 'protobuf',
  });
  assert.equal(cc.path, '/etc/kubernetes/kubeadm-config.yaml', 'stored where restores look for it');
  assert.deepEqual(manifest.kit.missing, []);

  const listed = await api<{ backups: Entry[] }>('GET', '/v1/backups');
  assert.deepEqual(listed.body.backups.map((b) => [b.manifest.backupId, b.kitMissing]), [[manifest.backupId, []]]);
  assert.equal(await kitGauge(), 0);

  // Deep verification passes, and the extracted kit holds the ClusterConfiguration byte for byte.
  const deps = { store: new FsStore(storeDir), decrypt: createDecryptStream, exec: processExecutor, log: quietLog };
  const deep = await verifyBackup(deps, manifest, { etcdutl: ETCDUTL, identities: [key.identity] });
  assert.equal(deep.level, 'deep');
  const out = path.join(work, 'extracted');
  await extractBackup(deps, manifest, [key.identity], out);
  const text = await readFile(path.join(out, cc.entry), 'utf8');
  assert.equal(text, CLUSTER_CONFIGURATION);
  // What a fresh-control-plane restore makes of it: kubeadm init's config for this host.
  const init = kubeadmConfig(text, { name: 'cp-1', advertiseAddress: '10.0.0.1', dataDir: '/var/lib/etcd', source: cc.path });
  const docs = parseAllDocuments(init.text) as { toJSON(): Record<string, unknown> }[];
  assert.deepEqual(docs.map((d) => d.toJSON().kind), ['InitConfiguration', 'ClusterConfiguration']);
  assert.equal(docs[1]!.toJSON().clusterName, 'from-configmap');
});

test('a fresh-control-plane restore (dry run) of that backup finds the ClusterConfiguration where it looks and initialises kubeadm with it', async () => {
  assert.ok(fromConfigMap, 'the first test made the backup');
  const root = path.join(work, 'fresh', 'root');
  await mkdir(root, { recursive: true });
  const [etcdPeer] = (await freePorts(1)) as [number];
  const freshConfig = configOf({
    ...configDoc(etcd, root, storeDir, [key.recipient]),
    node: 'cp-new',
    // A dry run never runs kubeadm: it records the command line.
    tools: { etcdutl: ETCDUTL, etcd: etcd.bins.etcd, kubeadm: kubernetesBinaries().kubeadm },
    restore: { advertiseAddress: '127.0.0.1', etcdWaitSeconds: 30, apiserverWaitSeconds: 30 },
    daemon: { stateDir: path.join(work, 'fresh', 'state') },
  });
  const store = new FsStore(storeDir);
  const engine = new RestoreEngine({ store, catalog: new Catalog(store, freshConfig.cluster, { trust: TEST_TRUST }), decrypt: createDecryptStream, exec: processExecutor, log: quietLog, config: freshConfig });
  const plan = await engine.plan({ backup: fromConfigMap.backupId, mode: 'fresh-control-plane', members: [{ name: 'cp-new', peerURL: `https://127.0.0.1:${etcdPeer}` }], dryRun: true });
  // It goes to kubeadm init only: a file there would win over the ConfigMap in later backups.
  assert.equal(plan.files.some((f) => f.role === 'cluster-configuration'), false);
  const view = await engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity] });
  assert.equal(view.state, 'done', JSON.stringify(view.journal.steps));
  const text = (view.journal.result.kubeadmConfig as { text: string }).text;
  const docs = parseAllDocuments(text) as { toJSON(): Record<string, unknown> }[];
  assert.deepEqual(docs.map((d) => d.toJSON().kind), ['InitConfiguration', 'ClusterConfiguration']);
  assert.equal(docs[1]!.toJSON().clusterName, 'from-configmap');
  assert.equal(docs[1]!.toJSON().controlPlaneEndpoint, 'cp.example.internal:6443');
});

test('a ConfigMap encrypted at rest: the backup commits without it, and the API, the metric and `lifeboat list` show it; a file then wins', async () => {
  await putConfigMap(Buffer.concat([Buffer.from('k8s:enc:aescbc:v1:key1:'), randomBytes(64)]));
  const incomplete = await backupViaApi();
  assert.equal(incomplete.kit.files.some((f) => f.role === 'cluster-configuration'), false);
  assert.equal(incomplete.kit.missing.length, 1);
  assert.equal(incomplete.kit.missing[0]!.role, 'cluster-configuration');
  assert.match(incomplete.kit.missing[0]!.reason, /^no such file at \/etc\/kubernetes\/kubeadm-config\.yaml, and ConfigMap kube-system\/kubeadm-config cannot be read from etcd: the value is encrypted at rest by the kube-apiserver \(k8s:enc:aescbc:v1:key1\)/);

  const listed = await api<{ backups: Entry[] }>('GET', '/v1/backups');
  assert.deepEqual(listed.body.backups.map((b) => b.kitMissing), [['cluster-configuration'], []]);
  assert.deepEqual((await api<Entry>('GET', '/v1/backups/latest')).body.kitMissing, ['cluster-configuration']);
  assert.equal(await kitGauge(), 1);

  const list = await runCli(['--config', configFile, 'list']);
  assert.equal(list.code, 0, list.stderr);
  const [header, ...rows] = list.stdout.trimEnd().split('\n');
  const kitColumn = (id: string) => rows.find((r) => r.startsWith(id))!.slice(header!.indexOf('KIT')).split(/ {2,}/)[0];
  assert.equal(kitColumn(incomplete.backupId), 'lacks cluster-configuration');
  assert.equal(rows.filter((r) => r.slice(header!.indexOf('KIT')).startsWith('complete')).length, 1);
  const json = JSON.parse((await runCli(['--config', configFile, 'list', '--json'])).stdout) as { backupId: string; kitMissing: string[] }[];
  assert.deepEqual(json.map((b) => b.kitMissing), [['cluster-configuration'], []]);

  // Some users keep the file: it wins over the (unreadable) ConfigMap, and the manifest says so.
  const file = 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: from-file\n';
  await writeFile(path.join(hostRoot, 'etc/kubernetes/kubeadm-config.yaml'), file, { mode: 0o644 });
  try {
    const complete = await backupViaApi();
    const cc = complete.kit.files.find((f) => f.role === 'cluster-configuration');
    assert.deepEqual(cc?.source, { from: 'file' });
    assert.equal(cc.size, Buffer.byteLength(file));
    assert.deepEqual(complete.kit.missing, []);
    assert.equal(await kitGauge(), 0);
    assert.deepEqual((await api<{ backups: Entry[] }>('GET', '/v1/backups')).body.backups.map((b) => b.kitMissing), [[], ['cluster-configuration'], []]);
  } finally {
    await rm(path.join(hostRoot, 'etc/kubernetes/kubeadm-config.yaml'));
  }
});

test('readKey reads at exactly the given revision on the real member; a compacted revision is an EtcdUnavailableError', async () => {
  const source = new Etcd3SnapshotSource(config.etcd, quietLog);
  try {
    const first = storedConfigMap({ data: { ClusterConfiguration: 'kind: ClusterConfiguration\nclusterName: first\n' } });
    const second = storedConfigMap({ data: { ClusterConfiguration: 'kind: ClusterConfiguration\nclusterName: second\n' } });
    const r1 = await putConfigMap(first);
    const r2 = await putConfigMap(second);
    const member = await source.chooseMember();
    assert.ok(BigInt(member.revision) >= BigInt(r2));
    assert.deepEqual(await source.readKey({ ...member, revision: r1 }, KUBEADM_CONFIGMAP_ETCD_KEY), first);
    assert.deepEqual(await source.readKey({ ...member, revision: r2 }, KUBEADM_CONFIGMAP_ETCD_KEY), second);
    assert.equal(await source.readKey(member, '/registry/configmaps/kube-system/no-such-map'), undefined);
    const client = etcd.client();
    try {
      await client.put('/lifeboat-test/after').value('x');
      await etcd.etcdctl(['compaction', r2]);
    } finally {
      client.close();
    }
    await assert.rejects(source.readKey({ ...member, revision: r1 }, KUBEADM_CONFIGMAP_ETCD_KEY), (err: unknown) => err instanceof EtcdUnavailableError && /compacted/.test(err.message));
  } finally {
    await source.close();
  }
});
