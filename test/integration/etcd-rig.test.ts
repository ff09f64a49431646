import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { startEtcd } from '../../scripts/rig/etcd.ts';
import { REPO } from '../support/lifeboat.ts';

const run = promisify(execFile);
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-rig-'));
after(() => rm(work, { recursive: true, force: true }));
const tree = await makeKubeadmTree(path.join(work, 'host/etc/kubernetes'));

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('the kubeadm tree has kubeadm\'s files, with PKCS#1 keys at 0600', async () => {
  for (const f of ['pki/ca.crt', 'pki/ca.key', 'pki/sa.key', 'pki/sa.pub', 'pki/front-proxy-ca.crt', 'pki/front-proxy-ca.key', 'pki/etcd/ca.crt', 'pki/etcd/ca.key', 'pki/etcd/server.crt', 'pki/etcd/peer.key', 'pki/etcd/healthcheck-client.crt', 'manifests/etcd.yaml', 'manifests/kube-apiserver.yaml', 'kubeadm-config.yaml', 'enc/enc.yaml']) {
    await readFile(path.join(tree.root, f));
  }
  assert.match(await readFile(tree.etcd.caKey, 'utf8'), /^-----BEGIN RSA PRIVATE KEY-----/);
  const { stdout } = await run('openssl', ['x509', '-in', tree.etcd.clientCert, '-noout', '-subject']);
  assert.match(stdout, /O\s*=\s*system:masters, CN\s*=\s*kube-etcd-healthcheck-client/);
  assert.match(await readFile(path.join(tree.manifests, 'kube-apiserver.yaml'), 'utf8'), /--encryption-provider-config=\/etc\/kubernetes\/enc\/enc\.yaml/);
});

for (const [members, version] of [[3, '3.6'], [1, '3.5']] as const) {
  test(`${members} member(s) of etcd ${version}: TLS with client certs, and stop() leaves no process`, async () => {
    const cluster = await startEtcd({ tree, members, version, dataRoot: path.join(work, `etcd-${members}-${version}`) });
    try {
      assert.equal(cluster.endpoints.length, members);
      assert.ok(cluster.endpoints.every((e) => /^https:\/\/127\.0\.0\.1:\d+$/.test(e)));
      const client = cluster.client();
      try {
        await client.put('/registry/test/a').value('1');
        assert.equal(await client.get('/registry/test/a').string(), '1');
      } finally {
        client.close();
      }
      const anonymous = new Etcd3({ hosts: cluster.endpoints[0]!, credentials: { rootCertificate: await readFile(tree.etcd.caCert) }, grpcOptions: { 'grpc.ssl_target_name_override': 'localhost' } });
      try {
        await assert.rejects(anonymous.get('/registry/test/a').string());
      } finally {
        anonymous.close();
      }
      const status = await cluster.etcdctl(['endpoint', 'status', '-w', 'json']);
      assert.equal((JSON.parse(status) as unknown[]).length, members);
      assert.match(status, new RegExp(`"version":"${version.replace('.', '\\.')}\\.`));
    } finally {
      await cluster.stop();
    }
    assert.ok(cluster.members.every((m) => !alive(m.pid)), 'every etcd we started is gone');
  });
}

test('the rig CLI starts a detached etcd, records it, and stops exactly it', async () => {
  const dir = path.join(work, 'cli');
  const node = process.execPath;
  const script = path.join(REPO, 'scripts/etcd-rig.ts');
  await run(node, [script, 'start', '--dir', dir, '--populate', '50']);
  const state = JSON.parse(await readFile(path.join(dir, 'rig.json'), 'utf8')) as { pids: number[]; endpoints: string[] };
  assert.ok(state.pids.every(alive));
  await run(node, [script, 'stop', '--dir', dir]);
  assert.ok(!state.pids.some(alive));
});
