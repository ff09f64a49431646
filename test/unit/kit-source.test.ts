import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { missingKitRoles, type EtcdFacts } from '../../src/archive/manifest.ts';
import { runBackup } from '../../src/backup/run.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { EtcdUnavailableError } from '../../src/errors/errors.ts';
import type { OpenSnapshot, SnapshotSource } from '../../src/etcd/source.ts';
import { clusterConfigurationFromEtcd, KUBEADM_CONFIGMAP_ETCD_KEY } from '../../src/kit/cluster-config.ts';
import { collectKit, PKI_FILES } from '../../src/kit/collect.ts';
import { createLogger } from '../../src/log/logger.ts';
import { extractBackup } from '../../src/restore/extract.ts';
import { chunked, fakeSnapshot, sampleManifest, sha256 } from '../support/fixtures.ts';
import { CLUSTER_CONFIGURATION, storedConfigMap } from '../support/kube-proto.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNER } from '../support/signing.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-kit-source-'));
test.after(() => rm(work, { recursive: true, force: true }));

/** A host root with the kit's required files (placeholder contents) and static pod manifests. */
async function hostTree(name: string, options: { kubeadmConfigFile?: string } = {}): Promise<string> {
  const root = path.join(work, name);
  const k8s = path.join(root, 'etc/kubernetes');
  for (const f of PKI_FILES) {
    await mkdir(path.dirname(path.join(k8s, f)), { recursive: true });
    await writeFile(path.join(k8s, f), `${f}\n`, { mode: 0o600 });
  }
  await mkdir(path.join(k8s, 'manifests'), { recursive: true });
  await writeFile(path.join(k8s, 'manifests/etcd.yaml'), 'kind: Pod\n');
  await writeFile(path.join(k8s, 'manifests/kube-apiserver.yaml'), 'kind: Pod\n');
  if (options.kubeadmConfigFile !== undefined) await writeFile(path.join(k8s, 'kubeadm-config.yaml'), options.kubeadmConfigFile, { mode: 0o644 });
  return root;
}

const kitOf = (hostRoot: string, extra: Record<string, unknown> = {}) => resolveConfig({ cluster: 'unit', kit: { hostRoot, ...extra } }).kit;

/** collectKit with the ConfigMap read from a fake etcd holding `values` (key → value) at revision 42. */
async function collect(hostRoot: string, values: Map<string, Buffer> | ((key: string) => Promise<Buffer | undefined>), maxBytes = 4 << 20) {
  const reads: string[] = [];
  const read = async (key: string) => {
    reads.push(key);
    return typeof values === 'function' ? values(key) : values.get(key);
  };
  const kit = await collectKit(kitOf(hostRoot), { clusterConfiguration: () => clusterConfigurationFromEtcd(read, '42', maxBytes) });
  const cc = kit.files.find((f) => f.role === 'cluster-configuration');
  const missing = kit.missing.find((m) => m.role === 'cluster-configuration');
  return { kit, cc, missing, reads };
}

const inEtcd = (value: Buffer) => new Map([[KUBEADM_CONFIGMAP_ETCD_KEY, value]]);

test('a file at kit.clusterConfiguration wins over the ConfigMap, which is then not read; the manifest says "file"', async () => {
  const root = await hostTree('file-wins', { kubeadmConfigFile: 'kind: ClusterConfiguration\nclusterName: from-file\n' });
  const { kit, cc, missing, reads } = await collect(root, inEtcd(storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } })));
  assert.deepEqual(reads, []);
  assert.equal(missing, undefined);
  assert.deepEqual(cc, { entry: 'kit/etc/kubernetes/kubeadm-config.yaml', path: '/etc/kubernetes/kubeadm-config.yaml', role: 'cluster-configuration', size: Buffer.byteLength('kind: ClusterConfiguration\nclusterName: from-file\n'), mode: 0o644, sha256: sha256('kind: ClusterConfiguration\nclusterName: from-file\n'), source: { from: 'file' } });
  assert.equal(kit.contents.find((c) => c.entry === cc!.entry)!.content.toString(), 'kind: ClusterConfiguration\nclusterName: from-file\n');
  assert.ok(kit.files.filter((f) => f.role !== 'cluster-configuration').every((f) => !('source' in f)), 'only the cluster-configuration records its source');
});

test('without the file, the ClusterConfiguration comes from the protobuf ConfigMap in etcd, under the configured path', async () => {
  const root = await hostTree('from-configmap');
  const { kit, cc, missing, reads } = await collect(root, inEtcd(storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION, ClusterStatus: 'x' } })));
  assert.deepEqual(reads, ['/registry/configmaps/kube-system/kubeadm-config']);
  assert.equal(missing, undefined);
  assert.deepEqual(kit.missing, []);
  assert.deepEqual(cc, {
    entry: 'kit/etc/kubernetes/kubeadm-config.yaml',
    path: '/etc/kubernetes/kubeadm-config.yaml',
    role: 'cluster-configuration',
    size: Buffer.byteLength(CLUSTER_CONFIGURATION),
    mode: 0o600,
    sha256: sha256(CLUSTER_CONFIGURATION),
    source: { from: 'configmap', namespace: 'kube-system', name: 'kubeadm-config', dataKey: 'ClusterConfiguration', etcdKey: '/registry/configmaps/kube-system/kubeadm-config', revision: '42', encoding: 'protobuf' },
  });
  assert.equal(kit.contents.find((c) => c.entry === cc!.entry)!.content.toString(), CLUSTER_CONFIGURATION);
  assert.equal(kit.contents.find((c) => c.entry === cc!.entry)!.mode, 0o600);
});

test('a JSON-stored ConfigMap works too, and says so', async () => {
  const root = await hostTree('json');
  const json = Buffer.from(JSON.stringify({ kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'kubeadm-config', namespace: 'kube-system' }, data: { ClusterConfiguration: CLUSTER_CONFIGURATION } }));
  const { cc } = await collect(root, inEtcd(json));
  assert.equal(cc?.source?.from === 'configmap' && cc.source.encoding, 'json');
  assert.equal(cc?.sha256, sha256(CLUSTER_CONFIGURATION));
});

test('when neither has it, `missing` says precisely why, for the file and for the ConfigMap', async () => {
  const root = await hostTree('neither');
  const cases: [string, Map<string, Buffer> | ((key: string) => Promise<Buffer | undefined>), RegExp, number?][] = [
    ['absent', new Map(), /^no such file at \/etc\/kubernetes\/kubeadm-config\.yaml, and no ConfigMap kube-system\/kubeadm-config in etcd at revision 42 \(\/registry\/configmaps\/kube-system\/kubeadm-config\)$/],
    ['encrypted', inEtcd(Buffer.from('k8s:enc:aescbc:v1:key1:\x01\x02\x03')), /and ConfigMap kube-system\/kubeadm-config cannot be read from etcd: the value is encrypted at rest by the kube-apiserver \(k8s:enc:aescbc:v1:key1\); only the apiserver's key decrypts it$/],
    ['truncated', inEtcd(storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } }).subarray(0, 100)), /ConfigMap kube-system\/kubeadm-config at revision 42 is malformed: truncated: .* at byte \d+ in runtime\.Unknown/],
    ['another kind', inEtcd(storedConfigMap({ kind: 'Secret' })), /is malformed: the value holds a "Secret", not a ConfigMap/],
    ['no key', inEtcd(storedConfigMap({ data: { ClusterStatus: 'x', other: 'y' } })), /has no data key ClusterConfiguration \(it has "ClusterStatus", "other"\)/],
    ['not a ClusterConfiguration', inEtcd(storedConfigMap({ data: { ClusterConfiguration: 'kind: InitConfiguration\n' } })), /ClusterConfiguration is malformed: it has no document of kind ClusterConfiguration \(kinds: InitConfiguration\)/],
    ['not YAML', inEtcd(storedConfigMap({ data: { ClusterConfiguration: 'a: [b\n' } })), /ClusterConfiguration is malformed: it is not valid YAML/],
    ['another name', inEtcd(storedConfigMap({ name: 'other', data: { ClusterConfiguration: CLUSTER_CONFIGURATION } })), /holds ConfigMap "other", not kubeadm-config/],
    ['etcd down', async () => { throw new EtcdUnavailableError('cannot read it: 14 UNAVAILABLE'); }, /could not be read from etcd at revision 42: cannot read it: 14 UNAVAILABLE/],
    ['too big', inEtcd(storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } })), /holds a ClusterConfiguration of \d+ bytes, over kit\.maxFileBytes \(100\)/, 100],
  ];
  for (const [name, values, reason, maxBytes] of cases) {
    const { kit, cc, missing } = await collect(root, values, maxBytes);
    assert.equal(cc, undefined, name);
    assert.equal(missing?.path, '/etc/kubernetes/kubeadm-config.yaml', name);
    assert.match(missing!.reason, reason, name);
    assert.deepEqual(missingKitRoles({ kit: { hostRoot: root, files: kit.files, missing: kit.missing } }), ['cluster-configuration'], name);
  }
  // A source that cannot read keys, and collectKit without a ConfigMap reader at all.
  const unreadable = await clusterConfigurationFromEtcd(undefined, '42', 1 << 20);
  assert.deepEqual(unreadable, { found: false, reason: 'ConfigMap kube-system/kubeadm-config was not read: this etcd source cannot read keys' });
  const bare = await collectKit(kitOf(root));
  assert.deepEqual(bare.missing, [{ path: '/etc/kubernetes/kubeadm-config.yaml', role: 'cluster-configuration', reason: 'no such file' }]);
});

test('missingKitRoles: each missing role once, in the kit order', () => {
  const base = sampleManifest(1, []);
  assert.deepEqual(missingKitRoles(base), []);
  const kit = { ...base.kit, missing: [{ path: '/b', role: 'extra' as const, reason: 'x' }, { path: '/a', role: 'cluster-configuration' as const, reason: 'y' }, { path: '/c', role: 'extra' as const, reason: 'z' }] };
  assert.deepEqual(missingKitRoles({ kit }), ['cluster-configuration', 'extra']);
});

test('runBackup reads the ConfigMap from the snapshot member at the snapshot revision and archives it where restores look', async () => {
  const root = await hostTree('backup');
  const db = randomBytes(50_000);
  const facts: EtcdFacts = { ...sampleManifest(0, []).etcd, endpoint: 'https://10.0.0.2:2379', revision: '777' };
  const reads: { endpoint: string; revision: string; key: string }[] = [];
  const source: SnapshotSource = {
    chooseMember: async () => facts,
    openSnapshot: async (): Promise<OpenSnapshot> => ({ dbSize: db.length, chunks: chunked(fakeSnapshot(db), 32768) }),
    readKey: async (member, key) => {
      reads.push({ endpoint: member.endpoint, revision: member.revision, key });
      return key === KUBEADM_CONFIGMAP_ETCD_KEY ? storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } }) : undefined;
    },
    close: async () => undefined,
  };
  const { identity, recipient } = await generateIdentity();
  const store = new MemoryStore();
  const log = createLogger('silent');
  const manifest = await runBackup(
    { store, etcd: source, encrypt: createEncryptStream, log, now: () => new Date(), signer: TEST_SIGNER, previous: async () => undefined },
    { cluster: 'unit', node: 'n1', kit: kitOf(root), compression: { algorithm: 'zstd', level: 1 }, recipients: [recipient], progressIntervalSeconds: 60, maxClockSkewSeconds: 300 },
  );
  assert.deepEqual(reads, [{ endpoint: 'https://10.0.0.2:2379', revision: '777', key: KUBEADM_CONFIGMAP_ETCD_KEY }]);
  const cc = manifest.kit.files.find((f) => f.role === 'cluster-configuration');
  assert.deepEqual(cc?.source, { from: 'configmap', namespace: 'kube-system', name: 'kubeadm-config', dataKey: 'ClusterConfiguration', etcdKey: KUBEADM_CONFIGMAP_ETCD_KEY, revision: '777', encoding: 'protobuf' });
  assert.deepEqual(manifest.kit.missing, []);
  const out = path.join(work, 'backup-extracted');
  await extractBackup({ store, decrypt: createDecryptStream, log }, manifest, [identity], out);
  assert.equal(await readFile(path.join(out, 'kit/etc/kubernetes/kubeadm-config.yaml'), 'utf8'), CLUSTER_CONFIGURATION);
});
