import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import type { BackupStore } from '../../src/store/store.ts';
import { createDecryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { verifyBackup } from '../../src/verify/verify.ts';
import { extractBackup } from '../../src/restore/extract.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { DecryptError, EtcdUnavailableError, IntegrityError, NoMatchingIdentityError } from '../../src/errors/errors.ts';
import { startEtcd, startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { entries, populateRig, type PopulateOptions } from '../../scripts/rig/populate.ts';
import { takeBackup as backup } from '../support/backups.ts';
import { configDoc, configOf, errorLines, ETCDUTL, quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { sha256 } from '../support/fixtures.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_TRUST } from '../support/signing.ts';

let work: string;
let hostRoot: string;
let cluster: EtcdCluster;
const data: PopulateOptions = { keys: 3000, valueBytes: [64, 4096], seed: 7 };
const online = await generateIdentity();
const breakGlass = await generateIdentity();
const stranger = await generateIdentity();

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-backup-'));
  ({ etcd: cluster, hostRoot } = await startEtcdHost(work, { members: 3, hosts: ['m1', 'm2', 'm3'], populate: data }));
  await writeFile(path.join(work, 'online.txt'), identityFileText(online.identity, online.recipient, new Date()), { mode: 0o600 });
  await writeFile(path.join(work, 'break-glass.txt'), identityFileText(breakGlass.identity, breakGlass.recipient, new Date()), { mode: 0o600 });
  await writeFile(path.join(work, 'stranger.txt'), identityFileText(stranger.identity, stranger.recipient, new Date()), { mode: 0o600 });
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function setup(name: string, extra: Record<string, unknown> = {}) {
  const storeDir = path.join(work, `store-${name}`);
  const doc = configDoc(cluster, hostRoot, storeDir, [online.recipient, breakGlass.recipient], extra);
  const config = configOf(doc);
  const store = new FsStore(storeDir);
  return { doc, config, store, storeDir, catalog: new Catalog(store, config.cluster, { trust: TEST_TRUST }) };
}

test('a 3-member TLS etcd backs up, lists, verifies deeply, extracts, and restores every key', async () => {
  const { config, store, catalog, storeDir } = setup('main');
  const manifest = await backup(config, store);
  assert.equal(manifest.etcd.members.length, 3);
  assert.notEqual(manifest.etcd.memberId, manifest.etcd.leaderId, 'a follower is preferred');
  assert.ok(manifest.kit.files.some((f) => f.entry === 'kit/etc/kubernetes/pki/etcd/ca.key'));
  assert.ok(manifest.kit.files.some((f) => f.role === 'encryption-provider-config'));
  assert.deepEqual((await catalog.list()).map((b) => b.backupId), [manifest.backupId]);
  assert.equal((await stat(path.join(storeDir, manifest.archive.key))).mode & 0o777, 0o600);

  const shallow = await verifyBackup({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, { etcdutl: ETCDUTL });
  assert.equal(shallow.level, 'ciphertext');
  const deep = await verifyBackup({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, { etcdutl: ETCDUTL, identities: [breakGlass.identity] });
  assert.equal(deep.level, 'deep');
  assert.ok(deep.snapshot!.status.totalKey >= 3000);
  assert.ok(BigInt(deep.snapshot!.status.revision) >= BigInt(manifest.etcd.revision));

  const out = path.join(work, 'extracted');
  await extractBackup({ store, decrypt: createDecryptStream, log: quietLog }, manifest, [online.identity], out);
  for (const f of manifest.kit.files) {
    assert.deepEqual(await readFile(path.join(out, f.entry)), await readFile(path.join(hostRoot, f.path)), f.path);
  }

  // Restore the snapshot with etcdutl into a new data dir, start etcd on it, read every key back.
  assert.match(await restoredServes(path.join(out, 'etcd/snapshot.db'), path.join(work, 'etcd-restored'), data), /^3\.6\./);
});

/**
 * Restores `snapshot` with the rig's etcdutl (3.6) into a new data dir under `dataRoot`, starts a
 * single-member etcd 3.6 on it, checks that it serves every key `written` put there with its
 * value, stops it, and returns the version the restored etcd reported.
 */
async function restoredServes(snapshot: string, dataRoot: string, written: PopulateOptions): Promise<string> {
  const again = await startEtcd({ tree: cluster.tree, members: 1, dataRoot, restoreFrom: snapshot });
  try {
    const client = again.client();
    try {
      const all = await client.getAll().exec();
      const got = new Map(all.kvs.map((kv) => [kv.key.toString(), kv.value]));
      let checked = 0;
      for (const [key, value] of entries(written)) {
        assert.deepEqual(got.get(key), value, key);
        checked += 1;
      }
      assert.equal(checked, written.keys);
      return (await client.maintenance.status()).version;
    } finally {
      client.close();
    }
  } finally {
    await again.stop();
  }
}

test('stock OpenSSL checks the manifest signature; the stock age CLI and GNU tar unpack an archive; the snapshot passes etcdutl and its trailer check', async () => {
  const { config, store, storeDir } = setup('manual', { compression: { algorithm: 'zstd', level: 1 } });
  const manifest = await backup(config, store);
  const dir = path.join(storeDir, path.posix.dirname(manifest.archive.key));
  const verifySignature = (file: string) => spawnSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', SIGNING_PUBLIC_KEY_FILE, '-rawin', '-in', file, '-sigfile', path.join(dir, 'manifest.json.sig')], { encoding: 'utf8' });
  const good = verifySignature(path.join(dir, 'manifest.json'));
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /Signature Verified Successfully/);
  const changed = path.join(work, 'changed-manifest.json');
  await writeFile(changed, (await readFile(path.join(dir, 'manifest.json'), 'utf8')).replace(manifest.node, `${manifest.node}x`));
  assert.notEqual(verifySignature(changed).status, 0, 'a changed manifest fails the stock check');
  const archive = path.join(storeDir, manifest.archive.key);
  assert.equal(sha256(await readFile(archive)), manifest.archive.sha256);
  const out = path.join(work, 'manual');
  execFileSync('mkdir', ['-p', out]);
  execFileSync('bash', ['-o', 'pipefail', '-c', `age -d -i "$1" "$2" | tar --zstd -xf - -C "$3"`, '_', path.join(work, 'break-glass.txt'), archive, out]);
  const snap = await readFile(path.join(out, 'etcd/snapshot.db'));
  assert.equal(snap.length % 512, 32);
  assert.equal(sha256(snap.subarray(0, -32)), snap.subarray(-32).toString('hex'));
  assert.equal(sha256(snap), manifest.snapshot.sha256);
  const status = JSON.parse(execFileSync(ETCDUTL, ['snapshot', 'status', path.join(out, 'etcd/snapshot.db'), '-w', 'json']).toString()) as { revision: number };
  assert.ok(status.revision >= Number(manifest.etcd.revision));
  const inner = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as { backupId: string };
  assert.equal(inner.backupId, manifest.backupId);
  for (const f of manifest.kit.files) assert.equal(sha256(await readFile(path.join(out, f.entry))), f.sha256, f.entry);
});

test('gzip and no compression both round-trip', async () => {
  for (const algorithm of ['gzip', 'none'] as const) {
    const { config, store } = setup(`c-${algorithm}`, { compression: { algorithm } });
    const manifest = await backup(config, store);
    assert.equal(manifest.archive.compression.algorithm, algorithm);
    assert.match(manifest.archive.key, algorithm === 'gzip' ? /\.tar\.gz\.age$/ : /\.tar\.age$/);
    const report = await verifyBackup({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, { etcdutl: ETCDUTL, identities: [online.identity] });
    assert.equal(report.level, 'deep');
  }
});

test('a corrupted byte, a wrong identity and a truncated archive each fail clearly, from the library and the CLI', async () => {
  const { doc, config, store, catalog, storeDir } = setup('damage');
  const manifest = await backup(config, store);
  const file = path.join(storeDir, manifest.archive.key);
  const pristine = await readFile(file);
  const deps = { store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog };
  const configFile = await writeConfig(work, doc);

  // a wrong identity
  await assert.rejects(verifyBackup(deps, manifest, { etcdutl: ETCDUTL, identities: [stranger.identity] }), NoMatchingIdentityError);
  let cli = await runCli(['--config', configFile, 'verify', 'latest', '--identity', path.join(work, 'stranger.txt')]);
  assert.equal(cli.code, 1);
  assert.deepEqual(errorLines(cli.stderr).length, 1, cli.stderr);
  assert.match(cli.stderr, /identit/i);

  // one flipped byte in the middle of the payload
  const corrupt = Buffer.from(pristine);
  const at = Math.floor(corrupt.length / 2);
  corrupt[at] = (corrupt[at] ?? 0) ^ 0xff;
  await writeFile(file, corrupt);
  await assert.rejects(verifyBackup(deps, manifest, { etcdutl: ETCDUTL }), (err: unknown) => err instanceof IntegrityError && /sha256/.test(err.message));
  await assert.rejects(verifyBackup(deps, manifest, { etcdutl: ETCDUTL, identities: [online.identity] }), DecryptError);
  cli = await runCli(['--config', configFile, 'verify', manifest.backupId]);
  assert.equal(cli.code, 1);
  assert.deepEqual(errorLines(cli.stderr), [errorLines(cli.stderr)[0]]);
  assert.match(cli.stderr, /sha256 .* manifest says/);
  assert.doesNotMatch(cli.stderr, /\n\s+at /, 'no stack trace');

  // truncated
  await writeFile(file, pristine.subarray(0, pristine.length - 1000));
  await assert.rejects(verifyBackup(deps, manifest, { etcdutl: ETCDUTL }), /truncated|bytes, but its manifest says/);
  await assert.rejects(verifyBackup(deps, manifest, { etcdutl: ETCDUTL, identities: [online.identity] }), (err: unknown) => err instanceof DecryptError && /truncated/.test(err.message));
  cli = await runCli(['--config', configFile, 'verify', 'latest', '--identity', path.join(work, 'online.txt')]);
  assert.equal(cli.code, 1);
  assert.equal(errorLines(cli.stderr).length, 1, cli.stderr);
  assert.match(cli.stderr, /truncated/);

  // extract refuses to leave anything behind on failure
  const out = path.join(work, 'extract-damaged');
  await assert.rejects(extractBackup({ store, decrypt: createDecryptStream, log: quietLog }, manifest, [online.identity], out));
  await assert.rejects(stat(out), { code: 'ENOENT' });

  await writeFile(file, pristine);
  assert.equal((await verifyBackup(deps, (await catalog.resolve('latest')), { etcdutl: ETCDUTL, identities: [online.identity] })).level, 'deep');
});

test('a missing required kit file fails naming the file; a missing optional one is recorded', async () => {
  const { config, store, catalog } = setup('kit', { kit: { hostRoot, extraFiles: [{ path: '/etc/kubernetes/absent-optional.yaml', required: false }, { path: '/etc/kubernetes/absent-required.yaml' }] } });
  await assert.rejects(backup(config, store), /absent-required\.yaml/);
  assert.deepEqual(await catalog.list(), []);
  const ok = setup('kit-ok', { kit: { hostRoot, extraFiles: [{ path: '/etc/kubernetes/absent-optional.yaml', required: false }] } });
  const manifest = await backup(ok.config, ok.store);
  assert.deepEqual(manifest.kit.missing.map((m) => m.path), ['/etc/kubernetes/absent-optional.yaml']);
});

test('bad config fails before anything runs, with one line naming the field or file', async () => {
  const { doc } = setup('badconfig');
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...doc, etcd: { ...(doc.etcd as object), endpoint: 'x' } }, /\/etcd\/endpoint/],
    [{ ...doc, etcd: { ...(doc.etcd as object), dialTimeoutMs: 'soon' } }, /\/etcd\/dialTimeoutMs/],
    [{ ...doc, etcd: { ...(doc.etcd as object), tls: { ...cluster.tls, caFile: path.join(work, 'nope.crt') } } }, /\/etcd\/tls\/caFile.*nope\.crt/],
  ];
  for (const [bad, pattern] of cases) {
    const result = await runCli(['--config', await writeConfig(work, bad), 'backup']);
    assert.equal(result.code, 2, result.stderr);
    const lines = errorLines(result.stderr);
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0] ?? '', pattern);
  }
});

test('the CLI backs up, lists, shows, verifies and extracts', async () => {
  const { doc } = setup('cli');
  const configFile = await writeConfig(work, doc);
  const made = await runCli(['--config', configFile, 'backup']);
  assert.equal(made.code, 0, made.stderr);
  const id = /backup (\S+) committed/.exec(made.stdout)?.[1];
  assert.ok(id, made.stdout);
  assert.match(made.stdout, /^retention: kept 1, deleted 0$/m, 'retention runs after the backup (retention.afterBackup)');
  const phases = made.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { phase?: string }).phase);
  assert.deepEqual(phases.filter(Boolean), ['cleanup', 'member-chosen', 'kit-collected', 'snapshot-started', 'archive-stored', 'committed', 'pruned']);
  assert.doesNotMatch(made.stderr, /AGE-SECRET-KEY/);
  const list = await runCli(['--config', configFile, 'list']);
  assert.match(list.stdout, new RegExp(`^${id!.replace('.', '\\.')}\\s`, 'm'));
  const shown = JSON.parse((await runCli(['--config', configFile, 'show', 'latest'])).stdout) as { backupId: string };
  assert.equal(shown.backupId, id);
  const verified = await runCli(['--config', configFile, 'verify', id!, '--identity', path.join(work, 'online.txt')]);
  assert.equal(verified.code, 0, verified.stderr);
  assert.match(verified.stdout, /OK \(decrypted/);
  const out = path.join(work, 'cli-extract');
  const extracted = await runCli(['--config', configFile, 'extract', 'latest', '--to', out, '--identity', path.join(work, 'online.txt')]);
  assert.equal(extracted.code, 0, extracted.stderr);
  assert.ok((await readdir(out)).includes('etcd'));
  const again = await runCli(['--config', configFile, 'extract', 'latest', '--to', out, '--identity', path.join(work, 'online.txt')]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /not empty/);
});

test('etcd killed mid-snapshot: the backup fails clearly, nothing is listed, no temp file is left', async () => {
  // A single member with ~48 MiB of data, so the snapshot is still streaming when it dies.
  const solo = await startEtcd({ tree: cluster.tree, members: 1, dataRoot: path.join(work, 'etcd-solo') });
  try {
    await populateRig(solo, { keys: 500, valueBytes: [90_000, 100_000], seed: 3, prefix: '/registry/bulk' });
    const storeDir = path.join(work, 'store-kill');
    const config = configOf(configDoc(solo, hostRoot, storeDir, [online.recipient]));
    const fs = new FsStore(storeDir);
    let killed = false;
    // A store that kills etcd once the first bytes have arrived, then keeps consuming.
    const store: BackupStore = Object.assign(Object.create(fs) as BackupStore, {
      put: (key: string, body: Readable) => {
        if (!key.endsWith('.age')) return fs.put(key, body);
        body.once('data', () => {
          if (!killed) {
            killed = true;
            solo.kill(solo.members[0]!.name, 'SIGKILL');
          }
        });
        return fs.put(key, body);
      },
    });
    await assert.rejects(backup(config, store), (err: unknown) => err instanceof EtcdUnavailableError && /snapshot stream .* failed after \d+ bytes/.test(err.message));
    assert.ok(killed);
    assert.deepEqual(await new Catalog(fs, config.cluster, { trust: TEST_TRUST }).list(), []);
    assert.deepEqual(await readdir(storeDir, { recursive: true }).catch(() => []), [], 'no file or directory is left');
  } finally {
    await solo.stop();
  }
});

test('etcd 3.5 backs up; etcdutl 3.6 verifies its snapshot and restores it into an etcd 3.6 that serves every key', async () => {
  const written: PopulateOptions = { keys: 200, valueBytes: [10, 1000], seed: 9 };
  const storeDir = path.join(work, 'store-35');
  const store = new FsStore(storeDir);
  const old = await startEtcd({ tree: cluster.tree, members: 1, version: '3.5', dataRoot: path.join(work, 'etcd-35') });
  let manifest: StoredManifest;
  try {
    await populateRig(old, written);
    manifest = await backup(configOf(configDoc(old, hostRoot, storeDir, [online.recipient])), store);
  } finally {
    await old.stop();
  }
  assert.match(manifest.etcd.version, /^3\.5\./);
  const report = await verifyBackup({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, { etcdutl: ETCDUTL, identities: [online.identity] });
  assert.equal(report.level, 'deep');
  assert.ok(report.snapshot!.status.totalKey >= written.keys);

  const out = path.join(work, 'extracted-35');
  await extractBackup({ store, decrypt: createDecryptStream, log: quietLog }, manifest, [online.identity], out);
  assert.match(await restoredServes(path.join(out, 'etcd/snapshot.db'), path.join(work, 'etcd-35-restored'), written), /^3\.6\./);
});
