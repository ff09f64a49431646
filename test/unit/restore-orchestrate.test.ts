import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAllDocuments } from 'yaml';
import { BadRequestError, ConfigError, EtcdUnavailableError, ToolError } from '../../src/errors/errors.ts';
import { joinInstructions, kubeadmConfig, parseCertificateKey, parseJoinCommand } from '../../src/restore/kubeadm.ts';
import { applyAll, APPLY_ALL_PHASES, checkPlans, rollbackAll, type NodeDriver } from '../../src/restore/orchestrate.ts';
import type { InPlaceStep, RestorePlan } from '../../src/restore/plan.ts';
import { samplePlan } from '../support/plans.ts';

const members = [
  { name: 'cp-1', peerURL: 'https://10.0.0.1:2380' },
  { name: 'cp-2', peerURL: 'https://10.0.0.2:2380' },
  { name: 'cp-3', peerURL: 'https://10.0.0.3:2380' },
];

function planFor(node: string, over: Partial<RestorePlan> = {}): RestorePlan {
  return samplePlan({
    id: `restore-20261124T040000.000Z-00000${node.slice(-1)}`,
    node,
    clusterToken: 'shared',
    bump: { minimum: 1000, pinned: true, estimatedRevisionsSinceBackup: 0, formula: 'f' },
    members,
    keepLeaseAddresses: [],
    self: { name: node, peerURL: 'x', dataDir: '/var/lib/etcd', restoreDir: 'y', swap: 'dir', etcdutl: { command: 'etcdutl', args: [] } },
    staging: '/s',
    steps: [],
    worstCaseDowntimeSeconds: 1,
    ...over,
  });
}

function drivers(log: string[], failAt?: { node: string; step: InPlaceStep }): NodeDriver[] {
  return members.map(({ name }) => ({
    name,
    plan: planFor(name),
    async applyThrough(step) {
      await new Promise((r) => setTimeout(r, name === 'cp-2' ? 5 : 1));
      if (failAt?.node === name && failAt.step === step) throw new EtcdUnavailableError(`${name} failed at ${step}`, { hint: 'look' });
      log.push(`${name}:${step}`);
    },
  }));
}

test('applyAll runs each phase on every node before the next phase starts, in the safe order', async () => {
  const log: string[] = [];
  const phases: string[] = [];
  const report = await applyAll(drivers(log), { onPhase: (p) => phases.push(p.phase) });
  assert.equal(report.ok, true);
  assert.deepEqual(phases, APPLY_ALL_PHASES.map((p) => p.phase));
  const order = APPLY_ALL_PHASES.map((p) => p.through);
  assert.deepEqual(order, ['fetch', 'stop-apiserver', 'stop-etcd', 'swap-data-dir', 'start-etcd', 'wait-quorum', 'cleanup-leases', 'start-apiserver', 'done']);
  // Every node's step k is logged before any node's step k+1.
  for (let k = 0; k < order.length; k++) {
    const phase = log.slice(3 * k, 3 * k + 3).map((e) => e.split(':')[1]);
    assert.deepEqual(phase, [order[k], order[k], order[k]]);
  }
});

test('a failing node stops applyAll after that phase, with every node\'s outcome', async () => {
  const log: string[] = [];
  const report = await applyAll(drivers(log, { node: 'cp-3', step: 'stop-etcd' }));
  assert.equal(report.ok, false);
  assert.equal(report.failedPhase, 'stop-etcd');
  const last = report.phases.at(-1)!;
  assert.deepEqual(last.nodes.map((n) => [n.node, n.ok]), [['cp-1', true], ['cp-2', true], ['cp-3', false]]);
  assert.deepEqual(last.nodes[2]!.error, { code: 'ETCD_UNAVAILABLE', message: 'cp-3 failed at stop-etcd', hint: 'look' });
  assert.ok(!log.some((e) => e.endsWith(':swap-data-dir')), 'no node restores before every node stopped etcd');
});

test('checkPlans refuses plans that cannot form one cluster, naming the field', () => {
  const ok = members.map(({ name }) => ({ name, plan: planFor(name) }));
  checkPlans(ok);
  const cases: [{ name: string; plan: RestorePlan }[], string][] = [
    [ok.slice(0, 2), '/nodes'],
    [[...ok, ok[0]!], '/nodes'],
    [[ok[0]!, { name: 'cp-2', plan: planFor('cp-2', { clusterToken: 'other' }) }, ok[2]!], '/nodes/1/clusterToken'],
    [[ok[0]!, ok[1]!, { name: 'cp-3', plan: planFor('cp-3', { bumpRevision: 5 }) }], '/nodes/2/bumpRevision'],
    [[ok[0]!, { name: 'cp-2', plan: planFor('cp-2', { backupId: 'other' }) }, ok[2]!], '/nodes/1/backupId'],
    [[ok[0]!, { name: 'cp-2', plan: planFor('cp-3') }, ok[2]!], '/nodes/1/node'],
    [[{ name: 'cp-1', plan: planFor('cp-1', { mode: 'fresh-control-plane' }) }], '/nodes/0/mode'],
    [[], '/nodes'],
  ];
  for (const [nodes, field] of cases) {
    assert.throws(() => checkPlans(nodes), (e: unknown) => e instanceof BadRequestError && e.field === field, field);
  }
});

test('rollbackAll rolls back every node at once and reports each', async () => {
  const started: string[] = [];
  const report = await rollbackAll(members.map(({ name }) => ({
    name,
    rollback: async () => {
      started.push(name);
      await new Promise((r) => setTimeout(r, 5));
      if (name === 'cp-2') throw new ToolError('disk full');
    },
  })));
  assert.deepEqual(started, ['cp-1', 'cp-2', 'cp-3'], 'all started before any finished');
  assert.equal(report.ok, false);
  assert.deepEqual(report.nodes.map((n) => [n.node, n.ok, n.error?.message]), [['cp-1', true, undefined], ['cp-2', false, 'disk full'], ['cp-3', true, undefined]]);
});

const KIT_CONFIG = `apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
localAPIEndpoint:
  advertiseAddress: 10.0.0.1
  bindPort: 6443
nodeRegistration:
  name: cp-1
  criSocket: unix:///run/containerd/containerd.sock
  taints: []
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
clusterName: prod
kubernetesVersion: v1.30.4
controlPlaneEndpoint: cp.example.internal:6443
etcd:
  local:
    dataDir: /data/etcd
    extraArgs:
      quota-backend-bytes: "8589934592"
apiServer:
  extraArgs:
    encryption-provider-config: /etc/kubernetes/enc/enc.yaml
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
`;

test('kubeadm config: this host\'s InitConfiguration, the kit\'s ClusterConfiguration with the restored data dir, no old tokens', () => {
  const { text, notes } = kubeadmConfig(KIT_CONFIG, { name: 'cp-new', advertiseAddress: '10.1.0.5', dataDir: '/var/lib/etcd', source: '/etc/kubernetes/kubeadm-config.yaml' });
  const docs = parseAllDocuments(text) as unknown as { toJS(): Record<string, unknown> }[];
  const [init, cluster, kubelet] = docs.map((d) => d.toJS());
  assert.deepEqual(init, {
    apiVersion: 'kubeadm.k8s.io/v1beta3',
    kind: 'InitConfiguration',
    localAPIEndpoint: { advertiseAddress: '10.1.0.5', bindPort: 6443 },
    nodeRegistration: { name: 'cp-new', criSocket: 'unix:///run/containerd/containerd.sock', taints: [] },
  });
  assert.equal((cluster as { controlPlaneEndpoint: string }).controlPlaneEndpoint, 'cp.example.internal:6443');
  assert.deepEqual((cluster as { etcd: unknown }).etcd, { local: { dataDir: '/var/lib/etcd', extraArgs: { 'quota-backend-bytes': '8589934592' } } });
  assert.equal((kubelet as { kind: string }).kind, 'KubeletConfiguration');
  assert.doesNotMatch(text, /abcdef\.0123456789abcdef/);
  assert.equal(notes.length, 2);
  assert.throws(() => kubeadmConfig('kind: KubeletConfiguration\n', { name: 'a', advertiseAddress: 'b', dataDir: 'c', source: 'k.yaml' }), ConfigError);
  assert.throws(() => kubeadmConfig('apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\netcd:\n  external:\n    endpoints: [x]\n', { name: 'a', advertiseAddress: 'b', dataDir: 'c', source: 'k.yaml' }), /external etcd/);
});

test('join instructions from kubeadm\'s output', () => {
  const key = 'f'.repeat(64);
  assert.equal(parseCertificateKey(`[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace\n[upload-certs] Using certificate key:\n${key}\n`), key);
  assert.throws(() => parseCertificateKey('nothing'), ToolError);
  const join = 'kubeadm join cp.example.internal:6443 --token abc.def --discovery-token-ca-cert-hash sha256:00';
  assert.equal(parseJoinCommand(`W1124 warning\n${join} \n`), join);
  const j = joinInstructions(join, key, { now: new Date('2026-11-24T04:00:00Z'), hosts: ['cp-2'], dataDir: '/var/lib/etcd' });
  assert.equal(j.command, `${join} --control-plane --certificate-key ${key}`);
  assert.equal(j.certificateKeyExpiresAt, '2026-11-24T06:00:00.000Z');
  assert.match(j.before.join('\n'), /cp\.example\.internal:6443/);
  assert.match(j.before.join('\n'), /mv \/var\/lib\/etcd/);
  assert.doesNotMatch(j.before.join('\n'), /Copy |restore\.kubeadm/);
  // kubeadm join does not bring the encryption config; the flags this host's init needed are named.
  const more = joinInstructions(join, key, { now: new Date('2026-11-24T04:00:00Z'), hosts: ['cp-2'], dataDir: '/var/lib/etcd', copyFiles: ['/etc/kubernetes/enc/enc.yaml'], criSocket: 'unix:///run/crio/crio.sock', ignorePreflightErrors: ['Swap'] });
  assert.equal(more.command, j.command);
  assert.ok(more.before.some((l) => l.startsWith('Copy /etc/kubernetes/enc/enc.yaml from this host to the same path on each of them')));
  assert.ok(more.before.some((l) => l.includes('--cri-socket unix:///run/crio/crio.sock and --ignore-preflight-errors=Swap (restore.kubeadm)')));
});

test('kubeadm config: restore.kubeadm.criSocket replaces the kit\'s', () => {
  const { text } = kubeadmConfig(KIT_CONFIG, { name: 'cp-new', advertiseAddress: '10.1.0.5', dataDir: '/var/lib/etcd', criSocket: 'unix:///run/crio/crio.sock', source: '/etc/kubernetes/kubeadm-config.yaml' });
  const init = (parseAllDocuments(text)[0] as unknown as { toJS(): { nodeRegistration: unknown } }).toJS();
  assert.deepEqual(init.nodeRegistration, { name: 'cp-new', criSocket: 'unix:///run/crio/crio.sock', taints: [] });
});
