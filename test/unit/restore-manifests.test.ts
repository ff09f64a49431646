import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/errors/errors.ts';
import { apiserverAddress, etcdFacts, etcdListenAddresses, lineDiff, localClientURL, StaticPod } from '../../src/restore/manifests.ts';
import { apiserverStaticPod, etcdStaticPod } from '../../scripts/rig/pki.ts';

/** What kubeadm v1.30 writes for the first control-plane node (trimmed of nothing but the node's IP). */
const KUBEADM_ETCD = `apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://192.168.10.11:2379
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://192.168.10.11:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --experimental-initial-corrupt-check=true
    - --experimental-watch-progress-notify-interval=5s
    - --initial-advertise-peer-urls=https://192.168.10.11:2380
    - --initial-cluster=cp-1=https://192.168.10.11:2380
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls=https://127.0.0.1:2379,https://192.168.10.11:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls=https://192.168.10.11:2380
    - --name=cp-1
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --snapshot-count=10000
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    image: registry.k8s.io/etcd:3.5.15-0
    imagePullPolicy: IfNotPresent
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /livez
        port: 2381
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: etcd
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    # the data and the certificates come from the host
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {}
`;

const KUBEADM_APISERVER = `apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 192.168.10.11:6443
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=192.168.10.11
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --etcd-servers=https://127.0.0.1:2379
    - --secure-port=6443
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.30.4
    name: kube-apiserver
  hostNetwork: true
status: {}
`;

test('reads the flags, URLs, data dir and its hostPath of a kubeadm etcd manifest', () => {
  const pod = StaticPod.parse(KUBEADM_ETCD, '/etc/kubernetes/manifests/etcd.yaml');
  assert.equal(pod.name, 'etcd');
  const facts = etcdFacts(pod);
  assert.equal(facts.name, 'cp-1');
  assert.equal(facts.dataDir, '/var/lib/etcd');
  assert.equal(facts.hostDataDir, '/var/lib/etcd');
  assert.equal(facts.initialClusterToken, undefined, 'kubeadm does not set a token');
  assert.deepEqual(facts.listenClientURLs.map((u) => u.origin), ['https://127.0.0.1:2379', 'https://192.168.10.11:2379']);
  assert.equal(localClientURL(facts)?.origin, 'https://127.0.0.1:2379');
  assert.deepEqual(etcdListenAddresses(facts), [
    { host: '127.0.0.1', port: 2379 },
    { host: '192.168.10.11', port: 2379 },
    { host: '192.168.10.11', port: 2380 },
  ]);
  assert.equal(pod.hostPathOf('/etc/kubernetes/pki/etcd/server.crt'), '/etc/kubernetes/pki/etcd/server.crt');
  assert.equal(pod.hostPathOf('/tmp/elsewhere'), undefined);
});

test('edits flags in place, adds missing ones, and keeps every other line (comments, probes, order)', () => {
  const pod = StaticPod.parse(KUBEADM_ETCD, 'etcd.yaml');
  pod.setFlag('initial-cluster', 'cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380');
  pod.setFlag('initial-cluster-token', 'lifeboat-x-1');
  pod.setFlag('initial-cluster-state', 'new');
  const text = pod.toString();
  const diff = lineDiff(KUBEADM_ETCD, text);
  const changed = diff.split('\n').filter((l) => /^[-+](?![-+]{2} )/.test(l));
  assert.deepEqual(changed, [
    '-    - --initial-cluster=cp-1=https://192.168.10.11:2380',
    '+    - --initial-cluster=cp-1=https://192.168.10.11:2380,cp-2=https://192.168.10.12:2380',
    '+    - --initial-cluster-token=lifeboat-x-1',
    '+    - --initial-cluster-state=new',
  ]);
  assert.match(text, /# the data and the certificates come from the host/);
  const again = StaticPod.parse(text, 'etcd.yaml');
  assert.equal(again.flag('initial-cluster-token'), 'lifeboat-x-1');
  assert.equal(etcdFacts(again).initialClusterState, 'new');
});

test('points the etcd-data hostPath at another host dir; a data dir below the mount keeps its relative part', () => {
  const pod = StaticPod.parse(KUBEADM_ETCD, 'etcd.yaml');
  pod.setHostPathOf('/var/lib/etcd', '/data/etcd');
  assert.equal(pod.hostPathOf('/var/lib/etcd'), '/data/etcd');
  assert.equal(pod.flag('data-dir'), '/var/lib/etcd', 'the container path is unchanged');
  assert.equal(pod.hostPathOf('/etc/kubernetes/pki/etcd/ca.crt'), '/etc/kubernetes/pki/etcd/ca.crt', 'other volumes untouched');

  const nested = StaticPod.parse(KUBEADM_ETCD.replace('--data-dir=/var/lib/etcd', '--data-dir=/var/lib/etcd/data'), 'etcd.yaml');
  assert.equal(nested.hostPathOf('/var/lib/etcd/data'), '/var/lib/etcd/data');
  nested.setHostPathOf('/var/lib/etcd/data', '/mnt/disk/data');
  assert.equal(nested.hostPathOf('/var/lib/etcd/data'), '/mnt/disk/data');
  assert.throws(() => nested.setHostPathOf('/var/lib/etcd/data', '/mnt/other'), ConfigError);
});

test('a data dir on no hostPath volume is found out', () => {
  const noVolume = KUBEADM_ETCD.replace('--data-dir=/var/lib/etcd', '--data-dir=/data/etcd');
  const facts = etcdFacts(StaticPod.parse(noVolume, 'etcd.yaml'));
  assert.equal(facts.hostDataDir, undefined);
});

test('reads `--flag value` pairs and args, and appends new flags where the flags are', () => {
  const text = `apiVersion: v1
kind: Pod
metadata: {name: etcd}
spec:
  containers:
  - name: etcd
    command: [etcd]
    args: ["--name", "m1", "--data-dir=/var/lib/etcd"]
`;
  const pod = StaticPod.parse(text, 'etcd.yaml');
  assert.equal(pod.flag('name'), 'm1');
  pod.setFlag('name', 'm2');
  pod.setFlag('initial-cluster-state', 'new');
  assert.deepEqual(pod.argv, ['etcd', '--name', 'm2', '--data-dir=/var/lib/etcd', '--initial-cluster-state=new']);
});

test('the apiserver secure port and the address to probe', () => {
  assert.deepEqual(apiserverAddress(StaticPod.parse(KUBEADM_APISERVER, 'kube-apiserver.yaml')), { host: '127.0.0.1', port: 6443 });
  assert.deepEqual(apiserverAddress(StaticPod.parse(KUBEADM_APISERVER.replace('    - --secure-port=6443\n', ''), 'a.yaml')), { host: '127.0.0.1', port: 6443 }, 'the default');
  assert.deepEqual(apiserverAddress(StaticPod.parse(apiserverStaticPod({ securePort: 16443, bindAddress: '127.0.0.1' }), 'a.yaml')), { host: '127.0.0.1', port: 16443 });
  assert.throws(() => apiserverAddress(StaticPod.parse(KUBEADM_APISERVER.replace('--secure-port=6443', '--secure-port=http'), 'a.yaml')), ConfigError);
});

test('the rig\'s manifests parse like kubeadm\'s', () => {
  const facts = etcdFacts(StaticPod.parse(etcdStaticPod({ name: 'm1', address: '127.0.0.1', clientPort: 32379, peerPort: 32380, initialClusterToken: 'tok' }), 'etcd.yaml'));
  assert.equal(facts.name, 'm1');
  assert.equal(facts.initialClusterToken, 'tok');
  assert.equal(facts.hostDataDir, '/var/lib/etcd');
  assert.deepEqual(facts.listenClientURLs.map((u) => u.origin), ['https://127.0.0.1:32379']);
  assert.equal(etcdFacts(StaticPod.parse(etcdStaticPod(), 'etcd.yaml')).initialCluster, 'cp-1=https://10.0.0.1:2380');
});

test('bad manifests are ConfigErrors naming the file', () => {
  assert.throws(() => StaticPod.parse('kind: Pod\nspec: [', '/m/etcd.yaml'), (e: unknown) => e instanceof ConfigError && /\/m\/etcd\.yaml is not valid YAML/.test(e.message));
  assert.throws(() => StaticPod.parse('kind: Deployment\n', '/m/x.yaml'), /not a Pod manifest/);
  assert.throws(() => StaticPod.parse('kind: Pod\nspec: {containers: []}\n', '/m/x.yaml'), /no container/);
  assert.throws(() => etcdFacts(StaticPod.parse(KUBEADM_ETCD.replace('--listen-peer-urls=https://192.168.10.11:2380', '--listen-peer-urls=::bad'), 'e.yaml')), /--listen-peer-urls holds "::bad"/);
});

test('lineDiff: nothing for equal texts, context around changes', () => {
  assert.equal(lineDiff('a\nb\n', 'a\nb\n'), '');
  const lines = Array.from({ length: 20 }, (_, i) => `line ${i}`);
  const changed = [...lines];
  changed[10] = 'line ten';
  const diff = lineDiff(lines.join('\n'), changed.join('\n'), ['old', 'new'], 1);
  assert.equal(diff, ['--- old', '+++ new', '@@', ' line 9', '-line 10', '+line ten', ' line 11', '@@', ''].join('\n'));
});
