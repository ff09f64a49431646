import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { BadRequestError, ConfigError, NotFoundError } from '../../src/errors/errors.ts';
import { computeBump, createPlan, dataDirLayout, FRESH_STEPS, IN_PLACE_STEPS, kubeadmInitArgs, type PlanContext } from '../../src/restore/plan.ts';
import { apiserverStaticPod, etcdStaticPod } from '../../scripts/rig/pki.ts';
import { sampleManifest } from '../support/fixtures.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-restore-plan-'));
test.after(() => rm(work, { recursive: true, force: true }));

const MEMBERS = [
  { id: '11', name: 'cp-1', peerURLs: ['https://10.0.0.1:2380'], clientURLs: ['https://10.0.0.1:2379'], isLearner: false },
  { id: '12', name: 'cp-2', peerURLs: ['https://10.0.0.2:2380'], clientURLs: ['https://10.0.0.2:2379'], isLearner: false },
  { id: '13', name: 'cp-3', peerURLs: ['https://10.0.0.3:2380'], clientURLs: ['https://10.0.0.3:2379'], isLearner: false },
];

function stored(createdAt: string, revision: number, extra: Partial<StoredManifest['etcd']> = {}): StoredManifest {
  const id = `${createdAt.replaceAll('-', '').replaceAll(':', '')}-r${revision}`;
  const base = sampleManifest(2_000_000_000, [], id);
  const kit = [
    ...['pki/ca.crt', 'pki/ca.key', 'pki/etcd/ca.crt', 'pki/etcd/ca.key', 'pki/sa.key'].map((p) => ({ entry: `kit/etc/kubernetes/${p}`, path: `/etc/kubernetes/${p}`, role: 'pki' as const, size: 5, mode: 0o600, sha256: 'a'.repeat(64) })),
    { entry: 'kit/etc/kubernetes/kubeadm-config.yaml', path: '/etc/kubernetes/kubeadm-config.yaml', role: 'cluster-configuration' as const, size: 5, mode: 0o644, sha256: 'b'.repeat(64) },
  ];
  return {
    ...base,
    createdAt,
    etcd: { ...base.etcd, revision: String(revision), members: MEMBERS, ...extra },
    kit: { hostRoot: '/', files: kit, missing: [] },
    snapshot: { ...base.snapshot, sha256: 'c'.repeat(64), dbSha256: 'd'.repeat(64) },
    archive: { key: `it/backups/${id}/archive.tar.zst.age`, size: 700_000_000, sha256: 'e'.repeat(64), compression: { algorithm: 'zstd', level: 1 }, encryption: { format: 'age', recipients: [] } },
    completedAt: createdAt,
  };
}

/** Newest first, as Catalog.list() returns them. */
const backups = [stored('2026-11-24T03:00:00.000Z', 1_300_000), stored('2026-11-24T02:00:00.000Z', 1_200_000), stored('2026-11-24T01:00:00.000Z', 1_000_000)];
const catalog: PlanContext['catalog'] = {
  list: async () => backups,
  get: async (id) => {
    const found = backups.find((b) => b.backupId === id);
    if (!found) throw new NotFoundError(`no backup ${id}`);
    return found;
  },
  resolve: async (ref) => (ref === 'latest' ? backups[0]! : catalog.get(ref)),
};

async function hostRoot(name: string, opts: { manifests?: boolean } = {}): Promise<string> {
  const root = path.join(work, name);
  await mkdir(path.join(root, 'etc/kubernetes/manifests'), { recursive: true });
  await mkdir(path.join(root, 'var/lib/etcd/member'), { recursive: true });
  if (opts.manifests !== false) {
    await writeFile(path.join(root, 'etc/kubernetes/manifests/etcd.yaml'), etcdStaticPod({ name: 'cp-2', address: '10.0.0.2', initialCluster: 'cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380,cp-3=https://10.0.0.3:2380', initialClusterToken: 'old-token' }));
    await writeFile(path.join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), apiserverStaticPod({ address: '10.0.0.2' }));
  }
  return root;
}

function context(root: string, extra: Record<string, unknown> = {}, live?: string): PlanContext {
  const config = resolveConfig({ cluster: 'it', node: 'cp-2', kit: { hostRoot: root }, daemon: { stateDir: path.join(root, 'state') }, tools: { etcdutl: '/opt/etcdutl' }, ...extra });
  return {
    catalog,
    config,
    now: () => new Date('2026-11-24T04:00:00.000Z'),
    stagingDir: (id) => path.join(root, 'state', 'restores', id),
    liveRevision: async () => live,
    isMountPoint: async () => false,
  };
}

test('an in-place plan: every member, a new token, the exact etcdutl argv, the bump, the manifests, the set-aside', async () => {
  const root = await hostRoot('inplace');
  const plan = await createPlan({ backup: 'latest', mode: 'in-place' }, context(root));
  assert.match(plan.id, /^restore-20261124T040000\.000Z-[0-9a-f]{6}$/);
  assert.equal(plan.backupId, backups[0]!.backupId);
  assert.equal(plan.node, 'cp-2');
  assert.deepEqual(plan.members, MEMBERS.map((m) => ({ name: m.name, peerURL: m.peerURLs[0] })));
  assert.match(plan.clusterToken, /^lifeboat-20261124t030000000z-r1300000-[0-9a-f]{8}$/);
  assert.notEqual(plan.clusterToken, 'old-token');
  assert.match(plan.confirmationToken, /^[0-9a-f]{32}$/);
  assert.deepEqual(plan.steps, [...IN_PLACE_STEPS]);
  assert.equal(plan.self.dataDir, '/var/lib/etcd');
  assert.equal(plan.self.clientURL, 'https://127.0.0.1:2379');
  assert.equal(plan.leaseCleanupBy, 'cp-1');
  assert.deepEqual(plan.keepLeaseAddresses, ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
  const restoreDir = path.join(root, `var/lib/etcd.lifeboat-restore-${plan.id}`);
  assert.deepEqual(plan.self.etcdutl, {
    command: '/opt/etcdutl',
    args: [
      'snapshot', 'restore', path.join(root, 'state/restores', plan.id, 'archive/etcd/snapshot.db'),
      '--name', 'cp-2',
      '--initial-cluster', 'cp-1=https://10.0.0.1:2380,cp-2=https://10.0.0.2:2380,cp-3=https://10.0.0.3:2380',
      '--initial-cluster-token', plan.clusterToken,
      '--initial-advertise-peer-urls', 'https://10.0.0.2:2380',
      '--bump-revision', String(plan.bumpRevision),
      '--mark-compacted',
      '--data-dir', restoreDir,
    ],
  });
  assert.equal(BigInt(plan.targetRevision), 1_300_000n + BigInt(plan.bumpRevision));
  assert.deepEqual(plan.setAside, [{ from: '/var/lib/etcd', to: `/var/lib/etcd.lifeboat-aside-${plan.id}`, what: 'the old etcd data' }]);
  assert.deepEqual(plan.manifests.map((m) => [path.basename(m.path), m.action]), [
    ['kube-apiserver.yaml', 'move-out'],
    ['etcd.yaml', 'move-out'],
    ['etcd.yaml', 'edit'],
    ['etcd.yaml', 'put-back'],
    ['kube-apiserver.yaml', 'put-back'],
  ]);
  assert.match(plan.manifests[2]!.detail, new RegExp(`--initial-cluster-token=${plan.clusterToken}`));
  // 2 GB at 2.7 s/GB is 5.4 s, on top of the assumed kubelet and apiserver times.
  assert.ok(plan.downtime.some((d) => d.basis === 'measured' && d.seconds === 5.4));
  assert.equal(plan.expectedDowntimeSeconds, Math.round(plan.downtime.reduce((n, d) => n + d.seconds, 0)));
  assert.ok(plan.worstCaseDowntimeSeconds > plan.expectedDowntimeSeconds);
  assert.deepEqual(plan.files, []);
});

test('pinned token and bump are kept; members and node can be given', async () => {
  const root = await hostRoot('pinned');
  const members = [{ name: 'cp-2', peerURL: 'https://10.0.0.2:2380' }, { name: 'cp-9', peerURL: 'https://10.0.0.9:2380' }];
  const plan = await createPlan({ backup: backups[1]!.backupId, mode: 'in-place', members, clusterToken: 'shared-token-1', bumpRevision: 5_000_000, leaseCleanupBy: 'cp-9' }, context(root));
  assert.equal(plan.clusterToken, 'shared-token-1');
  assert.equal(plan.bumpRevision, 5_000_000);
  assert.equal(plan.bump.pinned, true);
  assert.equal(plan.targetRevision, String(1_200_000 + 5_000_000));
  assert.deepEqual(plan.members, members);
  assert.equal(plan.leaseCleanupBy, 'cp-9');
});

test('validation errors name the field', async () => {
  const root = await hostRoot('invalid');
  const ctx = context(root);
  const cases: [unknown, string][] = [
    [{ mode: 'in-place' }, '/backup'],
    [{ backup: 'latest', mode: 'sideways' }, '/mode'],
    [{ backup: 'latest', mode: 'in-place', members: [{ name: 'cp-1', peerURL: 'https://10.0.0.1:2380' }, { name: 'cp-2', peerURL: 'ftp://x' }] }, '/members/1/peerURL'],
    [{ backup: 'latest', mode: 'in-place', members: [{ name: 'cp-1', peerURL: 'https://10.0.0.1:2380' }, { name: 'cp-2', peerURL: 'https://10.0.0.1:2380' }] }, '/members/1/peerURL'],
    [{ backup: 'latest', mode: 'in-place', members: [{ name: 'cp-2', peerURL: 'https://10.0.0.2:2380' }, { name: 'cp-2', peerURL: 'https://10.0.0.3:2380' }] }, '/members/1/name'],
    [{ backup: 'latest', mode: 'in-place', members: [{ name: 'a=b', peerURL: 'https://10.0.0.2:2380' }] }, '/members/0/name'],
    [{ backup: 'latest', mode: 'in-place', members: [{ name: 'cp-2', peerURL: 'https://10.0.0.2:2380/path' }] }, '/members/0/peerURL'],
    [{ backup: 'latest', mode: 'in-place', extra: 1 }, '/extra'],
    [{ backup: 'nonsense', mode: 'in-place' }, '/backup'],
    [{ backup: { before: 'yesterday' }, mode: 'in-place' }, '/backup/before'],
    [{ backup: 'latest', mode: 'in-place', bumpRevision: 10 }, '/bumpRevision'],
    [{ backup: 'latest', mode: 'in-place', clusterToken: 'old-token' }, '/clusterToken'],
    [{ backup: 'latest', mode: 'in-place', node: 'cp-7' }, '/node'],
    [{ backup: 'latest', mode: 'in-place', leaseCleanupBy: 'cp-7' }, '/leaseCleanupBy'],
  ];
  for (const [body, field] of cases) {
    await assert.rejects(createPlan(body, ctx), (err: unknown) => err instanceof BadRequestError && err.field === field, `${JSON.stringify(body)} → ${field}`);
  }
  await assert.rejects(createPlan({ backup: '20991124T033000.000Z-r1', mode: 'in-place' }, ctx), NotFoundError);
  await assert.rejects(createPlan({ backup: { before: '2020-01-01T00:00:00Z' }, mode: 'in-place' }, ctx), NotFoundError);
});

test('{before} picks the newest backup at or before the time', async () => {
  const root = await hostRoot('before');
  const ctx = context(root);
  assert.equal((await createPlan({ backup: { before: '2026-11-24T02:30:00Z' }, mode: 'in-place' }, ctx)).backupId, backups[1]!.backupId);
  assert.equal((await createPlan({ backup: { before: '2026-11-24T02:00:00.000Z' }, mode: 'in-place' }, ctx)).backupId, backups[1]!.backupId);
  assert.equal((await createPlan({ backup: { before: '2026-11-24T02:30:00+01:00' }, mode: 'in-place' }, ctx)).backupId, backups[2]!.backupId);
});

test('in place needs the etcd manifest; a data dir on no hostPath is refused', async () => {
  const bare = await hostRoot('bare', { manifests: false });
  await assert.rejects(createPlan({ backup: 'latest', mode: 'in-place' }, context(bare)), (e: unknown) => e instanceof ConfigError && e.field === '/restore/manifestsDir');
  const odd = await hostRoot('odd');
  await writeFile(path.join(odd, 'etc/kubernetes/manifests/etcd.yaml'), etcdStaticPod({ name: 'cp-2', address: '10.0.0.2', dataDir: '/var/lib/etcd' }).replace('--data-dir=/var/lib/etcd', '--data-dir=/data/etcd'));
  await assert.rejects(createPlan({ backup: 'latest', mode: 'in-place' }, context(odd)), (e: unknown) => e instanceof ConfigError && e.field === '/restore/etcdDataDir');
});

test('a data dir that is a mount point swaps its member/ dir', async () => {
  const root = await hostRoot('mounted');
  const plan = await createPlan({ backup: 'latest', mode: 'in-place' }, { ...context(root), isMountPoint: async () => true });
  assert.equal(plan.self.swap, 'member');
  assert.equal(plan.self.restoreDir, `/var/lib/etcd/lifeboat-restore-${plan.id}`);
  assert.deepEqual(plan.setAside[0], { from: '/var/lib/etcd/member', to: `/var/lib/etcd/member.lifeboat-aside-${plan.id}`, what: 'the old etcd data' });
  assert.ok(plan.warnings.some((w) => /mount point/.test(w)));
  assert.deepEqual(dataDirLayout('/var/lib/etcd', 'x', 'member').incoming, '/var/lib/etcd/lifeboat-restore-x/member');
});

test('a fresh-control-plane plan: this host alone, the kit files to place, kubeadm argv', async () => {
  const root = path.join(work, 'fresh');
  await mkdir(path.join(root, 'etc/kubernetes/pki'), { recursive: true });
  await writeFile(path.join(root, 'etc/kubernetes/pki/ca.crt'), 'not the kit');
  const plan = await createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-new' }, context(root, { restore: { advertiseAddress: '10.1.0.5' } }));
  assert.deepEqual(plan.members, [{ name: 'cp-new', peerURL: 'https://10.1.0.5:2380' }]);
  assert.deepEqual(plan.steps, [...FRESH_STEPS]);
  assert.equal(plan.self.etcdutl.args[plan.self.etcdutl.args.indexOf('--initial-cluster') + 1], 'cp-new=https://10.1.0.5:2380');
  assert.deepEqual(plan.kubeadm?.initArgs, ['init', '--config', `/etc/kubernetes/lifeboat/kubeadm-${plan.id}.yaml`, '--ignore-preflight-errors=DirAvailable--var-lib-etcd']);
  assert.deepEqual(plan.kubeadm?.joinLater, ['cp-1', 'cp-2', 'cp-3']);
  assert.equal(plan.files.length, 6);
  assert.equal(plan.files.find((f) => f.path === '/etc/kubernetes/pki/ca.crt')?.existing, 'differs');
  assert.deepEqual(plan.setAside, [{ from: '/etc/kubernetes/pki/ca.crt', to: `/etc/kubernetes/pki/ca.crt.lifeboat-aside-${plan.id}`, what: 'a different pki file already on this host' }]);
  assert.deepEqual(plan.keepLeaseAddresses, ['10.1.0.5']);

  await assert.rejects(createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-new' }, context(root)), (e: unknown) => e instanceof BadRequestError && e.field === '/members');
  const named = await createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-3' }, context(root));
  assert.deepEqual(named.members, [{ name: 'cp-3', peerURL: 'https://10.0.0.3:2380' }]);
  assert.equal(named.kubeadm?.advertiseAddress, '10.0.0.3');
  assert.deepEqual(kubeadmInitArgs('/f.yaml', '/data/etcd'), ['init', '--config', '/f.yaml', '--ignore-preflight-errors=DirAvailable--data-etcd']);

  // A backup without the ClusterConfiguration cannot make a fresh control plane.
  const bare = stored('2026-11-24T03:30:00.000Z', 1_350_000);
  bare.kit.files = bare.kit.files.filter((f) => f.role !== 'cluster-configuration');
  const ctx = { ...context(root, { restore: { advertiseAddress: '10.1.0.5' } }), catalog: { list: async () => [bare, ...backups], get: async () => bare, resolve: async () => bare } };
  await assert.rejects(createPlan({ backup: bare.backupId, mode: 'fresh-control-plane' }, ctx), (e: unknown) => e instanceof BadRequestError && e.field === '/mode' && /ClusterConfiguration/.test(e.message));
});

test('a fresh-control-plane plan: restore.kubeadm settings, a mounted data dir, a ClusterConfiguration from the ConfigMap', async () => {
  const root = path.join(work, 'fresh-settings');
  await mkdir(path.join(root, 'var/lib/etcd'), { recursive: true });
  const fromConfigMap = stored('2026-11-24T03:30:00.000Z', 1_350_000);
  fromConfigMap.kit.files = fromConfigMap.kit.files.map((f) => (f.role === 'cluster-configuration' ? { ...f, source: { from: 'configmap' as const, namespace: 'kube-system', name: 'kubeadm-config', dataKey: 'ClusterConfiguration', etcdKey: '/registry/configmaps/kube-system/kubeadm-config', revision: '1350000', encoding: 'protobuf' as const } } : f));
  const settings = { restore: { advertiseAddress: '10.1.0.5', kubeadm: { criSocket: 'unix:///run/crio/crio.sock', ignorePreflightErrors: ['SystemVerification', 'DirAvailable--var-lib-etcd', 'Swap'] } } };
  const ctx = { ...context(root, settings), catalog: { list: async () => [fromConfigMap, ...backups], get: async () => fromConfigMap, resolve: async () => fromConfigMap }, isMountPoint: async () => true };
  const plan = await createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-new' }, ctx);
  // The configured checks join the data dir's, once each; the CRI socket goes to the InitConfiguration.
  assert.deepEqual(plan.kubeadm?.initArgs, ['init', '--config', `/etc/kubernetes/lifeboat/kubeadm-${plan.id}.yaml`, '--ignore-preflight-errors=DirAvailable--var-lib-etcd,SystemVerification,Swap']);
  assert.equal(plan.kubeadm?.criSocket, 'unix:///run/crio/crio.sock');
  // /var/lib/etcd is a mount point (a dedicated disk): restored inside it, its member/ swapped in.
  assert.equal(plan.self.swap, 'member');
  assert.equal(plan.self.restoreDir, `/var/lib/etcd/lifeboat-restore-${plan.id}`);
  assert.ok(plan.warnings.some((w) => /\/var\/lib\/etcd is a mount point/.test(w)));
  assert.deepEqual(plan.setAside, [], 'the mounted data dir holds no member/ to set aside');
  // A ClusterConfiguration read from the ConfigMap goes to kubeadm only: no file is placed for it.
  assert.deepEqual(plan.files.map((f) => f.role), ['pki', 'pki', 'pki', 'pki', 'pki']);

  await mkdir(path.join(root, 'var/lib/etcd/member'));
  const again = await createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-new' }, ctx);
  assert.deepEqual(again.setAside, [{ from: '/var/lib/etcd/member', to: `/var/lib/etcd/member.lifeboat-aside-${again.id}`, what: 'an etcd data dir already on this host' }]);
  const plain = await createPlan({ backup: 'latest', mode: 'fresh-control-plane', node: 'cp-new' }, context(root, { restore: { advertiseAddress: '10.1.0.5' } }));
  assert.equal(plain.kubeadm?.criSocket, undefined);
  assert.equal(plain.self.swap, 'dir');
});

test('bump: the configured minimum without history; twice the estimated revisions since the backup with it', () => {
  const now = new Date('2026-11-24T04:00:00Z');
  const min = 1_000_000;
  assert.deepEqual(computeBump({ minimum: min, backup: { revision: '500', createdAt: '2026-11-24T03:00:00Z' }, recent: [{ revision: '500', createdAt: '2026-11-24T03:00:00Z' }], now }), { bumpRevision: min, estimatedRevisionsSinceBackup: 0, revisionsPerSecond: undefined });
  // 1,000 revisions per second over the last two hours; the newest backup is an hour old.
  const recent = [
    { revision: '10000000', createdAt: '2026-11-24T03:00:00Z' },
    { revision: '6400000', createdAt: '2026-11-24T02:00:00Z' },
    { revision: '2800000', createdAt: '2026-11-24T01:00:00Z' },
  ];
  const fromNewest = computeBump({ minimum: min, backup: recent[0]!, recent, now });
  assert.equal(fromNewest.revisionsPerSecond, 1000);
  assert.equal(fromNewest.estimatedRevisionsSinceBackup, 3_600_000);
  assert.equal(fromNewest.bumpRevision, 7_200_000);
  // An older backup: the revisions between it and the newest count too.
  const fromOld = computeBump({ minimum: min, backup: recent[2]!, recent, now });
  assert.equal(fromOld.estimatedRevisionsSinceBackup, 10_000_000 + 3_600_000 - 2_800_000);
  assert.equal(fromOld.bumpRevision, 2 * 10_800_000);
  // A live revision above the estimate wins (a restore made since the last backup jumped it).
  const live = computeBump({ minimum: min, backup: recent[0]!, recent, now, liveRevision: '50000000' });
  assert.equal(live.estimatedRevisionsSinceBackup, 40_000_000);
  assert.equal(live.bumpRevision, 80_000_000);
  // Never below the minimum.
  assert.equal(computeBump({ minimum: min, backup: recent[0]!, recent, now: new Date('2026-11-24T03:00:00Z') }).bumpRevision, min);
});

test('the plan\'s bump uses the live revision of an in-place cluster', async () => {
  const root = await hostRoot('live');
  const plan = await createPlan({ backup: backups[0]!.backupId, mode: 'in-place' }, context(root, {}, '9300000'));
  assert.equal(plan.bump.liveRevision, '9300000');
  assert.equal(plan.bump.estimatedRevisionsSinceBackup, 8_000_000);
  assert.equal(plan.bumpRevision, 16_000_000);
});
