import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { commitSegment } from '../../src/changes/commit.ts';
import { eventLine } from '../../src/changes/format.ts';
import { checkChain, readTrustedSegment, segmentIds, type TrustedSegment } from '../../src/changes/manifest.ts';
import { createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { CancelledError, StoreError } from '../../src/errors/errors.ts';
import { prune } from '../../src/retention/prune.ts';
import { summary } from '../../src/cli/prune-command.ts';
import type { RetentionPolicy } from '../../src/retention/policy.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { formatSegmentId, verificationKey } from '../../src/store/layout.ts';
import type { BackupStore } from '../../src/store/store.ts';
import { failedRecord, passedRecord } from '../../src/verify/record.ts';
import { putBackup } from '../support/backups.ts';
import { quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const DAY = 86_400_000;
const T0 = new Date('2026-11-01T03:00:00.000Z');
const day = (n: number) => new Date(T0.getTime() + n * DAY);
const ageKey = await generateIdentity();
const LAST_TWO: RetentionPolicy = { keepLast: 2, hourly: 0, daily: 0, weekly: 0, monthly: 0 };

function capturingLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

/** Six daily backups, day 0 (oldest) to day 5, in a store whose puts with `retain` lock for `days`. */
async function sixBackups(now: () => Date, retentionDays?: number) {
  const store = new MemoryStore({ now, ...(retentionDays === undefined ? {} : { retentionDays }) });
  const ids: string[] = [];
  for (let n = 0; n < 6; n += 1) ids.push((await putBackup(store, 'c1', day(n), { retain: false })).backupId);
  return { store, ids };
}

function objectsOf(store: MemoryStore, id: string): string[] {
  return [...store.objects.keys()].filter((k) => k.includes(id)).map((k) => k.slice(k.lastIndexOf('/') + 1));
}

test('prune deletes what the policy does not keep, skips and reports the locked, goes on past a failed delete', async () => {
  const now = day(6);
  const { store: memory, ids } = await sixBackups(() => now);
  const catalog0 = new Catalog(memory, 'c1', { trust: TEST_TRUST, now: () => now });
  await catalog0.recordVerification(passedRecord(ids[1]!, 'deep', day(1), 10)); // the newest verified
  await catalog0.recordVerification(passedRecord(ids[0]!, 'deep', day(1), 10));
  await catalog0.recordVerification(failedRecord(ids[3]!, 'deep', day(4), 10, new Error('bad'))); // not verified
  memory.lock(`c1/backups/${ids[2]}/archive.tar.age`, { retainUntil: day(30) });
  memory.lock(`c1/backups/${ids[0]}/manifest.json`, { legalHold: true });
  // The archive of day 3 cannot be deleted: the store fails.
  const failKey = `c1/backups/${ids[3]}/archive.tar.age`;
  const store: BackupStore = Object.assign(Object.create(memory) as BackupStore, {
    delete: async (key: string) => {
      if (key === failKey) throw new StoreError('memory: injected failure');
      return memory.delete(key);
    },
  });
  const { log, lines } = capturingLog();
  const report = await prune({ catalog: new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now }), log }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });

  assert.deepEqual(report, {
    dryRun: false,
    kept: [
      { id: ids[5], reasons: ['last', 'newest'] },
      { id: ids[4], reasons: ['last'] },
      { id: ids[1], reasons: ['newest-verified'] },
    ],
    deleted: [],
    locked: [
      { id: ids[2], retainUntil: day(30).toISOString() },
      { id: ids[0], legalHold: true },
    ],
    failed: [{ id: ids[3], code: 'STORE_FAILED', message: 'memory: injected failure' }],
  });
  // The failed one lost its manifest first: no longer listed; its archive is left for a retry or cleanup.
  assert.deepEqual(objectsOf(memory, ids[3]!), ['archive.tar.age', 'verification.json']);
  // Locked and kept backups are untouched.
  for (const id of [ids[0]!, ids[1]!, ids[2]!, ids[4]!, ids[5]!]) assert.ok(objectsOf(memory, id).includes('manifest.json'), id);
  assert.deepEqual((await catalog0.list()).map((m) => m.backupId), [ids[5], ids[4], ids[2], ids[1], ids[0]]);

  const pruneLines = lines.filter((l) => l.phase === 'prune');
  assert.deepEqual(pruneLines.map((l) => [l.action, l.backupId]), [
    ['failed', ids[3]],
    ['locked', ids[2]],
    ['locked', ids[0]],
  ]);
  assert.equal(pruneLines[1]!.retainUntil, day(30).toISOString());
  const summary = lines.filter((l) => l.phase === 'pruned');
  assert.equal(summary.length, 1);
  const { backups, kept, deleted, locked, failed, dryRun } = summary[0]!;
  assert.deepEqual({ backups, kept, deleted, locked, failed, dryRun }, { backups: 6, kept: 3, deleted: 0, locked: 2, failed: 1, dryRun: false });

  // With the store healthy and the locks gone, the next prune finishes.
  memory.lock(`c1/backups/${ids[2]}/archive.tar.age`, {});
  memory.lock(`c1/backups/${ids[0]}/manifest.json`, {});
  const again = await prune({ catalog: new Catalog(memory, 'c1', { trust: TEST_TRUST, now: () => now }), log }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(again.deleted, [ids[2], ids[0]]);
  assert.deepEqual(again.failed, []);
  // ids[3] is no longer a backup (no manifest); cleanup removes its archive and record.
  assert.deepEqual(objectsOf(memory, ids[3]!), ['archive.tar.age', 'verification.json']);
  const cleaned = await catalog0.cleanup(day(7));
  assert.deepEqual(cleaned, { orphans: [failKey, verificationKey('c1', ids[3]!)], incomplete: 0 });
  assert.deepEqual([...memory.objects.keys()].filter((k) => !k.includes(ids[5]!) && !k.includes(ids[4]!) && !k.includes(ids[1]!)), []);
  assert.deepEqual(lines.filter((l) => l.phase === 'prune' && l.action === 'deleted').map((l) => l.backupId), [ids[2], ids[0]]);
});

test('a dry run deletes nothing and reports what would go, locks included', async () => {
  let now = day(6);
  const { store, ids } = await sixBackups(() => now, 10);
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now });
  await store.put(`c1/backups/${ids[0]}/manifest.json`, (await store.get(`c1/backups/${ids[0]}/manifest.json`)), { retain: true });
  const before = [...store.objects.keys()];
  const { log, lines } = capturingLog();
  const report = await prune({ catalog, log }, LAST_TWO, { dryRun: true, timeZone: 'UTC' });
  assert.equal(report.dryRun, true);
  assert.deepEqual(report.deleted, [ids[3], ids[2], ids[1]]);
  assert.deepEqual(report.locked, [{ id: ids[0], retainUntil: day(16).toISOString() }]);
  assert.deepEqual([...store.objects.keys()], before);
  assert.deepEqual(lines.filter((l) => l.phase === 'prune').map((l) => l.action), ['would-delete', 'would-delete', 'would-delete', 'locked']);
  // Once the retention has passed, the real run deletes it too.
  now = day(17);
  const real = await prune({ catalog, log }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(real.deleted, [ids[3], ids[2], ids[1], ids[0]]);
  assert.deepEqual((await catalog.list()).map((m) => m.backupId), [ids[5], ids[4]]);
  assert.equal(store.objects.size, 6, 'two backups of three objects each');
});

test('prune never deletes the newest verified backup, and keeps a backup whose only check failed out of that', async () => {
  const now = day(6);
  const { store, ids } = await sixBackups(() => now);
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  await catalog.recordVerification(passedRecord(ids[0]!, 'ciphertext', day(0), 1));
  await catalog.recordVerification(passedRecord(ids[2]!, 'ciphertext', day(2), 1));
  await catalog.recordVerification(failedRecord(ids[2]!, 'deep', day(3), 1, new Error('decrypt failed')));
  const { log } = capturingLog();
  const report = await prune({ catalog, log }, { ...LAST_TWO, keepLast: 1 }, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(report.kept, [{ id: ids[5], reasons: ['last', 'newest'] }, { id: ids[0], reasons: ['newest-verified'] }]);
  assert.deepEqual(report.deleted, [ids[4], ids[3], ids[2], ids[1]]);
  assert.equal(await store.stat(verificationKey('c1', ids[2]!)), undefined);
});

test('a shallow pass after a failed drill does not make a backup verified: retention keeps the older one whose drill passed', async () => {
  const { store, ids } = await sixBackups(() => day(6));
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST });
  const [b1, b2] = [ids[1]!, ids[3]!];
  await catalog.recordVerification(passedRecord(b1, 'drill', day(1.5), 60));
  await catalog.recordVerification(failedRecord(b2, 'drill', day(3.5), 60, new Error('etcd did not start')));
  await catalog.recordVerification(passedRecord(b2, 'ciphertext', day(3.6), 1));
  const { log } = capturingLog();
  const report = await prune({ catalog, log }, { ...LAST_TWO, keepLast: 1 }, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(report.kept, [{ id: ids[5], reasons: ['last', 'newest'] }, { id: b1, reasons: ['newest-verified'] }]);
  assert.deepEqual(report.deleted, [ids[4], b2, ids[2], ids[0]]);
  assert.deepEqual(objectsOf(store, b1).sort(), ['archive.tar.age', 'manifest.json', 'manifest.json.sig', 'verification.json']);
});

test('a future-dated backup neither takes the place of the newest nor is deleted', async () => {
  const now = day(6);
  const { store, ids } = await sixBackups(() => now);
  const future = (await putBackup(store, 'c1', day(60), { retain: false })).backupId;
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now, maxClockSkewSeconds: 300 });
  const { log } = capturingLog();
  const report = await prune({ catalog, log }, { ...LAST_TWO, keepLast: 1 }, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(report.kept, [{ id: future, reasons: ['future-dated'] }, { id: ids[5], reasons: ['last', 'newest'] }]);
  assert.deepEqual(report.deleted, [ids[4], ids[3], ids[2], ids[1], ids[0]]);
});

test('prune stops before the next delete when cancelled', async () => {
  const { store } = await sixBackups(() => day(6));
  const controller = new AbortController();
  controller.abort();
  const { log } = capturingLog();
  await assert.rejects(prune({ catalog: new Catalog(store, 'c1', { trust: TEST_TRUST }), log }, LAST_TWO, { dryRun: false, timeZone: 'UTC', signal: controller.signal }), CancelledError);
  assert.equal(store.objects.size, 18);
});

test('lifeboat prune: --help teaches, --dry-run deletes nothing, --json reports, the real run prunes', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-prune-'));
  try {
    const help = await runCli(['prune', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: lifeboat prune/);
    assert.match(help.stdout, /Examples:\n {2}lifeboat prune --dry-run/);
    const store = new FsStore(path.join(dir, 'store'));
    const ids: string[] = [];
    for (let n = 0; n < 4; n += 1) ids.push((await putBackup(store, 'c1', day(n))).backupId);
    const config = await writeConfig(dir, {
      cluster: 'c1',
      node: 'n1',
      kit: { hostRoot: dir },
      store: { fs: { dir: path.join(dir, 'store') } },
      retention: { keepLast: 1, hourly: 0, daily: 2, weekly: 0, monthly: 0 },
      daemon: { schedules: { timezone: 'Europe/Berlin' } },
      signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] },
      log: { level: 'error' },
    });
    const dry = await runCli(['--config', config, 'prune', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(dry.stdout, `dry run: would delete 2 of 4 backups (${ids[1]}, ${ids[0]}); kept 2\n`);
    assert.equal((await new Catalog(store, 'c1', { trust: TEST_TRUST }).list()).length, 4);
    const json = await runCli(['--config', config, 'prune', '--dry-run', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as { kept: { id: string; reasons: string[] }[]; deleted: string[] };
    assert.deepEqual(report.kept, [{ id: ids[3], reasons: ['last', 'daily', 'newest'] }, { id: ids[2], reasons: ['daily'] }]);
    const real = await runCli(['--config', config, 'prune']);
    assert.equal(real.code, 0, real.stderr);
    assert.equal(real.stdout, `deleted 2 of 4 backups (${ids[1]}, ${ids[0]}); kept 2\n`);
    assert.deepEqual((await new Catalog(store, 'c1', { trust: TEST_TRUST }).list()).map((m) => m.backupId), [ids[3], ids[2]]);
    assert.deepEqual((await store.list('c1/')).map((o) => path.basename(o.key)), ['archive.tar.age', 'manifest.json', 'manifest.json.sig', 'archive.tar.age', 'manifest.json', 'manifest.json.sig']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the summary line names what was deleted, what is locked until when, and what failed', () => {
  const line = summary({
    dryRun: false,
    kept: [{ id: 'k1', reasons: ['newest'] }],
    deleted: ['d1', 'd2'],
    locked: [{ id: 'l1', retainUntil: '2026-12-01T00:00:00.000Z' }, { id: 'l2', legalHold: true }, { id: 'l3', retainUntil: '2026-12-02T00:00:00.000Z', legalHold: true }],
    failed: [{ id: 'f1', code: 'STORE_FAILED', message: 'down' }],
  });
  assert.equal(line, 'deleted 2 of 7 backups (d1, d2); 3 skipped, still under Object Lock (l1 until 2026-12-01T00:00:00.000Z, l2 legal hold, l3 until 2026-12-02T00:00:00.000Z, legal hold); 1 failed (f1); kept 1');
  const base = { dryRun: true, kept: [{ id: 'k1', reasons: ['newest' as const] }], deleted: [], locked: [], failed: [] };
  assert.equal(summary({ ...base, segments: { belowRevision: '500', deleted: ['s1', 's2'], locked: { id: 's3' } } }), 'dry run: would delete 0 of 1 backups; kept 1; would delete 2 change segment(s) below revision 500; stopped at s3, still under Object Lock');
  assert.equal(summary({ ...base, segments: { belowRevision: '500', deleted: [] } }), 'dry run: would delete 0 of 1 backups; kept 1', 'no segment due: not mentioned');
});

/** Six daily backups at revisions 100 to 600, and change segments between and after them. */
async function backupsAndSegments(now: () => Date) {
  const store = new MemoryStore({ now });
  const ids: string[] = [];
  for (let n = 0; n < 6; n += 1) ids.push((await putBackup(store, 'c1', day(n), { revision: String((n + 1) * 100), retain: false })).backupId);
  const deps = { store, encrypt: createEncryptStream, signer: TEST_SIGNER, now, log: quietLog };
  const settings = { cluster: 'c1', node: 'n', recipients: [ageKey.recipient], level: 3 };
  let previous: TrustedSegment | undefined;
  for (const [first, last] of [[101, 150], [151, 199], [200, 260], [261, 499], [500, 520], [521, 700]] as [number, number][]) {
    const lines = [eventLine({ revision: String(first), op: 'put', key: Buffer.from('/a'), value: Buffer.from('1') }, now()), ...(first === last ? [] : [eventLine({ revision: String(last), op: 'delete', key: Buffer.from('/a') }, now())])];
    const batch = { lines, plainBytes: lines.reduce((n, l) => n + l.length, 0), events: lines.length, firstRevision: String(first), lastRevision: String(last), firstTime: now(), lastTime: now() };
    previous = await commitSegment(deps, settings, batch, { previous });
  }
  return { store, ids };
}

async function chainLeft(store: MemoryStore): Promise<string[]> {
  const segments = [];
  for (const id of await segmentIds(store, 'c1')) segments.push(await readTrustedSegment(store, 'c1', TEST_TRUST, id));
  checkChain(segments);
  return segments.map((s) => `${s.manifest.firstRevision}-${s.manifest.lastRevision}`);
}

test('prune deletes the change segments that end below the oldest backup kept, oldest first and manifest first; the chain left still checks', async () => {
  const now = day(6);
  const { store } = await backupsAndSegments(() => now);
  const deleted: string[] = [];
  const recording: BackupStore = Object.assign(Object.create(store) as BackupStore, {
    delete: async (key: string) => {
      deleted.push(key.split('/').slice(1).join('/'));
      return store.delete(key);
    },
  });
  const catalog = new Catalog(recording, 'c1', { trust: TEST_TRUST, now: () => now });
  const changes = { store: recording, cluster: 'c1', now: () => now };

  const dry = await prune({ catalog, log: quietLog, changes }, LAST_TWO, { dryRun: true, timeZone: 'UTC' });
  assert.deepEqual(dry.segments, { belowRevision: '500', deleted: [formatSegmentId('101', '150'), formatSegmentId('151', '199'), formatSegmentId('200', '260'), formatSegmentId('261', '499')] });
  assert.equal(deleted.length, 0, 'a dry run deletes nothing');

  const report = await prune({ catalog, log: quietLog, changes }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.equal(report.deleted.length, 4);
  assert.deepEqual(report.segments?.deleted, dry.segments!.deleted);
  assert.deepEqual(await chainLeft(store), ['500-520', '521-700'], 'the segment that reaches the oldest backup kept stays');
  const segmentDeletes = deleted.filter((k) => k.startsWith('changes/'));
  assert.deepEqual(segmentDeletes.slice(0, 3), [`changes/${formatSegmentId('101', '150')}/manifest.json`, `changes/${formatSegmentId('101', '150')}/manifest.json.sig`, `changes/${formatSegmentId('101', '150')}/segment.jsonl.zst.age`]);
  assert.equal(segmentDeletes.length, 12);
  assert.equal([...store.objects.keys()].filter((k) => k.startsWith('c1/changes/')).length, 6, 'nothing of a deleted segment is left');

  // Without the change log in its deps (the CLI of an older config), prune leaves segments alone.
  const { store: other } = await backupsAndSegments(() => now);
  const plain = await prune({ catalog: new Catalog(other, 'c1', { trust: TEST_TRUST, now: () => now }), log: quietLog }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.equal(plain.segments, undefined);
  assert.equal((await segmentIds(other, 'c1')).length, 6);
});

test('segment pruning stops at a segment under Object Lock, and below a backup that could not be deleted', async () => {
  const now = day(6);
  const { store, ids } = await backupsAndSegments(() => now);
  store.lock(`c1/changes/${formatSegmentId('200', '260')}/segment.jsonl.zst.age`, { retainUntil: day(30) });
  const catalog = new Catalog(store, 'c1', { trust: TEST_TRUST, now: () => now });
  const report = await prune({ catalog, log: quietLog, changes: { store, cluster: 'c1', now: () => now } }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(report.segments, { belowRevision: '500', deleted: [formatSegmentId('101', '150'), formatSegmentId('151', '199')], locked: { id: formatSegmentId('200', '260'), retainUntil: day(30).toISOString() } });
  assert.deepEqual(await chainLeft(store), ['200-260', '261-499', '500-520', '521-700'], 'no hole: the later due segment waits with the locked one');

  // A backup still under lock is still there: the segments after it stay for it.
  const { store: second, ids: secondIds } = await backupsAndSegments(() => now);
  second.lock(`c1/backups/${secondIds[2]}/archive.tar.age`, { legalHold: true });
  const kept = await prune({ catalog: new Catalog(second, 'c1', { trust: TEST_TRUST, now: () => now }), log: quietLog, changes: { store: second, cluster: 'c1', now: () => now } }, LAST_TWO, { dryRun: false, timeZone: 'UTC' });
  assert.deepEqual(kept.locked.map((l) => l.id), [secondIds[2]]);
  assert.equal(kept.segments?.belowRevision, '300');
  assert.deepEqual(await chainLeft(second), ['261-499', '500-520', '521-700'], 'the segments after the locked backup stay');
  assert.equal(ids.length, 6);
});
