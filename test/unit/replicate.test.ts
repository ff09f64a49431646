import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { manifestJson, type StoredManifest } from '../../src/archive/manifest.ts';
import { CancelledError, StoreError, UnsafePathError } from '../../src/errors/errors.ts';
import { createLogger } from '../../src/log/logger.ts';
import { replicate, replicateOne } from '../../src/replicate/replicate.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { archiveKey, manifestKey, signatureKey } from '../../src/store/layout.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import type { PutOptions } from '../../src/store/store.ts';
import { sampleManifest, sha256 } from '../support/fixtures.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { errorLines, runCli, writeConfig } from '../support/lifeboat.ts';
import { SIGNING_PUBLIC_KEY_FILE, TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const CLUSTER = 'unit';
const log = createLogger('silent');

/** Writes a committed backup (archive, then signature and manifest) of `bytes` random bytes into `store`. */
function commit(store: MemoryStore, id: string, bytes = 200_000): StoredManifest {
  const body = randomBytes(bytes);
  const key = archiveKey(CLUSTER, id, 'zstd');
  const base = sampleManifest(1000, [], id);
  const manifest: StoredManifest = {
    ...base,
    cluster: CLUSTER,
    snapshot: { ...base.snapshot, sha256: sha256('snapshot'), dbSha256: sha256('db') },
    archive: { key, size: body.length, sha256: sha256(body), compression: { algorithm: 'zstd', level: 1 }, encryption: { format: 'age', recipients: ['age1example'] } },
    completedAt: '2026-11-24T03:31:00.000Z',
  };
  store.objects.set(key, { body, modified: new Date() });
  const text = Buffer.from(manifestJson(manifest));
  store.objects.set(signatureKey(CLUSTER, id), { body: TEST_SIGNER.sign(text), modified: new Date() });
  store.objects.set(manifestKey(CLUSTER, id), { body: text, modified: new Date() });
  return manifest;
}

const ID1 = '20261124T033000.000Z-r40';
const ID2 = '20261124T043000.000Z-r41';
const ID3 = '20261124T053000.000Z-r42';

/** A MemoryStore that records every put (key and options) and can fail chosen ones. */
class RecordingStore extends MemoryStore {
  readonly puts: { key: string; options: PutOptions | undefined }[] = [];
  failPut: ((key: string) => Error | undefined) | undefined;

  override async put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }> {
    this.puts.push({ key, options });
    const failure = this.failPut?.(key);
    if (failure) {
      // Fail mid-stream, as a store whose connection drops does: read some, then give up.
      await new Promise<void>((resolve) => body.once('readable', () => resolve()));
      body.read();
      body.destroy(failure);
      throw failure;
    }
    return super.put(key, body, options);
  }
}

const keysOf = (store: MemoryStore, id: string) => [...store.objects.keys()].filter((k) => k.includes(id)).sort();

test('copies every committed backup the target lacks, byte for byte, archive first, then the signature, manifest last, with retention asked for', async () => {
  const source = new MemoryStore();
  const target = new RecordingStore();
  const m1 = commit(source, ID1);
  const m2 = commit(source, ID2, 1_500_000);
  // An archive without a manifest is not a backup and is not copied.
  source.objects.set(archiveKey(CLUSTER, ID3, 'zstd'), { body: randomBytes(1000), modified: new Date() });

  const report = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);

  assert.deepEqual(report.copied.map((c) => [c.id, c.bytes]), [[ID2, m2.archive.size], [ID1, m1.archive.size]], 'newest first');
  assert.deepEqual(report.present, []);
  assert.deepEqual(report.failed, []);
  for (const m of [m1, m2]) {
    assert.deepEqual(target.objects.get(m.archive.key)?.body, source.objects.get(m.archive.key)?.body);
    assert.deepEqual(target.objects.get(manifestKey(CLUSTER, m.backupId))?.body, source.objects.get(manifestKey(CLUSTER, m.backupId))?.body);
    assert.deepEqual(target.objects.get(signatureKey(CLUSTER, m.backupId))?.body, source.objects.get(signatureKey(CLUSTER, m.backupId))?.body);
  }
  assert.deepEqual(target.puts.map((p) => p.key), [m2.archive.key, signatureKey(CLUSTER, ID2), manifestKey(CLUSTER, ID2), m1.archive.key, signatureKey(CLUSTER, ID1), manifestKey(CLUSTER, ID1)]);
  assert.ok(target.puts.every((p) => (p.options as { retain?: boolean } | undefined)?.retain === true));
  assert.deepEqual((await new Catalog(target, CLUSTER, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [ID2, ID1]);
  assert.deepEqual(keysOf(target, ID3), []);
});

test('skips the backups the target already has; a manifest without its whole archive is copied again', async () => {
  const source = new MemoryStore();
  const target = new RecordingStore();
  const m1 = commit(source, ID1);
  const m2 = commit(source, ID2);
  const m3 = commit(source, ID3);
  await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER, { ids: [ID1, ID2] });
  target.puts.length = 0;

  // ID2's copy lost its archive: it is not "present".
  target.objects.delete(m2.archive.key);
  const report = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);
  assert.deepEqual(report.copied.map((c) => c.id), [ID3, ID2]);
  assert.deepEqual(report.present, [ID1]);
  assert.deepEqual(target.puts.map((p) => p.key).filter((k) => k.includes(ID1)), [], 'nothing of a present backup is written');
  assert.deepEqual(target.objects.get(m2.archive.key)?.body, source.objects.get(m2.archive.key)?.body);

  target.puts.length = 0;
  const again = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);
  assert.deepEqual(again, { copied: [], present: [ID3, ID2, ID1], failed: [] });
  assert.equal(target.puts.length, 0);
  assert.deepEqual(target.objects.get(m3.archive.key)?.body, source.objects.get(m3.archive.key)?.body);
  assert.ok(m1);
});

test('a corrupted source archive is refused at the target: nothing of it is committed or left there, and the others are copied', async () => {
  const source = new MemoryStore();
  const target = new RecordingStore();
  const bad = commit(source, ID1);
  const truncated = commit(source, ID2);
  const good = commit(source, ID3);
  const flipped = Buffer.from(source.objects.get(bad.archive.key)!.body);
  flipped[5000] = (flipped[5000] ?? 0) ^ 0x40;
  source.objects.set(bad.archive.key, { body: flipped, modified: new Date() });
  source.objects.set(truncated.archive.key, { body: source.objects.get(truncated.archive.key)!.body.subarray(0, 150_000), modified: new Date() });

  const report = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);

  assert.deepEqual(report.copied.map((c) => c.id), [good.backupId]);
  assert.deepEqual(report.failed.map((f) => [f.id, f.code]), [[ID2, 'INTEGRITY_MISMATCH'], [ID1, 'INTEGRITY_MISMATCH']]);
  assert.match(report.failed.find((f) => f.id === ID1)!.message, /sha256 .* manifest says/);
  assert.match(report.failed.find((f) => f.id === ID2)!.message, /150000 bytes, but its manifest says 200000/);
  // The archive was written, checked, and deleted; the manifest never.
  assert.ok(target.puts.some((p) => p.key === bad.archive.key));
  assert.ok(!target.puts.some((p) => p.key === manifestKey(CLUSTER, ID1)));
  assert.deepEqual(keysOf(target, ID1), []);
  assert.deepEqual(keysOf(target, ID2), []);
  assert.deepEqual((await new Catalog(target, CLUSTER, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [ID3]);
});

test('a failing target put leaves nothing there, whether the archive or the manifest fails', async () => {
  const source = new MemoryStore();
  const archiveFails = commit(source, ID1);
  const manifestFails = commit(source, ID2);
  const target = new RecordingStore();
  target.failPut = (key) =>
    key === archiveFails.archive.key || key === manifestKey(CLUSTER, ID2) ? new StoreError(`memory: write ${key}: connection reset`) : undefined;

  const report = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);

  assert.deepEqual(report.copied, []);
  assert.deepEqual(report.failed.map((f) => [f.id, f.code]), [[ID2, 'STORE_FAILED'], [ID1, 'STORE_FAILED']]);
  assert.match(report.failed[0]!.message, /connection reset/);
  assert.ok(target.puts.some((p) => p.key === manifestFails.archive.key), 'the archive of ID2 was written before its manifest failed');
  assert.deepEqual([...target.objects.keys()], [], 'the written archive was deleted');
  assert.deepEqual(await new Catalog(target, CLUSTER, { trust: TEST_TRUST }).list(), []);
});

test('ids: only those are copied; an unknown one is reported, a malformed one refused', async () => {
  const source = new MemoryStore();
  const target = new MemoryStore();
  commit(source, ID1);
  commit(source, ID2);
  const report = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER, { ids: [ID1, ID3] });
  assert.deepEqual(report.copied.map((c) => c.id), [ID1]);
  assert.deepEqual(report.failed.map((f) => [f.id, f.code]), [[ID3, 'NOT_FOUND']]);
  assert.deepEqual(keysOf(target, ID2), []);
  await assert.rejects(replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER, { ids: ['../etc'] }), UnsafePathError);
});

test('a changed manifest is refused and nothing is copied: unsigned since the change, or signed but naming another key as its archive', async () => {
  const source = new MemoryStore();
  const target = new MemoryStore();
  const m = commit(source, ID1);
  const forged = Buffer.from(manifestJson({ ...m, archive: { ...m.archive, key: archiveKey(CLUSTER, ID2, 'zstd') } }));
  source.objects.set(manifestKey(CLUSTER, ID1), { body: forged, modified: new Date() });
  const unsigned = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);
  assert.deepEqual(unsigned.failed.map((f) => [f.id, f.code]), [[ID1, 'SIGNATURE_INVALID']]);
  source.objects.set(signatureKey(CLUSTER, ID1), { body: TEST_SIGNER.sign(forged), modified: new Date() });
  const misplaced = await replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER);
  assert.deepEqual(misplaced.failed.map((f) => [f.id, f.code]), [[ID1, 'ARCHIVE_INVALID']]);
  assert.deepEqual([...target.objects.keys()], []);
});

test('replicateOne copies a just-committed backup once, then finds it present', async () => {
  const source = new MemoryStore();
  const target = new RecordingStore();
  const m = commit(source, ID1, 3_000_000);
  const first = await replicateOne({ source, target, trust: TEST_TRUST, log }, CLUSTER, m);
  assert.equal(first.status, 'copied');
  assert.equal(first.status === 'copied' && first.bytes, 3_000_000);
  assert.deepEqual(await replicateOne({ source, target, trust: TEST_TRUST, log }, CLUSTER, m), { status: 'present', id: ID1 });
  assert.equal(target.puts.length, 3, 'archive, signature, manifest');

  const broken = new RecordingStore();
  broken.failPut = () => new StoreError('memory: disk full');
  await assert.rejects(replicateOne({ source, target: broken, trust: TEST_TRUST, log }, CLUSTER, m), /disk full/);
  assert.deepEqual([...broken.objects.keys()], []);
});

test('cancelling stops the run with CancelledError and leaves nothing of the copy in progress', async () => {
  const source = new MemoryStore();
  commit(source, ID1);
  commit(source, ID2);
  const controller = new AbortController();
  const target = new RecordingStore();
  target.failPut = (key) => {
    if (key.endsWith('manifest.json')) controller.abort();
    return undefined;
  };
  await assert.rejects(replicate({ source, target, trust: TEST_TRUST, log }, CLUSTER, { signal: controller.signal }), CancelledError);
  assert.deepEqual([...target.objects.keys()], []);
  assert.equal(target.puts.length, 3, 'the second backup was not started');
});

test('lifeboat replicate: --help teaches it; without secondaryStore a ConfigError names it; between two directories it copies, reports and fails per backup', async () => {
  const help = await runCli(['replicate', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: lifeboat replicate \[options\] \[ids\.\.\.\]/);
  assert.match(help.stdout, /secondaryStore/);
  assert.match(help.stdout, /Examples:/);

  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-replicate-cli-'));
  try {
    const primaryDir = path.join(dir, 'primary');
    const none = await writeConfig(dir, { cluster: CLUSTER, store: { fs: { dir: primaryDir } } });
    const refused = await runCli(['--config', none, 'replicate']);
    assert.equal(refused.code, 2);
    assert.deepEqual(errorLines(refused.stderr).length, 1);
    assert.match(refused.stderr, /^lifeboat: error: config \/secondaryStore: no secondary store is configured/m);

    // Two committed backups in the primary directory, one of them corrupted.
    const memory = new MemoryStore();
    const good = commit(memory, ID1);
    const bad = commit(memory, ID2);
    const flipped = memory.objects.get(bad.archive.key)!.body;
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    const primary = new FsStore(primaryDir);
    for (const [key, o] of memory.objects) await primary.put(key, Readable.from([o.body]));
    const secondaryDir = path.join(dir, 'secondary');
    const config = await writeConfig(dir, { cluster: CLUSTER, store: { fs: { dir: primaryDir } }, secondaryStore: { fs: { dir: secondaryDir } }, signing: { publicKeyFiles: [SIGNING_PUBLIC_KEY_FILE] } });

    const run = await runCli(['--config', config, 'replicate']);
    assert.equal(run.code, 1);
    assert.match(run.stdout, new RegExp(`^copied  ${ID1}  195\\.3 KiB in `, 'm'));
    assert.match(run.stdout, new RegExp(`^FAILED  ${ID2}  archive .* has sha256 `, 'm'));
    assert.match(run.stdout, /^1 copied \(195\.3 KiB\), 0 already there, 1 failed: fs:.*primary -> fs:.*secondary$/m);
    assert.deepEqual(errorLines(run.stderr), [errorLines(run.stderr)[0]]);
    assert.match(run.stderr, /^lifeboat: error: 1 of 2 backups could not be copied to fs:.*; first 20261124T043000.000Z-r41: archive/m);
    const secondary = new FsStore(secondaryDir);
    assert.deepEqual((await new Catalog(secondary, CLUSTER, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [good.backupId]);
    assert.deepEqual((await secondary.list('')).map((o) => o.key), [good.archive.key, manifestKey(CLUSTER, ID1), signatureKey(CLUSTER, ID1)]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
