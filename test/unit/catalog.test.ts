import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ArchiveError, NotFoundError, ObjectLockedError, StoreError } from '../../src/errors/errors.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { archiveKey, manifestKey, signatureKey, verificationKey } from '../../src/store/layout.ts';
import type { BackupStore } from '../../src/store/store.ts';
import { failedRecord, isVerified, passedRecord } from '../../src/verify/record.ts';
import { putBackup } from '../support/backups.ts';
import { runCli, writeConfig } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_TRUST } from '../support/signing.ts';

const DAY = 86_400_000;
const T0 = new Date('2026-11-20T03:00:00.000Z');
const at = (days: number) => new Date(T0.getTime() + days * DAY);

test('entries: committed backups newest first, each with the record of its last check; list() unchanged', async () => {
  const store = new MemoryStore();
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const a = await putBackup(store, 'c1', at(0));
  const b = await putBackup(store, 'c1', at(1));
  const c = await putBackup(store, 'c1', at(2));
  await putBackup(store, 'other', at(3));
  await store.put(archiveKey('c1', '20261124T000000.000Z-r9', 'none'), Readable.from([Buffer.from('uncommitted')]));
  await catalog.recordVerification(passedRecord(b.backupId, 'deep', at(1.5), 12.3456));
  const entries = await catalog.entries();
  assert.deepEqual(entries.map((e) => e.manifest.backupId), [c.backupId, b.backupId, a.backupId]);
  assert.equal(entries[0]!.verification, undefined);
  assert.deepEqual(entries[1]!.verification, {
    backupId: b.backupId,
    level: 'deep',
    result: 'passed',
    at: at(1.5).toISOString(),
    durationSeconds: 12.346,
    lastPassedAt: at(1.5).toISOString(),
    lastPassedLevel: 'deep',
    levels: { deep: { result: 'passed', at: at(1.5).toISOString() } },
  });
  assert.deepEqual((await catalog.list()).map((m) => m.backupId), [c.backupId, b.backupId, a.backupId]);
  assert.deepEqual(await catalog.list(), entries.map((e) => e.manifest));
});

test('recordVerification: a failure keeps when the backup last passed; a pass moves it; never for a missing backup', async () => {
  const store = new MemoryStore();
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const m = await putBackup(store, 'c1', at(0));
  const first = await catalog.recordVerification(failedRecord(m.backupId, 'ciphertext', at(1), 1, new StoreError('store down')));
  assert.deepEqual(first, {
    backupId: m.backupId,
    level: 'ciphertext',
    result: 'failed',
    at: at(1).toISOString(),
    durationSeconds: 1,
    error: { code: 'STORE_FAILED', message: 'store down' },
    levels: { ciphertext: { result: 'failed', at: at(1).toISOString(), error: { code: 'STORE_FAILED', message: 'store down' } } },
  });
  await catalog.recordVerification(passedRecord(m.backupId, 'ciphertext', at(2), 2));
  await catalog.recordVerification(passedRecord(m.backupId, 'deep', at(3), 30));
  const failed = await catalog.recordVerification(failedRecord(m.backupId, 'drill', at(4), 40, new Error('etcd did not start')));
  assert.deepEqual(failed, {
    backupId: m.backupId,
    level: 'drill',
    result: 'failed',
    at: at(4).toISOString(),
    durationSeconds: 40,
    error: { code: 'UNEXPECTED', message: 'etcd did not start' },
    lastPassedAt: at(3).toISOString(),
    lastPassedLevel: 'deep',
    // The newest result of each level is kept: the failed drill is not hidden by the passes before it.
    levels: {
      ciphertext: { result: 'passed', at: at(2).toISOString() },
      deep: { result: 'passed', at: at(3).toISOString() },
      drill: { result: 'failed', at: at(4).toISOString(), error: { code: 'UNEXPECTED', message: 'etcd did not start' } },
    },
  });
  assert.equal(isVerified(failed), false);
  // A second failure still knows the last pass.
  const again = await catalog.recordVerification(failedRecord(m.backupId, 'deep', at(5), 5, new ArchiveError('bad tar')));
  assert.equal(again.lastPassedAt, at(3).toISOString());
  assert.deepEqual(await catalog.verification(m.backupId), again);
  // Whatever the caller says of the last pass is not trusted.
  const lying = await catalog.recordVerification({
    ...failedRecord(m.backupId, 'deep', at(6), 1, new Error('x')),
    lastPassedAt: at(6).toISOString(),
    lastPassedLevel: 'drill',
    levels: { drill: { result: 'passed', at: at(6).toISOString() } },
  });
  assert.equal(lying.lastPassedAt, at(3).toISOString());
  assert.equal(lying.lastPassedLevel, 'deep');
  assert.equal(lying.levels?.drill?.result, 'failed');
  // A ciphertext pass does not hide the failed drill; a drill that passes makes it verified again.
  assert.equal(isVerified(await catalog.recordVerification(passedRecord(m.backupId, 'ciphertext', at(7), 1))), false);
  assert.equal(isVerified(await catalog.recordVerification(passedRecord(m.backupId, 'drill', at(8), 1))), true);

  const missing = '20261124T000000.000Z-r1';
  await assert.rejects(catalog.recordVerification(passedRecord(missing, 'deep', at(1), 1)), NotFoundError);
  assert.equal(await store.stat(verificationKey('c1', missing)), undefined);
  assert.equal(await catalog.verification(m.backupId.replace('-r', '-r9')), undefined);
});

test('isVerified: the newest check at the deepest level run decides, and a later failure of any level undoes it', () => {
  const id = '20261124T000000.000Z-r1';
  const iso = (days: number) => at(days).toISOString();
  // A record written before levels were kept knows only its last check.
  assert.equal(isVerified(passedRecord(id, 'ciphertext', at(1), 1)), true);
  assert.equal(isVerified(failedRecord(id, 'drill', at(1), 1, new Error('x'))), false);
  assert.equal(isVerified(undefined), false);
  const last = passedRecord(id, 'ciphertext', at(3), 1);
  assert.equal(isVerified({ ...last, levels: { ciphertext: { result: 'passed', at: iso(3) }, drill: { result: 'failed', at: iso(2) } } }), false);
  assert.equal(isVerified({ ...last, levels: { ciphertext: { result: 'passed', at: iso(3) }, deep: { result: 'passed', at: iso(2) } } }), true);
  // The archive no longer matches its manifest after the drill passed: not verified any more.
  const broken = failedRecord(id, 'ciphertext', at(3), 1, new Error('sha256 mismatch'));
  assert.equal(isVerified({ ...broken, levels: { ciphertext: { result: 'failed', at: iso(3) }, drill: { result: 'passed', at: iso(2) } } }), false);
  assert.equal(isVerified({ ...broken, levels: { ciphertext: { result: 'failed', at: iso(1) }, drill: { result: 'passed', at: iso(2) } } }), true);
});

test('a backup dated further in the future than the clock bound is flagged and never taken as latest', async () => {
  const now = at(10);
  const store = new MemoryStore({ now: () => now });
  const flagged: string[][] = [];
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now, maxClockSkewSeconds: 300, onFutureDated: (ids) => flagged.push([...ids]) });
  const old = await putBackup(store, 'c1', at(9));
  const slightlyAhead = await putBackup(store, 'c1', new Date(now.getTime() + 60_000)); // within the bound: trusted
  const future = await putBackup(store, 'c1', at(40)); // a node whose clock ran a month ahead
  assert.equal((await catalog.resolve('latest')).backupId, slightlyAhead.backupId);
  const entries = await catalog.entries();
  assert.deepEqual(entries.map((e) => [e.manifest.backupId, e.futureDated ?? false]), [[future.backupId, true], [slightlyAhead.backupId, false], [old.backupId, false]]);
  assert.deepEqual(flagged, [[future.backupId]]);
  // A page of the listing flags too, but only the whole catalogue reports the set.
  assert.equal((await catalog.entries({ limit: 1 }))[0]!.futureDated, true);
  assert.equal(flagged.length, 1);
  // With only future-dated backups there is no latest to trust.
  await catalog.deleteBackup(slightlyAhead.backupId);
  await catalog.deleteBackup(old.backupId);
  await assert.rejects(catalog.resolve('latest'), (err: unknown) => err instanceof NotFoundError && /in the future/.test(err.message));
  // Once the clock reaches it, it is an ordinary backup.
  const later = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => at(40) });
  assert.equal((await later.resolve('latest')).backupId, future.backupId);
  assert.equal((await later.entries())[0]!.futureDated, undefined);
});

test('a corrupt verification record is an error naming its key; the next check replaces it', async () => {
  const store = new MemoryStore();
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const m = await putBackup(store, 'c1', at(0));
  const key = verificationKey('c1', m.backupId);
  await store.put(key, Readable.from([Buffer.from('{"backupId": 1}')]));
  await assert.rejects(catalog.verification(m.backupId), (err: unknown) => err instanceof ArchiveError && err.message.includes(key) && /is invalid at \//.test(err.message));
  await assert.rejects(catalog.entries(), ArchiveError);
  const stored = await catalog.recordVerification(failedRecord(m.backupId, 'ciphertext', at(1), 1, new Error('x')));
  assert.equal(stored.lastPassedAt, undefined);
  assert.equal((await catalog.entries())[0]!.verification?.result, 'failed');
  // A record of another backup under this key is not taken for this one.
  await store.put(key, Readable.from([Buffer.from(JSON.stringify(passedRecord('20261124T000000.000Z-r1', 'deep', at(1), 1)))]));
  await assert.rejects(catalog.verification(m.backupId), ArchiveError);
});

/** A store that records the order of deletes and can fail the delete of one key. */
function recording(store: MemoryStore, failKey?: string): { store: BackupStore; deletes: string[] } {
  const deletes: string[] = [];
  const wrapped: BackupStore = Object.assign(Object.create(store) as BackupStore, {
    delete: async (key: string) => {
      if (key === failKey) throw new StoreError(`cannot delete ${key}`);
      deletes.push(key);
      return store.delete(key);
    },
  });
  return { store: wrapped, deletes };
}

test('deleteBackup: manifest first, then its signature, the archive, and the verification record', async () => {
  const memory = new MemoryStore();
  const { store, deletes } = recording(memory);
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const keep = await putBackup(memory, 'c1', at(0));
  const m = await putBackup(memory, 'c1', at(1));
  await catalog.recordVerification(passedRecord(m.backupId, 'ciphertext', at(1), 1));
  await catalog.deleteBackup(m.backupId);
  assert.deepEqual(deletes, [manifestKey('c1', m.backupId), signatureKey('c1', m.backupId), m.archive.key, verificationKey('c1', m.backupId)]);
  assert.deepEqual([...memory.objects.keys()].filter((k) => k.includes(m.backupId)), []);
  assert.deepEqual((await catalog.list()).map((b) => b.backupId), [keep.backupId]);
  await assert.rejects(catalog.deleteBackup(m.backupId), NotFoundError);
});

test('deleteBackup: when the archive cannot be deleted, the backup is already gone from the list; a retry or cleanup finishes', async () => {
  const memory = new MemoryStore();
  const m = await putBackup(memory, 'c1', at(0));
  const failing = new Catalog(recording(memory, m.archive.key).store, 'c1', { trust: TEST_TRUST });
  await assert.rejects(failing.deleteBackup(m.backupId), StoreError);
  assert.deepEqual(await failing.list(), []);
  assert.ok(await memory.stat(m.archive.key), 'the archive is left');
  const catalog = new Catalog(memory, 'c1', { trust: TEST_TRUST });
  await catalog.deleteBackup(m.backupId);
  assert.deepEqual([...memory.objects.keys()], []);
});

test('deleteBackup refuses a locked backup and deletes nothing; lockOf tells why; once the lock ends it goes', async () => {
  let now = at(0);
  const memory = new MemoryStore({ retentionDays: 7, now: () => now });
  const { store, deletes } = recording(memory);
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now });
  const m = await putBackup(memory, 'c1', at(0));
  now = at(1);
  await catalog.recordVerification(passedRecord(m.backupId, 'ciphertext', at(1), 1));
  const before = [...memory.objects.keys()];
  assert.equal(before.length, 4, 'archive, signature, manifest, verification record');
  assert.deepEqual(await catalog.lockOf(m.backupId), { key: m.archive.key, retainUntil: at(7) });
  // The lock that holds the backup longest is the one reported.
  memory.lock(manifestKey('c1', m.backupId), { retainUntil: at(9) });
  assert.deepEqual(await catalog.lockOf(m.backupId), { key: manifestKey('c1', m.backupId), retainUntil: at(9) });
  await assert.rejects(catalog.deleteBackup(m.backupId), (err: unknown) => {
    assert.ok(err instanceof ObjectLockedError);
    assert.equal(err.key, manifestKey('c1', m.backupId));
    assert.deepEqual(err.retainUntil, at(9));
    assert.match(err.message, /retention until 2026-11-29T03:00:00.000Z/);
    return true;
  });
  // Only the manifest still locked: refused all the same, the archive stays.
  now = at(8);
  await assert.rejects(catalog.deleteBackup(m.backupId), ObjectLockedError);
  assert.deepEqual(deletes, []);
  assert.deepEqual([...memory.objects.keys()], before);

  // Only the archive under a legal hold, the retention over: still refused, nothing deleted.
  now = at(10);
  memory.lock(m.archive.key, { legalHold: true });
  assert.deepEqual(await catalog.lockOf(m.backupId), { key: m.archive.key, legalHold: true });
  await assert.rejects(catalog.deleteBackup(m.backupId), (err: unknown) => err instanceof ObjectLockedError && /legal hold/.test(err.message) && err.retainUntil === undefined);
  assert.deepEqual(deletes, []);

  memory.lock(m.archive.key, {});
  assert.equal(await catalog.lockOf(m.backupId), undefined);
  await catalog.deleteBackup(m.backupId);
  assert.deepEqual(memory.objects.size, 0);
});

test('deleteBackup also refuses while the verification record is locked (a bucket default retention), deleting nothing', async () => {
  const memory = new MemoryStore({ now: () => at(1) });
  const catalog = new Catalog(memory, 'c1', { trust: TEST_TRUST, now: () => at(1) });
  const m = await putBackup(memory, 'c1', at(0));
  await catalog.recordVerification(passedRecord(m.backupId, 'deep', at(1), 1));
  memory.lock(verificationKey('c1', m.backupId), { retainUntil: at(2) });
  await assert.rejects(catalog.deleteBackup(m.backupId), (err: unknown) => err instanceof ObjectLockedError && err.key === verificationKey('c1', m.backupId));
  assert.equal(memory.objects.size, 4);
});

test('cleanup removes records of deleted backups and unlocked orphan archives, and reports locked orphans', async () => {
  let now = at(0);
  const memory = new MemoryStore({ retentionDays: 3, now: () => now });
  const catalog = new Catalog(memory, 'c1', { trust: TEST_TRUST, now: () => now });
  const m = await putBackup(memory, 'c1', at(0));
  const lockedOrphan = archiveKey('c1', '20261119T000000.000Z-r1', 'none');
  const freeOrphan = archiveKey('c1', '20261119T000000.000Z-r2', 'none');
  await memory.put(lockedOrphan, Readable.from([Buffer.from('a')]), { retain: true });
  await memory.put(freeOrphan, Readable.from([Buffer.from('b')]));
  const strayRecord = verificationKey('c1', '20261119T000000.000Z-r3');
  await memory.put(strayRecord, Readable.from([Buffer.from('{}')]));
  await catalog.recordVerification(passedRecord(m.backupId, 'deep', at(0), 1));
  now = at(1);
  const result = await catalog.cleanup(at(1));
  assert.deepEqual(result, { orphans: [freeOrphan, strayRecord], locked: [lockedOrphan], incomplete: 0 });
  assert.ok(await memory.stat(verificationKey('c1', m.backupId)), "a committed backup's record stays");
  now = at(4);
  assert.deepEqual(await catalog.cleanup(at(4)), { orphans: [lockedOrphan], incomplete: 0 });
});

test('lifeboat verify records passed and failed checks; lifeboat list shows them in VERIFIED and in --json', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-verified-'));
  try {
    const store = new FsStore(path.join(dir, 'store'));
    const good = await putBackup(store, 'c1', at(0));
    const bad = await putBackup(store, 'c1', at(1));
    const unchecked = await putBackup(store, 'c1', at(2));
    await writeFile(path.join(dir, 'store', bad.archive.key), 'tampered');
    const config = await writeConfig(dir, { cluster: 'c1', node: 'n1', kit: { hostRoot: dir }, store: { fs: { dir: path.join(dir, 'store') } }, signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] }, log: { level: 'error' } });

    const passed = await runCli(['--config', config, 'verify', good.backupId]);
    assert.equal(passed.code, 0, passed.stderr);
    assert.match(passed.stdout, /OK \(archive size and sha256 match/);
    const failed = await runCli(['--config', config, 'verify', bad.backupId]);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /error: archive .* is 8 bytes, but its manifest says 1024/);

    const list = await runCli(['--config', config, 'list']);
    assert.equal(list.code, 0, list.stderr);
    const [header, ...rows] = list.stdout.trimEnd().split('\n');
    assert.match(header!, /^ID +CREATED +REVISION +DB +STORED +VERIFIED +KIT +NODE +MEMBER$/);
    const column = (id: string) => rows.find((r) => r.startsWith(id))!.slice(header!.indexOf('VERIFIED')).split(/ {2,}/)[0];
    const minute = (d: Date) => `${d.toISOString().slice(0, 16)}Z`;
    const records = new Catalog(store, 'c1', { trust: TEST_TRUST });
    const goodAt = new Date((await records.verification(good.backupId))!.at);
    const badAt = new Date((await records.verification(bad.backupId))!.at);
    assert.equal(column(good.backupId), `ciphertext ${minute(goodAt)}`);
    assert.equal(column(bad.backupId), `FAILED ciphertext ${minute(badAt)}`);
    assert.equal(column(unchecked.backupId), '-');

    const json = await runCli(['--config', config, 'list', '--json']);
    const listed = JSON.parse(json.stdout) as { backupId: string; verification: { result: string; error?: { code: string } } | null }[];
    assert.deepEqual(listed.map((b) => [b.backupId, b.verification?.result ?? null]), [[unchecked.backupId, null], [bad.backupId, 'failed'], [good.backupId, 'passed']]);
    assert.equal(listed[1]!.verification!.error!.code, 'INTEGRITY_MISMATCH');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
