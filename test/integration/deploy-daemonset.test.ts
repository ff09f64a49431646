/**
 * The DaemonSet that deploy/ renders, in every kustomization and combination (test/support/deploy.ts):
 * where it runs; its securityContext (uid 0, no capability, no escalation); that it mounts
 * read-only only what the kit and etcd need and never a kubeconfig; probes, resources and image;
 * the config its pod runs with and that every file it names is mounted; what the store, restore
 * and drill components change. That this securityContext backs up a root-only kit on the real
 * kernel is backup-no-capabilities.test.ts's.
 */
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { kitSpecs } from '../../src/kit/collect.ts';
import { COMBINATIONS, combinationName, DEPLOY } from '../support/kustomize.ts';
import { REPO } from '../support/lifeboat.ts';
import { byKind, caps, claims, daemonConfig, DRILL, mainContainer, mountOf, mounts, OBC_STAND_INS, one, podSpec, r, renderAll, RESTORE, S3_STORE, templates, volume, volumeOrUndefined, WITHOUT_RESTORE, WORKLOADS } from '../support/deploy.ts';

const PKG = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };

/** Measured (README.md, shared notes): a backup peaks at about 150 MiB RSS, an S3 backup at 200 MiB. */
const MEASURED_BACKUP_PEAK_MIB = 150;
const S3_BOUND_MIB = 200;
const IMAGE = 'ghcr.io/lifeboat-backup/lifeboat';

before(renderAll);

describe('the backup DaemonSet', () => {

  test('runs on every control-plane node, on the host network, with the taints tolerated', () => {
    for (const dir of WORKLOADS) {
      const spec = podSpec(r(dir));
      assert.deepEqual(spec.nodeSelector, { 'node-role.kubernetes.io/control-plane': '' }, dir);
      for (const key of ['node-role.kubernetes.io/control-plane', 'node-role.kubernetes.io/master']) {
        assert.ok(
          spec.tolerations?.some((t) => t.key === key && t.operator === 'Exists' && t.effect === 'NoSchedule'),
          `${dir}: tolerates ${key}:NoSchedule`,
        );
      }
      assert.equal(spec.hostNetwork, true, `${dir}: hostNetwork, for etcd on 127.0.0.1:2379`);
      assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet', dir);
    }
  });

  test('runs as uid 0 with no capability: none added, ALL dropped, no escalation, seccomp, read-only root filesystem, priority', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const pod = podSpec(rd);
      assert.equal(pod.securityContext?.runAsUser, 0, dir);
      assert.equal(pod.securityContext?.runAsNonRoot, false, dir);
      assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', dir);
      assert.equal(pod.securityContext?.fsGroup, undefined, `${dir}: root owns the Secret files; no group needed`);
      assert.equal(pod.priorityClassName, 'system-node-critical', dir);
      assert.deepEqual(pod.initContainers ?? [], [], `${dir}: no init container`);
      assert.equal(pod.containers.length, 1, `${dir}: one container`);
      const c = mainContainer(rd);
      const sc = c.securityContext!;
      assert.equal(sc.runAsUser, 0, dir);
      assert.equal(sc.runAsGroup, 0, dir);
      assert.equal(sc.runAsNonRoot, false, dir);
      assert.equal(sc.privileged, false, dir);
      assert.equal(sc.allowPrivilegeEscalation, false, dir);
      assert.equal(sc.readOnlyRootFilesystem, true, dir);
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', dir);
      assert.deepEqual(caps(c), { add: [], drop: ['ALL'] }, dir);
      assert.equal(sc.procMount, undefined, dir);
      // The image's ENTRYPOINT (the Dockerfile test checks it) is what runs: plain node.
      assert.equal(c.command, undefined, dir);
    }
  });

  test('mounts read-only only what the kit and etcd need, never a kubeconfig; writes only its own directory and /tmp', async () => {
    // The kit of a kubeadm node as the config names it: every file and directory a backup reads.
    const root = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-kit-'));
    try {
      await makeKubeadmTree(path.join(root, 'etc/kubernetes'), { hosts: ['m1'] });
      for (const dir of WORKLOADS) {
        const rd = r(dir);
        const c = mainContainer(rd);
        const m = mounts(rd, c);
        const config = daemonConfig(rd);
        const specs = await kitSpecs({ ...config.kit, hostRoot: root } as Parameters<typeof kitSpecs>[0]);
        const needed = [...specs.map((x) => x.path), '/etc/kubernetes/manifests/kube-apiserver.yaml', config.etcd.tls.caFile, config.etcd.tls.certFile, config.etcd.tls.keyFile];
        assert.ok(needed.includes('/etc/kubernetes/enc/enc.yaml'), 'the encryption-provider config the apiserver manifest names');
        for (const f of needed.filter((x) => x !== config.kit.clusterConfiguration)) {
          const on = mountOf(rd, c, f);
          assert.ok(on?.volume.hostPath, `${dir}: ${f} is on no host mount`);
          assert.equal(path.posix.relative(on.path, f), path.posix.relative(on.volume.hostPath.path, f), `${dir}: ${f} at its host path`);
          if (!RESTORE.includes(dir)) assert.equal(on.readOnly, true, `${dir}: ${f} read-only`);
        }
        // kubeadm's kubeconfigs hold cluster-admin (admin.conf, super-admin.conf) or node
        // credentials: no mount reaches them, nor /etc/kubernetes as a whole.
        for (const f of ['admin.conf', 'super-admin.conf', 'kubelet.conf', 'controller-manager.conf', 'scheduler.conf']) {
          assert.equal(mountOf(rd, c, `/etc/kubernetes/${f}`), undefined, `${dir}: /etc/kubernetes/${f} is mounted`);
        }
        const hostPaths = (podSpec(rd).volumes ?? []).filter((v) => v.hostPath).map((v) => v.hostPath!.path).sort();
        const restorePaths = RESTORE.includes(dir) ? ['/var/lib/etcd'] : [];
        assert.deepEqual(hostPaths, ['/etc/kubernetes/enc', '/etc/kubernetes/manifests', '/etc/kubernetes/pki', ...restorePaths, '/var/lib/lifeboat'].sort(), `${dir}: hostPath volumes`);
        const writable = m.filter((x) => !x.readOnly).map((x) => x.path).sort();
        const expected = ['/tmp', '/var/lib/lifeboat'];
        if (DRILL.includes(dir)) expected.push('/var/lib/lifeboat-drill');
        if (RESTORE.includes(dir)) expected.push('/etc/kubernetes/manifests', '/var/lib/etcd');
        assert.deepEqual(writable, expected.sort(), `${dir}: writable mounts`);
        for (const x of m.filter((y) => y.volume.secret)) assert.equal(x.readOnly, true, `${dir}: Secret at ${x.path} read-only`);
        for (const x of m.filter((y) => !y.readOnly)) {
          if (x.volume.emptyDir) assert.ok(x.volume.emptyDir.sizeLimit, `${dir}: emptyDir ${x.path} has a sizeLimit`);
        }
        // Secret files: root's, 0400.
        for (const v of (podSpec(rd).volumes ?? []).filter((y) => y.secret)) assert.equal(v.secret!.defaultMode, 0o400, `${dir}: ${v.name} mode`);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('has no Kubernetes API access: no token, no RBAC', () => {
    for (const dir of WITHOUT_RESTORE) {
      const rd = r(dir);
      assert.equal(podSpec(rd).automountServiceAccountToken, false, dir);
      assert.equal(podSpec(rd).serviceAccountName, 'lifeboat', dir);
      assert.equal(one(rd, 'ServiceAccount', 'lifeboat').automountServiceAccountToken, false, dir);
      for (const kind of ['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding']) assert.deepEqual(byKind(rd, kind), [], `${dir}: no ${kind}`);
    }
  });

  test('probes /healthz and /readyz on the metrics port, which is metrics.listen', () => {
    for (const dir of WORKLOADS) {
      const c = mainContainer(r(dir));
      const port = (name: string) => c.ports?.find((p) => p.name === name)?.containerPort;
      assert.equal(port('metrics'), 9464, dir);
      assert.equal(port('https'), 8443, dir);
      assert.deepEqual(c.startupProbe?.httpGet, { path: '/healthz', port: 'metrics' }, dir);
      assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' }, dir);
      assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' }, dir);
      const config = daemonConfig(r(dir));
      assert.equal(config.metrics.listen.port, port('metrics'), `${dir}: metrics.listen.port`);
      assert.equal(config.api.listen.port, port('https'), `${dir}: api.listen.port`);
    }
  });

  test('requests the measured peak memory, and limits it', () => {
    for (const dir of WORKLOADS) {
      const res = mainContainer(r(dir)).resources!;
      const request = mib(res.requests!.memory!);
      const limit = mib(res.limits!.memory!);
      assert.ok(request >= S3_BOUND_MIB, `${dir}: memory request ${request} MiB covers the ${S3_BOUND_MIB} MiB S3 peak`);
      assert.ok(request <= 2 * S3_BOUND_MIB, `${dir}: memory request ${request} MiB is not far above the measured peak`);
      assert.ok(limit >= 2 * MEASURED_BACKUP_PEAK_MIB && limit >= request, `${dir}: memory limit ${limit} MiB`);
      if (DRILL.includes(dir)) assert.ok(limit >= 2048 + 512, `${dir}: room for the throwaway etcd`);
      else assert.ok(limit <= 1024, `${dir}: the memory bound is a product claim; the limit holds it (${limit} MiB)`);
      assert.ok(res.requests!.cpu, `${dir}: a CPU request`);
      assert.ok(res.limits!.cpu, `${dir}: a CPU limit keeps a backup from taking every core from etcd`);
    }
  });

  test('runs the image of this version, and serves the config of its ConfigMap', () => {
    for (const dir of WORKLOADS) {
      const spec = podSpec(r(dir));
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) assert.equal(c.image, `${IMAGE}:${PKG.version}`, `${dir}: ${c.name}`);
      const c = mainContainer(r(dir));
      assert.deepEqual(c.args, ['serve', '--config', '/etc/lifeboat/config.yaml'], dir);
      assert.ok(c.env?.some((e) => e.name === 'LIFEBOAT_NODE' && e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName'), `${dir}: node name`);
    }
  });
});

function mib(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  const n = Number(m[1]);
  const unit = { Ki: 1 / 1024, Mi: 1, Gi: 1024, k: 1000 / 2 ** 20, M: 1e6 / 2 ** 20, G: 1e9 / 2 ** 20 }[m[2] ?? ''] ?? 1 / 2 ** 20;
  return n * unit;
}


describe('config and mounts', () => {
  test('every file the config names is mounted: a Secret key, or a host path', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      const c = mainContainer(rd);
      const files: [string, string | undefined][] = [
        ['encryption.recipientsFile', config.encryption.recipientsFile],
        ['encryption.identityFile', config.encryption.identityFile],
        ['signing.keyFile', config.signing.keyFile],
        ...config.signing.publicKeyFiles.map((f, i): [string, string] => [`signing.publicKeyFiles.${i}`, f]),
        ['api.tls.certFile', config.api.tls.certFile],
        ['api.tls.keyFile', config.api.tls.keyFile],
        ['api.tls.clientCaFile', config.api.tls.clientCaFile],
        ['api.tokensFile', config.api.tokensFile],
        ['store.s3.accessKeyIdFile', config.store.s3?.accessKeyIdFile],
        ['store.s3.secretAccessKeyFile', config.store.s3?.secretAccessKeyFile],
        ['etcd.tls.caFile', config.etcd.tls.caFile],
        ['etcd.tls.certFile', config.etcd.tls.certFile],
        ['etcd.tls.keyFile', config.etcd.tls.keyFile],
      ];
      assert.ok(config.encryption.recipientsFile && config.api.tokensFile && config.signing.keyFile, `${dir}: recipients, tokens and the signing key are configured`);
      for (const [field, file] of files) {
        if (file === undefined) continue;
        const m = mountOf(rd, c, file);
        assert.ok(m, `${dir}: ${field} ${file} is on no mount`);
        assert.equal(m.readOnly, true, `${dir}: ${field} is on a read-only mount`);
        if (m.volume.hostPath) {
          assert.ok(m.volume.hostPath.path.startsWith('/etc/kubernetes/'), `${dir}: ${field}`);
          continue;
        }
        const secret = m.volume.secret;
        assert.ok(secret, `${dir}: ${field} comes from a Secret`);
        assert.notEqual(secret.optional, true, `${dir}: ${field} is configured, so its Secret is not optional`);
        const rel = path.posix.relative(m.path, file);
        const key = secret.items ? secret.items.find((i) => i.path === rel)?.key : rel;
        assert.ok(key, `${dir}: ${field}: no item of ${secret.secretName} becomes ${rel}`);
        if (claims(rd).includes(secret.secretName!)) {
          assert.ok(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'].includes(key), `${dir}: ${field} from Rook's key ${key}`);
        } else {
          const t = templates().get(secret.secretName!);
          assert.ok(t, `${dir}: ${field}: deploy/secrets/ has no template of ${secret.secretName}`);
          assert.ok(Object.keys({ ...t.data, ...t.stringData }).includes(key), `${dir}: ${field}: the template of ${secret.secretName} has no key ${key}`);
        }
      }
    }
  });

  test('state and the directory store are on the host, so they outlive the pod', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      for (const [field, p] of [['daemon.stateDir', config.daemon.stateDir], ['store.fs.dir', config.store.fs?.dir]] as const) {
        if (p === undefined) continue;
        const m = mountOf(rd, mainContainer(rd), p);
        assert.equal(m?.volume.hostPath?.path, '/var/lib/lifeboat', `${dir}: ${field} ${p} on the host`);
        assert.equal(m?.readOnly, false, `${dir}: ${field} writable`);
      }
    }
  });

  test('every Secret the pod mounts has a template, and the templates hold no key', () => {
    const t = templates();
    for (const dir of WORKLOADS) {
      for (const v of (podSpec(r(dir)).volumes ?? []).filter((x) => x.secret)) {
        if (claims(r(dir)).includes(v.secret!.secretName!)) continue;
        assert.ok(t.has(v.secret!.secretName!), `${dir}: template for ${v.secret!.secretName}`);
      }
    }
    for (const [name, s] of t) {
      const values = Object.values({ ...s.stringData });
      assert.ok(values.length > 0 && s.data === undefined, `${name}: stringData placeholders only`);
      for (const v of values) {
        assert.doesNotMatch(v, /^age1[0-9a-z]{20,}|AGE-SECRET-KEY-1|BEGIN [A-Z ]*PRIVATE KEY-----\n[A-Za-z0-9+/]{20}|sha256:[0-9a-f]{64}/m, `${name} holds a real-looking key`);
      }
    }
    assert.equal(t.get('lifeboat-api-tls')?.type, 'kubernetes.io/tls');
  });

  test('the base names no store, so the directory store; the store components set store.s3, from Rook\'s claim or lifeboat-s3', () => {
    const base = parse(readFileSync(path.join(DEPLOY, 'base/config.yaml'), 'utf8')) as Record<string, unknown>;
    assert.equal(base.store, undefined, 'a store in the file would clash with the components\' store.s3');
    for (const dir of WORKLOADS) {
      const config = daemonConfig(r(dir));
      if (!S3_STORE.includes(dir)) {
        assert.deepEqual(config.store, { fs: { dir: '/var/lib/lifeboat/backups' } }, dir);
        assert.equal(volumeOrUndefined(r(dir), 's3-credentials'), undefined, `${dir}: no S3 credentials without an S3 store`);
        continue;
      }
      assert.equal(config.store.fs, undefined, dir);
      assert.ok(config.store.s3?.endpoint && config.store.s3.bucket, `${dir}: endpoint and bucket`);
      const secret = volume(r(dir), 's3-credentials').secret!;
      if (dir.startsWith('deploy/examples/ceph-rgw-obc')) {
        // Everything from what Rook writes for the claim, under the claim's name.
        const [claim] = claims(r(dir));
        assert.equal(secret.secretName, claim, dir);
        assert.notEqual(secret.optional, true, dir);
        assert.equal(config.store.s3.endpoint, `http://${OBC_STAND_INS.BUCKET_HOST}:${OBC_STAND_INS.BUCKET_PORT}`, dir);
        assert.equal(config.store.s3.bucket, OBC_STAND_INS.BUCKET_NAME, dir);
      } else {
        assert.equal(secret.secretName, 'lifeboat-s3', dir);
        assert.equal(config.store.s3.endpoint, 'https://rgw.example.internal', dir);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The restore and drill components

describe('the restore component', () => {
  test('adds write mounts of etcd\'s data dir and the static pod manifests, the identity read-only, and no capability', () => {
    assert.ok(RESTORE.length >= 3, RESTORE.join(', '));
    for (const dir of RESTORE) {
      const rd = r(dir);
      const m = mounts(rd, mainContainer(rd));
      const hostWritable = m.filter((x) => !x.readOnly && x.volume.hostPath).map((x) => [x.path, x.volume.hostPath!.path]).sort();
      assert.deepEqual(hostWritable, [
        ['/etc/kubernetes/manifests', '/etc/kubernetes/manifests'],
        ['/var/lib/etcd', '/var/lib/etcd'],
        ['/var/lib/lifeboat', '/var/lib/lifeboat'],
      ], dir);
      assert.equal(m.find((x) => x.path === '/etc/kubernetes/pki')?.readOnly, true, `${dir}: the PKI stays read-only`);
      const identity = m.find((x) => x.path === '/etc/lifeboat/identity')!;
      assert.equal(identity.readOnly, true, dir);
      assert.equal(identity.volume.secret?.secretName, 'lifeboat-identity', dir);
      assert.equal(daemonConfig(rd).encryption.identityFile, '/etc/lifeboat/identity/identity.txt', dir);
      // Root owns everything a restore writes, so the base's securityContext is all it needs.
      assert.deepEqual(mainContainer(rd).securityContext, mainContainer(r(COMBINATIONS.find((c) => combinationName(c) === dir)!.base)).securityContext, dir);
    }
    // Only the restore component writes to the host outside Lifeboat's own directory.
    for (const dir of WITHOUT_RESTORE) {
      const rd = r(dir);
      const hostWritable = mounts(rd, mainContainer(rd)).filter((x) => !x.readOnly && x.volume.hostPath).map((x) => x.path);
      assert.deepEqual(hostWritable, ['/var/lib/lifeboat'], dir);
    }
  });

  test('grants exactly the Node reads and deletes of the stale-node cleanup, to the lifeboat ServiceAccount', () => {
    for (const dir of RESTORE) {
      const rd = r(dir);
      const role = one(rd, 'ClusterRole') as unknown as { metadata: { name: string }; rules: unknown[] };
      assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'delete'] }], dir);
      const binding = one(rd, 'ClusterRoleBinding') as unknown as { roleRef: { name: string }; subjects: unknown[] };
      assert.equal(binding.roleRef.name, role.metadata.name, dir);
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'lifeboat', namespace: 'lifeboat' }], dir);
      assert.equal(podSpec(rd).automountServiceAccountToken, true, dir);
      assert.deepEqual(byKind(rd, 'Role'), [], dir);
    }
  });
});

describe('the drill component', () => {
  test('adds the identity read-only, a drill schedule and scratch space on an emptyDir', () => {
    assert.ok(DRILL.length >= 2, DRILL.join(', '));
    for (const dir of DRILL) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      assert.notEqual(config.daemon.schedules.drill, 'off', dir);
      assert.equal(config.encryption.identityFile, '/etc/lifeboat/identity/identity.txt', dir);
      const scratch = mountOf(rd, mainContainer(rd), config.drill.scratchDir!);
      assert.ok(scratch?.volume.emptyDir?.sizeLimit, `${dir}: drill.scratchDir on a bounded emptyDir`);
    }
  });
});

