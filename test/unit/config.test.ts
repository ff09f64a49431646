import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, resolveConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/errors/errors.ts';
import { generateIdentity } from '../../src/crypto/age.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-config-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

function configError(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.field, field);
    assert.ok(!err.message.includes('\n'), 'one line');
    if (message) assert.match(err.message, message);
    return true;
  });
}

test('an empty config is kubeadm defaults with the local directory store, frozen', () => {
  const c = resolveConfig({});
  assert.deepEqual(c.etcd.endpoints, ['https://127.0.0.1:2379']);
  assert.equal(c.etcd.tls.certFile, '/etc/kubernetes/pki/etcd/healthcheck-client.crt');
  assert.deepEqual(c.store, { kind: 'fs', dir: '/var/lib/lifeboat/backups' });
  assert.deepEqual(c.compression, { algorithm: 'zstd', level: 1 });
  assert.equal(c.kit.hostRoot, '/');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.etcd.tls) && Object.isFrozen(c.etcd.endpoints));
  assert.equal(resolveConfig({ compression: { algorithm: 'gzip' } }).compression.level, 1);
});

test('unknown keys and wrong types name the field', () => {
  configError(() => resolveConfig({ etcd: { endpoint: 'x' } }), '/etcd/endpoint', /Unexpected property/);
  configError(() => resolveConfig({ etcd: { dialTimeoutMs: 'soon' } }), '/etcd/dialTimeoutMs', /Expected integer.*"soon"/);
  configError(() => resolveConfig({ compression: { algorithm: 'lz4' } }), '/compression/algorithm');
  configError(() => resolveConfig({ compression: { algorithm: 'gzip', level: 12 } }), '/compression/level');
  configError(() => resolveConfig({ cluster: 'Prod_1' }), '/cluster');
  configError(() => resolveConfig({ encryption: { recipients: ['age1notakey'] } }), '/encryption/recipients/0');
  configError(() => resolveConfig({ backup: { maxClockSkewSeconds: 0 } }), '/backup/maxClockSkewSeconds');
  configError(() => resolveConfig({ backup: { maxClockSkewSeconds: 'five minutes' } }), '/backup/maxClockSkewSeconds', /Expected integer/);
  assert.equal(resolveConfig({}).backup.maxClockSkewSeconds, 300);
  assert.equal(resolveConfig({ backup: { maxClockSkewSeconds: 60 } }).backup.maxClockSkewSeconds, 60);
});

test('restore.kubeadm: a CRI socket and preflight checks by name, each checked', () => {
  assert.deepEqual(resolveConfig({}).restore.kubeadm, { ignorePreflightErrors: [] });
  const c = resolveConfig({ restore: { kubeadm: { criSocket: 'unix:///run/containerd/containerd.sock', ignorePreflightErrors: ['SystemVerification', 'FileExisting-crictl'] } } });
  assert.equal(c.restore.kubeadm.criSocket, 'unix:///run/containerd/containerd.sock');
  assert.deepEqual(c.restore.kubeadm.ignorePreflightErrors, ['SystemVerification', 'FileExisting-crictl']);
  configError(() => resolveConfig({ restore: { kubeadm: { criSocket: 'containerd' } } }), '/restore/kubeadm/criSocket');
  configError(() => resolveConfig({ restore: { kubeadm: { ignorePreflightErrors: ['CRI,Swap'] } } }), '/restore/kubeadm/ignorePreflightErrors/0');
  configError(() => resolveConfig({ restore: { kubeadm: { ignorePreflightErrors: 'CRI' } } }), '/restore/kubeadm/ignorePreflightErrors');
  configError(() => resolveConfig({ restore: { kubeadm: { skipPhases: [] } } }), '/restore/kubeadm/skipPhases');
});

test('YAML files load, and a broken one says where', () => {
  const ok = file('ok.yaml', 'cluster: prod\nstore:\n  fs:\n    dir: /backups\n');
  const c = loadConfig({ file: ok, env: {} });
  assert.equal(c.cluster, 'prod');
  assert.deepEqual(c.store, { kind: 'fs', dir: '/backups' });
  configError(() => loadConfig({ file: file('bad.yaml', 'cluster: [\n'), env: {} }), '/', /line/);
  configError(() => loadConfig({ file: path.join(dir, 'absent.yaml'), env: {} }), '--config', /no such|ENOENT/);
});

test('__proto__, constructor and prototype keys are refused, naming where they are', () => {
  for (const [name, text, field] of [
    ['proto-top.yaml', '__proto__:\n  cluster: evil\n', '/__proto__'],
    ['proto-nested.yaml', 'etcd:\n  __proto__:\n    dialTimeoutMs: 1\n', '/etcd/__proto__'],
    ['proto-list.yaml', 'kit:\n  extraFiles:\n    - path: /x\n      __proto__: { required: true }\n', '/kit/extraFiles/0/__proto__'],
    ['constructor.yaml', 'store:\n  fs:\n    constructor: { dir: /x }\n', '/store/fs/constructor'],
    ['prototype.yaml', 'api:\n  prototype: 1\n', '/api/prototype'],
  ] as const) {
    configError(() => loadConfig({ file: file(name, text), env: {} }), field, /not allowed/);
  }
  configError(() => resolveConfig(JSON.parse('{"retention": {"__proto__": {"keepLast": 0}}}') as Record<string, unknown>), '/retention/__proto__', /not allowed/);
});

test('LIFEBOAT_* env vars override the file, by path', async () => {
  const { recipient } = await generateIdentity();
  const f = file('env.yaml', 'etcd:\n  dialTimeoutMs: 1000\n');
  const c = loadConfig({
    file: f,
    env: {
      LIFEBOAT_ETCD__DIAL_TIMEOUT_MS: '2500',
      LIFEBOAT_ETCD__ENDPOINTS: 'https://10.0.0.1:2379, https://10.0.0.2:2379',
      LIFEBOAT_ETCD__TLS__CA_FILE: '/x/ca.crt',
      LIFEBOAT_STORE__FS__DIR: '/srv/backups',
      LIFEBOAT_ETCD__DISCOVER_MEMBERS: 'false',
      LIFEBOAT_ENCRYPTION__RECIPIENTS: recipient,
      LIFEBOAT_CONFIG: f,
      HOME: '/root',
    },
  });
  assert.equal(c.etcd.dialTimeoutMs, 2500);
  assert.deepEqual(c.etcd.endpoints, ['https://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  assert.equal(c.etcd.tls.caFile, '/x/ca.crt');
  assert.equal(c.etcd.discoverMembers, false);
  assert.deepEqual(c.store, { kind: 'fs', dir: '/srv/backups' });
  assert.deepEqual(c.encryption.recipients, [recipient]);
  configError(() => loadConfig({ env: { LIFEBOAT_ETCD__NOPE: '1' } }), 'LIFEBOAT_ETCD__NOPE', /not a setting/);
  configError(() => loadConfig({ env: { LIFEBOAT_ETCD__DIAL_TIMEOUT_MS: 'x' } }), 'LIFEBOAT_ETCD__DIAL_TIMEOUT_MS');
  configError(() => loadConfig({ env: { LIFEBOAT_ETCD__DIAL_TIMEOUT_MS: '5' } }), '/etcd/dialTimeoutMs');
});

test('recipients files are read and each bad line is named', async () => {
  const a = await generateIdentity();
  const b = await generateIdentity();
  const good = file('recipients.txt', `# online\n${a.recipient}\n\n# break-glass\n${b.recipient}\n`);
  assert.deepEqual(resolveConfig({ encryption: { recipientsFile: good, recipients: [a.recipient] } }).encryption.recipients, [a.recipient, b.recipient]);
  const bad = file('bad-recipients.txt', `${a.recipient}\nage1broken\n`);
  configError(() => resolveConfig({ encryption: { recipientsFile: bad } }), `/encryption/recipientsFile (${bad} line 2)`);
});

test('the cluster name defaults to clusterName from the kubeadm ClusterConfiguration', () => {
  const root = path.join(dir, 'host');
  const k8s = path.join(root, 'etc/kubernetes');
  rmSync(k8s, { recursive: true, force: true });
  mkdirSync(k8s, { recursive: true });
  writeFileSync(path.join(k8s, 'kubeadm-config.yaml'), 'apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nclusterName: edge-7\n');
  assert.equal(resolveConfig({ kit: { hostRoot: root } }).cluster, 'edge-7');
  assert.equal(resolveConfig({ kit: { hostRoot: root }, cluster: 'explicit' }).cluster, 'explicit');
  assert.equal(resolveConfig({ kit: { hostRoot: path.join(dir, 'nowhere') } }).cluster, 'kubernetes');
});

test('an S3 store takes credentials from files, values or AWS_* env, and names what is missing', () => {
  const id = file('ak', 'AKID\n');
  const secret = file('sk', 'SECRET\n');
  const s3 = { endpoint: 'https://rgw.example:8443', bucket: 'backups', prefix: 'lifeboat/' };
  const c = resolveConfig({ store: { s3: { ...s3, accessKeyIdFile: id, secretAccessKeyFile: secret } } });
  assert.equal(c.store.kind, 's3');
  if (c.store.kind !== 's3') return;
  assert.deepEqual(c.store.credentials, { accessKeyId: 'AKID', secretAccessKey: 'SECRET' });
  assert.equal(c.store.partSize, 8 * 1024 * 1024);
  assert.equal(c.store.forcePathStyle, true);
  const fromEnv = loadConfig({ env: { LIFEBOAT_STORE__S3__BUCKET: 'b-1', AWS_ACCESS_KEY_ID: 'A', AWS_SECRET_ACCESS_KEY: 'S' } });
  assert.deepEqual(fromEnv.store.kind === 's3' && fromEnv.store.credentials, { accessKeyId: 'A', secretAccessKey: 'S' });
  configError(() => resolveConfig({ store: { s3 } }), '/store/s3/accessKeyIdFile', /AWS_ACCESS_KEY_ID/);
  configError(() => resolveConfig({ store: { s3: { ...s3, accessKeyIdFile: path.join(dir, 'nope') } } }), '/store/s3/accessKeyIdFile', /no such|ENOENT/);
  configError(() => resolveConfig({ store: { s3: { ...s3, prefix: 'no-slash' } } }), '/store/s3/prefix');
  configError(() => resolveConfig({ store: { s3: { ...s3, partSizeMiB: 1 } } }), '/store/s3/partSizeMiB');
  configError(() => resolveConfig({ store: { fs: { dir: '/x' }, s3: { ...s3, accessKeyId: 'a', secretAccessKey: 'b' } } }), '/store', /not both/);
});

test('the change log is off unless enabled, and its bounds are checked when the config is loaded', () => {
  assert.deepEqual({ ...resolveConfig({}).changes }, { enabled: false, segmentSeconds: 5, maxSegmentBytes: 8 * 1024 * 1024, replayLeaseTtlSeconds: 3600 });
  configError(() => resolveConfig({ changes: { replayLeaseTtlSeconds: 1 } }), '/changes/replayLeaseTtlSeconds');
  assert.deepEqual({ ...resolveConfig({ changes: { enabled: true, segmentSeconds: 2, maxSegmentBytes: 65536 } }).changes }, { enabled: true, segmentSeconds: 2, maxSegmentBytes: 65536, replayLeaseTtlSeconds: 3600 });
  configError(() => resolveConfig({ changes: { segmentSeconds: 0 } }), '/changes/segmentSeconds');
  configError(() => resolveConfig({ changes: { maxSegmentBytes: 10 } }), '/changes/maxSegmentBytes');
  configError(() => resolveConfig({ changes: { enabled: true, every: 3 } }), '/changes/every');
});
