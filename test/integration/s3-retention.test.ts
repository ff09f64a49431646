import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { HeadObjectCommand, ListObjectVersionsCommand, PutObjectLegalHoldCommand } from '@aws-sdk/client-s3';
import { ObjectLockedError, StoreError } from '../../src/errors/errors.ts';
import { prune } from '../../src/retention/prune.ts';
import type { RetentionPolicy } from '../../src/retention/policy.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.ts';
import { failedRecord } from '../../src/verify/record.ts';
import { putBackup } from '../support/backups.ts';
import { storedSha256 as sha256Of } from '../support/fixtures.ts';
import { quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { startS3Rig } from '../support/s3-rig.ts';
import { storeConformance } from '../support/store-conformance.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_TRUST } from '../support/signing.ts';

const LOCKED = 'lifeboat-lock';
const PLAIN = 'lifeboat-plain';
const rig = await startS3Rig('lock', { buckets: [PLAIN], objectLockBuckets: [LOCKED] });
after(() => rig.stop());
const { work, rgw, s3 } = rig;

const DAY = 86_400_000;
const LAST_ONE: RetentionPolicy = { keepLast: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0 };
const T0 = new Date('2026-11-01T03:00:00.000Z');
const day = (n: number) => new Date(T0.getTime() + n * DAY);

const options = (bucket: string, prefix: string, objectLock?: S3StoreOptions['objectLock']) => rig.storeOptions({ bucket, prefix, objectLock });

/** Every version and delete marker under `prefix` of the locked bucket. */
async function versions(prefix: string): Promise<{ versions: string[]; markers: string[] }> {
  const res = await s3.send(new ListObjectVersionsCommand({ Bucket: LOCKED, Prefix: prefix }));
  return { versions: (res.Versions ?? []).map((v) => v.Key!), markers: (res.DeleteMarkers ?? []).map((m) => m.Key!) };
}

// Object Lock implies a versioned bucket: the store contract (delete really deletes) holds there too.
let n = 0;
storeConformance('rgw, Object Lock bucket', async () => new S3Store(options(LOCKED, `conformance-${n++}/`, { mode: 'GOVERNANCE', days: 1 })));

test('rgw GOVERNANCE: retained puts are locked (multipart too); prune skips and reports them, deletes the rest completely', async () => {
  const prefix = 'gov/';
  const store = new S3Store(options(LOCKED, prefix, { mode: 'GOVERNANCE', days: 1 }));
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const started = Date.now();
  const b0 = await putBackup(store, 'c1', day(0), { retain: false });
  const b1 = await putBackup(store, 'c1', day(1), { archiveBytes: 6 * 1024 * 1024 }); // multipart: two parts
  const b2 = await putBackup(store, 'c1', day(2), { retain: false });
  const b3 = await putBackup(store, 'c1', day(3), { retain: false });
  const b4 = await putBackup(store, 'c1', day(4));
  // Two failed checks of b0: two versions of its verification record.
  await catalog.recordVerification(failedRecord(b0.backupId, 'ciphertext', day(5), 1, new Error('first')));
  await catalog.recordVerification(failedRecord(b0.backupId, 'ciphertext', day(5), 1, new Error('second')));
  // b3 is under a legal hold, on its manifest only.
  await s3.send(new PutObjectLegalHoldCommand({ Bucket: LOCKED, Key: `${prefix}c1/backups/${b3.backupId}/manifest.json`, LegalHold: { Status: 'ON' } }));

  // What the store says of the locks: the multipart archive has its retention too (Pacific's RGW
  // drops the lock headers of CreateMultipartUpload; the store applies it afterwards).
  for (const key of [b1.archive.key, `c1/backups/${b1.backupId}/manifest.json`]) {
    const head = await s3.send(new HeadObjectCommand({ Bucket: LOCKED, Key: prefix + key }));
    assert.equal(head.ObjectLockMode, 'GOVERNANCE', key);
    const until = head.ObjectLockRetainUntilDate!.getTime();
    assert.ok(until >= started + DAY - 1000 && until <= Date.now() + DAY, `${key} retained for a day: ${head.ObjectLockRetainUntilDate?.toISOString()}`);
    const info = await store.stat(key);
    assert.deepEqual(info?.retainUntil, head.ObjectLockRetainUntilDate);
    assert.equal(info?.legalHold, undefined);
  }
  assert.equal((await store.stat(b0.archive.key))?.retainUntil, undefined);
  assert.equal((await store.stat(`c1/backups/${b3.backupId}/manifest.json`))?.legalHold, true);
  const b1Sha = await sha256Of(store, b1.archive.key);
  assert.equal(b1Sha, b1.archive.sha256);

  // A locked object is not deleted, and no delete marker hides it.
  await assert.rejects(store.delete(b1.archive.key), (err: unknown) => {
    assert.ok(err instanceof ObjectLockedError);
    assert.equal(err.key, b1.archive.key);
    assert.ok(err.retainUntil && err.retainUntil.getTime() > Date.now());
    assert.match(err.message, /under GOVERNANCE retention until \d{4}-/);
    return true;
  });
  assert.deepEqual((await versions(`${prefix}c1/backups/${b1.backupId}/`)).markers, []);
  assert.equal(await sha256Of(store, b1.archive.key), b1.archive.sha256);

  const dry = await prune({ catalog, log: quietLog }, LAST_ONE, { dryRun: true, timeZone: 'UTC' });
  assert.deepEqual(dry.deleted, [b2.backupId, b0.backupId]);
  assert.deepEqual((await catalog.list()).length, 5, 'a dry run deletes nothing');

  const report = await prune({ catalog, log: quietLog }, LAST_ONE, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(report.kept, [{ id: b4.backupId, reasons: ['last', 'newest'] }]);
  assert.deepEqual(report.deleted, [b2.backupId, b0.backupId]);
  assert.deepEqual(report.failed, []);
  assert.deepEqual(report.locked.map((l) => [l.id, l.legalHold ?? false, l.retainUntil !== undefined]), [
    [b3.backupId, true, false],
    [b1.backupId, false, true],
  ]);
  assert.ok(new Date(report.locked[1]!.retainUntil!).getTime() > Date.now() + DAY - 60_000);

  // Deleted completely: no version and no delete marker of any of their objects.
  for (const gone of [b0, b2]) assert.deepEqual(await versions(`${prefix}c1/backups/${gone.backupId}/`), { versions: [], markers: [] }, gone.backupId);
  // Locked ones are listed and readable after prune.
  assert.deepEqual((await catalog.list()).map((m) => m.backupId), [b4.backupId, b3.backupId, b1.backupId]);
  assert.equal(await sha256Of(store, b1.archive.key), b1.archive.sha256);
  assert.equal(await sha256Of(store, b3.archive.key), b3.archive.sha256);
  assert.deepEqual((await versions(prefix)).markers, []);
});

test('rgw COMPLIANCE: lifeboat prune reports the locked backup and deletes the unlocked one', async () => {
  const prefix = 'comp/';
  const store = new S3Store(options(LOCKED, prefix, { mode: 'COMPLIANCE', days: 1 }));
  const b0 = await putBackup(store, 'c1', day(0));
  const b1 = await putBackup(store, 'c1', day(1), { retain: false });
  const b2 = await putBackup(store, 'c1', day(2));
  const head = await s3.send(new HeadObjectCommand({ Bucket: LOCKED, Key: prefix + b0.archive.key }));
  assert.equal(head.ObjectLockMode, 'COMPLIANCE');
  await assert.rejects(store.delete(b0.archive.key), ObjectLockedError);

  const config = await writeConfig(work, {
    cluster: 'c1',
    node: 'n1',
    kit: { hostRoot: work },
    store: { s3: { endpoint: rgw.endpoint, region: rgw.region, bucket: LOCKED, prefix, objectLock: { mode: 'COMPLIANCE', days: 1 } } },
    retention: { keepLast: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
    signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] },
    log: { level: 'error' },
  });
  const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
  const result = await runCli(['--config', config, 'prune', '--json'], env);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as { deleted: string[]; locked: { id: string; retainUntil?: string }[]; failed: unknown[] };
  assert.deepEqual(report.deleted, [b1.backupId]);
  assert.deepEqual(report.locked.map((l) => l.id), [b0.backupId]);
  // The backup goes once its last lock ends: the manifest's, written after the archive.
  const manifestHead = await s3.send(new HeadObjectCommand({ Bucket: LOCKED, Key: `${prefix}c1/backups/${b0.backupId}/manifest.json` }));
  assert.equal(manifestHead.ObjectLockMode, 'COMPLIANCE');
  assert.equal(report.locked[0]!.retainUntil, manifestHead.ObjectLockRetainUntilDate!.toISOString());
  assert.deepEqual(report.failed, []);
  assert.deepEqual(await versions(`${prefix}c1/backups/${b1.backupId}/`), { versions: [], markers: [] });
  assert.deepEqual((await new Catalog(store, 'c1', { trust: TEST_TRUST }).list()).map((m) => m.backupId), [b2.backupId, b0.backupId]);
  assert.equal(await sha256Of(store, b0.archive.key), b0.archive.sha256);
});

test('rgw: Object Lock configured on a bucket without it fails the put clearly and leaves nothing', async () => {
  const store = new S3Store(options(PLAIN, 'nolock/', { mode: 'GOVERNANCE', days: 1 }));
  for (const size of [1000, 6 * 1024 * 1024]) {
    await assert.rejects(store.put(`k/${size}`, Readable.from([randomBytes(size)]), { retain: true }), (err: unknown) => {
      assert.ok(err instanceof StoreError, String(err));
      assert.match(err.hint ?? '', /must have been created with Object Lock enabled/);
      return true;
    });
    assert.equal(await store.stat(`k/${size}`), undefined, `${size}: nothing visible`);
  }
  // Without retain the same store writes as ever.
  await store.put('k/plain', Readable.from([Buffer.from('x')]));
  assert.equal((await store.stat('k/plain'))?.size, 1);
});
