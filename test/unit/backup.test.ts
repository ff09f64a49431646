import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { runBackup, type BackupSettings } from '../../src/backup/run.ts';
import { createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { EtcdUnavailableError, SnapshotError, StoreError, type LifeboatError } from '../../src/errors/errors.ts';
import type { EtcdFacts } from '../../src/archive/manifest.ts';
import type { OpenSnapshot, SnapshotSource } from '../../src/etcd/source.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/log/logger.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { archiveKey, formatBackupId, manifestKey } from '../../src/store/layout.ts';
import type { PutOptions } from '../../src/store/store.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { chunked, fakeSnapshot, sampleManifest } from '../support/fixtures.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-backup-unit-'));
test.after(() => rm(work, { recursive: true, force: true }));
const hostRoot = path.join(work, 'host');
await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'));
const { recipient } = await generateIdentity();
const config = resolveConfig({ cluster: 'unit', kit: { hostRoot } });
const settings: BackupSettings = { cluster: 'unit', node: 'n1', kit: config.kit, compression: { algorithm: 'zstd', level: 1 }, recipients: [recipient], progressIntervalSeconds: 60, maxClockSkewSeconds: 300 };
const facts: EtcdFacts = sampleManifest(0, []).etcd;

/** A SnapshotSource that streams the given file bytes, announcing `dbSize`. */
function fakeSource(file: Buffer, dbSize: number, failAfter?: number): SnapshotSource {
  return {
    chooseMember: async () => facts,
    openSnapshot: async (): Promise<OpenSnapshot> => ({
      dbSize,
      chunks: (async function* () {
        let sent = 0;
        for await (const c of chunked(file, 32768)) {
          if (failAfter !== undefined && sent >= failAfter) throw new EtcdUnavailableError('the snapshot stream failed: 14 UNAVAILABLE');
          sent += c.length;
          yield c;
        }
      })(),
    }),
    close: async () => undefined,
  };
}

async function attempt(name: string, source: SnapshotSource) {
  const store = new FsStore(path.join(work, name));
  const deps = { store, etcd: source, encrypt: createEncryptStream, log: createLogger('silent'), now: () => new Date(), signer: TEST_SIGNER, previous: async () => undefined };
  return { store, run: () => runBackup(deps, settings) };
}

test('a good snapshot commits: archive first, then the signature, manifest last, listed by the catalog', async () => {
  const db = randomBytes(300_000);
  const { store, run } = await attempt('good', fakeSource(fakeSnapshot(db), db.length));
  const manifest = await run();
  assert.equal(manifest.snapshot.size, db.length + 32);
  assert.deepEqual((await store.list('unit/')).map((o) => o.key).sort(), [manifest.archive.key, `unit/backups/${manifest.backupId}/manifest.json`, `unit/backups/${manifest.backupId}/manifest.json.sig`].sort());
  assert.deepEqual((await new Catalog(store, 'unit', { trust: TEST_TRUST }).list()).map((m) => m.backupId), [manifest.backupId]);
});

test('a snapshot whose sha256 trailer does not match fails the backup and commits nothing', async () => {
  const db = randomBytes(300_000);
  const bad = fakeSnapshot(db);
  bad[1000] = (bad[1000] ?? 0) ^ 1;
  const { store, run } = await attempt('bad-trailer', fakeSource(bad, db.length));
  await assert.rejects(run(), (err: unknown) => err instanceof SnapshotError && /trailer mismatch/.test(err.message));
  assert.deepEqual(await readdir(path.join(work, 'bad-trailer'), { recursive: true }).catch(() => []), []);
  assert.deepEqual(await store.list(''), []);
});

test('a short snapshot and a dropped stream fail and leave nothing', async () => {
  const db = randomBytes(300_000);
  for (const [name, source] of [
    ['short', fakeSource(fakeSnapshot(db).subarray(0, 200_000), db.length)],
    ['dropped', fakeSource(fakeSnapshot(db), db.length, 100_000)],
  ] as const) {
    const { run } = await attempt(name, source);
    await assert.rejects(run(), name === 'short' ? SnapshotError : EtcdUnavailableError);
    assert.deepEqual(await readdir(path.join(work, name), { recursive: true }).catch(() => []), [], name);
  }
});

test('cleanup removes old uncommitted archives and leaves young ones and committed backups', async () => {
  const db = randomBytes(1000);
  const { store, run } = await attempt('cleanup', fakeSource(fakeSnapshot(db), db.length));
  const committed = await run();
  const oldKey = archiveKey('unit', formatBackupId(new Date('2026-01-01T00:00:00Z'), '5'), 'zstd');
  const youngKey = archiveKey('unit', formatBackupId(new Date(), '6'), 'zstd');
  await store.put(oldKey, Readable.from([Buffer.from('orphan')]));
  await store.put(youngKey, Readable.from([Buffer.from('in progress')]));
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
  await utimes(path.join(work, 'cleanup', oldKey), twoHoursAgo, twoHoursAgo);
  const result = await new Catalog(store, 'unit', { trust: TEST_TRUST }).cleanup(new Date(Date.now() - 3600_000));
  assert.deepEqual(result, { orphans: [oldKey], incomplete: 0 });
  assert.ok(await store.stat(youngKey));
  assert.ok(await store.stat(committed.archive.key));
});

test('a store that fails before reading anything fails the backup instead of hanging', async () => {
  const db = randomBytes(300_000);
  const blocker = path.join(work, 'blocker-file');
  await writeFile(blocker, 'x');
  const deps = { store: new FsStore(blocker), etcd: fakeSource(fakeSnapshot(db), db.length), encrypt: createEncryptStream, log: createLogger('silent'), now: () => new Date(), signer: TEST_SIGNER, previous: async () => undefined };
  await assert.rejects(runBackup(deps, settings), StoreError);
});

/** A store whose manifest puts land but answer with an error (a lost response), and whose manifest deletes may fail. */
class LostManifestAnswerStore extends MemoryStore {
  failManifestDelete = false;

  override async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const put = await super.put(key, body, options);
    if (key.endsWith('/manifest.json')) throw new StoreError(`memory: ${key}: connection reset before the answer`);
    return put;
  }

  override async delete(key: string): Promise<void> {
    if (this.failManifestDelete && key.endsWith('/manifest.json')) throw new StoreError(`memory: ${key}: delete failed`);
    return super.delete(key);
  }
}

test('a manifest put that landed but reported failure leaves no listed backup without its archive', async () => {
  const db = randomBytes(100_000);
  const store = new LostManifestAnswerStore();
  const deps = { store, etcd: fakeSource(fakeSnapshot(db), db.length), encrypt: createEncryptStream, log: createLogger('silent'), now: () => new Date(), signer: TEST_SIGNER, previous: async () => undefined };
  await assert.rejects(runBackup(deps, settings), StoreError);
  // Manifest first, then the archive: nothing is listed, and nothing is left.
  assert.deepEqual(await new Catalog(store, 'unit', { trust: TEST_TRUST }).list(), []);
  assert.deepEqual(await store.list('unit/'), []);

  // When the manifest cannot be deleted, the archive it points at is kept: the listed backup stays whole.
  const stuck = new LostManifestAnswerStore();
  stuck.failManifestDelete = true;
  await assert.rejects(runBackup({ ...deps, store: stuck }, settings), StoreError);
  const [listed] = await new Catalog(stuck, 'unit', { trust: TEST_TRUST }).list();
  assert.ok(listed, 'the landed manifest is listed');
  assert.equal((await stuck.stat(listed.archive.key))?.size, listed.archive.size, 'its archive is still there');
  assert.ok(await stuck.stat(manifestKey('unit', listed.backupId)));
});

test("a node whose clock is off from the store's by more than backup.maxClockSkewSeconds commits no backup", async () => {
  const db = randomBytes(50_000);
  const bounded = { ...settings, maxClockSkewSeconds: 300 };
  for (const [name, offsetSeconds, commits] of [
    ['an hour ahead', 3600, false],
    ['an hour behind', -3600, false],
    ['a minute ahead, within the bound', 60, true],
  ] as const) {
    // The store stamps objects with its own clock; the node's clock (deps.now) is off from it.
    const store = new MemoryStore({ now: () => new Date() });
    const deps = { store, etcd: fakeSource(fakeSnapshot(db), db.length), encrypt: createEncryptStream, log: createLogger('silent'), now: () => new Date(Date.now() + offsetSeconds * 1000), signer: TEST_SIGNER, previous: async () => undefined };
    const run = runBackup(deps, bounded);
    if (commits) {
      const manifest = await run;
      assert.deepEqual((await new Catalog(store, 'unit', { trust: TEST_TRUST }).list()).map((m) => m.backupId), [manifest.backupId], name);
      continue;
    }
    await assert.rejects(run, (err: unknown) => (err as LifeboatError).code === 'CLOCK_SKEW' && /backup\.maxClockSkewSeconds/.test((err as Error).message), name);
    assert.deepEqual(await store.list('unit/'), [], `${name}: nothing committed, nothing left`);
  }
});
