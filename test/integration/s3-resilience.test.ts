import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { ListPartsCommand } from '@aws-sdk/client-s3';
import { startEtcdHost } from '../../scripts/rig/etcd.ts';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { describeError, StoreError } from '../../src/errors/errors.ts';
import { replicate } from '../../src/replicate/replicate.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { parseKey } from '../../src/store/layout.ts';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.ts';
import type { BackupStore } from '../../src/store/store.ts';
import { verifyBackup } from '../../src/verify/verify.ts';
import { createDecryptStream } from '../../src/crypto/age.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { takeBackup } from '../support/backups.ts';
import { startFaultProxy } from '../support/fault-proxy.ts';
import { configDoc, configOf, errorLines, quietLog, runCli, spawnCli, writeConfig } from '../support/lifeboat.ts';
import { startS3Rig } from '../support/s3-rig.ts';
import { TEST_TRUST } from '../support/signing.ts';

/**
 * The S3 store's failure handling on a real Ceph RGW: HTTPS behind a private CA, transient
 * errors retried per request and per part, 403 not retried, a SIGKILLed upload cleaned up by
 * the next run, and the second copy to another bucket.
 */
const MiB = 1024 * 1024;
const PRIMARY = 'lifeboat-primary';
const SECONDARY = 'lifeboat-secondary';
const rig = await startS3Rig('resilience', { buckets: [PRIMARY, SECONDARY], https: true });
const { work, rgw, s3, env, uploadsUnder } = rig;
// About 16 MB of values: uncompressed, an archive of four 5 MiB parts.
const { etcd, hostRoot } = await startEtcdHost(work, { members: 1, populate: { keys: 200, valueBytes: [60_000, 100_000], seed: 21 } });
after(async () => {
  await etcd.stop();
  await rig.stop();
});

const key = await generateIdentity();
const keyFile = path.join(work, 'key.txt');
await writeFile(keyFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
const baseDoc = { ...configDoc(etcd, hostRoot, '/unused', [key.recipient]), compression: { algorithm: 'none' } };
const config = configOf(baseDoc);

const storeOptions = (endpoint: string, bucket: string, prefix: string, overrides: Partial<S3StoreOptions> = {}) => rig.storeOptions({ endpoint, bucket, prefix, queueSize: 4, ...overrides });

/** The store section of a config: S3 on this RGW (credentials from env). */
function s3Doc(endpoint: string, bucket: string, prefix: string, extra: Record<string, unknown> = {}) {
  return { s3: { endpoint, region: rgw.region, bucket, prefix, partSizeMiB: 5, ...extra } };
}

/** A backup, in this process, into `store`. */
const backupInto = (store: BackupStore): Promise<StoredManifest> => takeBackup(config, store, { node: 'n' });

/** The JSON log lines of a CLI run with this phase. */
function logLines(stderr: string, phase: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.phase === phase);
}

test('HTTPS behind a private CA: with caFile the store works; without it, one line that says to set caFile', async () => {
  assert.ok(rgw.httpsEndpoint && rgw.caFile);
  const store = new S3Store(storeOptions(rgw.httpsEndpoint, PRIMARY, 'tls/', { caFile: rgw.caFile }));
  const big = randomBytes(12 * MiB);
  await store.put('k/small', Readable.from([Buffer.from('over TLS')]));
  await store.put('k/big', Readable.from((function* () {
    for (let i = 0; i < big.length; i += MiB) yield big.subarray(i, i + MiB);
  })()));
  assert.deepEqual((await store.list('k/')).map((o) => [o.key, o.size]), [['k/big', big.length], ['k/small', 8]]);
  assert.equal((await buffer(await store.get('k/small'))).toString(), 'over TLS');
  assert.ok((await buffer(await store.get('k/big'))).equals(big));

  const untrusting = new S3Store(storeOptions(rgw.httpsEndpoint, PRIMARY, 'tls/'));
  await assert.rejects(untrusting.list('k/'), (err: unknown) => {
    assert.ok(err instanceof StoreError, String(err));
    assert.match(err.message, /TLS: the endpoint's certificate is not signed by a trusted CA \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
    assert.match(err.hint ?? '', /set s3\.caFile .* PEM bundle of the CA/);
    assert.doesNotMatch(describeError(err), /\n/);
    return true;
  });

  // As a user sees it: the CLI with and without store.s3.caFile.
  const withCa = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.httpsEndpoint, PRIMARY, 'tls/', { caFile: rgw.caFile }) });
  const listed = await runCli(['--config', withCa, 'list'], env);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /no backups of cluster it in s3:\/\/lifeboat-primary\/tls\/ at https:/);
  const withoutCa = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.httpsEndpoint, PRIMARY, 'tls/') });
  const refused = await runCli(['--config', withoutCa, 'list'], env);
  assert.equal(refused.code, 1);
  const lines = errorLines(refused.stderr);
  assert.equal(lines.length, 1, refused.stderr);
  assert.match(lines[0]!, /^lifeboat: error: .*TLS: .*not signed by a trusted CA.*caFile/);
});

test('transient 503s and a connection reset are retried per request and per part: a backup through them commits intact', async (t) => {
  const proxy = await startFaultProxy(rgw.endpoint, (req) => {
    if (req.attempt > 1) return undefined;
    switch (req.operation) {
      case 'UploadPart':
        return { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };
      case 'CreateMultipartUpload':
      case 'CompleteMultipartUpload':
      case 'HeadObject':
        return { status: 503, code: 'InternalError', message: 'We encountered an internal error. Please try again.' };
      case 'PutObject':
        return 'reset';
      default:
        return undefined;
    }
  });
  try {
    const store = new S3Store(storeOptions(proxy.endpoint, PRIMARY, 'retry/'));
    const manifest = await backupInto(store);

    const direct = new S3Store(storeOptions(rgw.endpoint, PRIMARY, 'retry/'));
    assert.deepEqual((await new Catalog(direct, config.cluster, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [manifest.backupId]);
    const verified = await verifyBackup({ store: direct, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, { etcdutl: config.tools.etcdutl, identities: [key.identity] });
    assert.equal(verified.level, 'deep');
    assert.deepEqual(await uploadsUnder(PRIMARY, 'retry/'), []);

    const parts = proxy.seen.filter((r) => r.operation === 'UploadPart');
    const partNumbers = new Set(parts.map((r) => r.query.get('partNumber')));
    const faults = proxy.seen.filter((r) => r.outcome !== 'forwarded');
    const retries = proxy.seen.filter((r) => (r.clientAttempt ?? 1) > 1);
    t.diagnostic(`archive ${manifest.archive.size} bytes in ${partNumbers.size} parts; ${proxy.seen.length} requests, ${faults.length} faults injected, ${retries.length} retries`);
    assert.ok(partNumbers.size >= 3, `${partNumbers.size} parts`);
    for (const n of partNumbers) {
      assert.deepEqual(parts.filter((r) => r.query.get('partNumber') === n).map((r) => [r.attempt, r.outcome]), [[1, 503], [2, 'forwarded']], `part ${n}`);
    }
    for (const operation of ['CreateMultipartUpload', 'CompleteMultipartUpload', 'PutObject', 'HeadObject'] as const) {
      const first = proxy.seen.find((r) => r.operation === operation && r.attempt === 1);
      assert.ok(first && first.outcome !== 'forwarded', `${operation} faulted`);
      assert.ok(proxy.seen.some((r) => r.operation === operation && r.path === first.path && r.attempt === 2 && r.outcome === 'forwarded'), `${operation} retried`);
    }
    // Each fault was followed by exactly one retry of the same request, which the SDK counted as one.
    assert.equal(retries.length, faults.length);
    for (const fault of faults) {
      const retry = proxy.seen.find((r) => r.identity === fault.identity && r.attempt === fault.attempt + 1);
      assert.equal(retry?.clientAttempt, 2, `${fault.operation} ${fault.identity}`);
    }
  } finally {
    await proxy.close();
  }
});

test('a request that hangs (nothing moves on its socket) times out and is retried; the backup commits', async (t) => {
  const proxy = await startFaultProxy(rgw.endpoint, (req) => (req.operation === 'UploadPart' && req.attempt === 1 ? 'hold' : undefined));
  try {
    const store = new S3Store(storeOptions(proxy.endpoint, PRIMARY, 'hang/', { idleTimeoutMs: 1500 }));
    const manifest = await backupInto(store);
    const direct = new S3Store(storeOptions(rgw.endpoint, PRIMARY, 'hang/'));
    assert.deepEqual((await new Catalog(direct, config.cluster, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [manifest.backupId]);
    assert.deepEqual(await uploadsUnder(PRIMARY, 'hang/'), []);
    const parts = proxy.seen.filter((r) => r.operation === 'UploadPart');
    const held = parts.filter((r) => r.outcome === 'hold');
    t.diagnostic(`${held.length} held parts, each retried after the 1.5 s idle timeout`);
    assert.ok(held.length >= 3, `${held.length} parts held`);
    for (const h of held) {
      assert.ok(parts.some((r) => r.identity === h.identity && r.attempt === 2 && r.outcome === 'forwarded' && r.clientAttempt === 2), `part ${h.query.get('partNumber')} retried`);
    }
  } finally {
    await proxy.close();
  }
});

test('403 AccessDenied is not retried: a put fails at once, after a single request', async () => {
  const proxy = await startFaultProxy(rgw.endpoint, () => ({ status: 403, code: 'AccessDenied', message: 'Access Denied' }));
  try {
    const store = new S3Store(storeOptions(proxy.endpoint, PRIMARY, 'denied/', { maxAttempts: 5 }));
    const body = randomBytes(12 * MiB);
    await assert.rejects(store.put('k/denied', Readable.from([body.subarray(0, 6 * MiB), body.subarray(6 * MiB)])), (err: unknown) => {
      assert.ok(err instanceof StoreError, String(err));
      assert.match(err.message, /AccessDenied \(HTTP 403\)/);
      assert.match(err.hint ?? '', /may use bucket lifeboat-primary/);
      return true;
    });
    assert.deepEqual(proxy.seen.map((r) => [r.operation, r.outcome]), [['CreateMultipartUpload', 403]]);
  } finally {
    await proxy.close();
  }
});

test('lifeboat SIGKILLed mid-upload leaves a multipart upload; the next backup removes it and commits exactly one backup', async (t) => {
  // Part 1 goes through; the others are held, so the upload is in progress when the kill comes.
  const proxy = await startFaultProxy(rgw.endpoint, (req) => (req.operation === 'UploadPart' && req.query.get('partNumber') !== '1' ? 'hold' : undefined));
  const prefix = 'sigkill/';
  const viaProxy = await writeConfig(work, { ...baseDoc, store: s3Doc(proxy.endpoint, PRIMARY, prefix), backup: { orphanMinAgeSeconds: 0 } });
  const direct = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.endpoint, PRIMARY, prefix), backup: { orphanMinAgeSeconds: 0 } });
  try {
    const running = spawnCli(['--config', viaProxy, 'backup'], env);
    let exited = false;
    void running.result.then(() => (exited = true));
    let upload: { Key?: string | undefined; UploadId?: string | undefined } | undefined;
    for (let tries = 0; !upload && tries < 600; tries++) {
      assert.ok(!exited, 'the backup ended before its upload was seen');
      const [found] = await uploadsUnder(PRIMARY, prefix);
      if (found) {
        const parts = await s3.send(new ListPartsCommand({ Bucket: PRIMARY, Key: found.Key, UploadId: found.UploadId }));
        if ((parts.Parts ?? []).length > 0) upload = found;
      }
      if (!upload) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(upload, 'an in-progress multipart upload with a stored part');
    running.child.kill('SIGKILL');
    const killed = await running.result;
    assert.equal(killed.signal, 'SIGKILL');
    assert.deepEqual((await uploadsUnder(PRIMARY, prefix)).map((u) => u.UploadId), [upload.UploadId], 'the killed process left its upload');
    const store = new S3Store(storeOptions(rgw.endpoint, PRIMARY, prefix));
    assert.deepEqual(await new Catalog(store, config.cluster, { trust: TEST_TRUST }).list(), []);

    const next = await runCli(['--config', direct, 'backup', '--json'], env);
    assert.equal(next.code, 0, next.stderr);
    const cleanup = logLines(next.stderr, 'cleanup');
    assert.equal(cleanup[0]?.incomplete, 1, next.stderr);
    const committed = JSON.parse(next.stdout) as StoredManifest;
    assert.deepEqual(await uploadsUnder(PRIMARY, prefix), []);
    assert.deepEqual((await new Catalog(store, config.cluster, { trust: TEST_TRUST }).list()).map((m) => m.backupId), [committed.backupId]);
    assert.deepEqual((await store.list('')).map((o) => o.key), [committed.archive.key, `it/backups/${committed.backupId}/manifest.json`, `it/backups/${committed.backupId}/manifest.json.sig`]);
    t.diagnostic(`killed with part 1 of ${upload.Key} stored; the next backup aborted ${String(cleanup[0]?.incomplete)} upload and committed ${committed.archive.size} bytes`);
  } finally {
    await proxy.close();
  }
});

test('the second copy goes to another bucket, through lifeboat replicate and replicate(); it verifies there, and a second run copies nothing', async () => {
  const primaryOnly = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.endpoint, PRIMARY, 'rep/') });
  const primaryConfig = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.endpoint, PRIMARY, 'rep/'), secondaryStore: s3Doc(rgw.endpoint, SECONDARY, 'copy/') });
  const secondaryConfig = await writeConfig(work, { ...baseDoc, store: s3Doc(rgw.endpoint, SECONDARY, 'copy/') });

  // A backup taken while no second store was configured: the second store lacks it.
  const made = await runCli(['--config', primaryOnly, 'backup', '--json'], env);
  assert.equal(made.code, 0, made.stderr);
  const first = JSON.parse(made.stdout) as StoredManifest;

  const copied = await runCli(['--config', primaryConfig, 'replicate', '--json'], env);
  assert.equal(copied.code, 0, copied.stderr);
  const report = JSON.parse(copied.stdout) as { copied: { id: string; bytes: number }[]; present: string[]; failed: unknown[] };
  assert.deepEqual(report.copied.map((c) => [c.id, c.bytes]), [[first.backupId, first.archive.size]]);
  assert.deepEqual([report.present, report.failed], [[], []]);
  assert.ok(logLines(copied.stderr, 'archive-copied').length === 1 && logLines(copied.stderr, 'replicated').length === 1);

  const verified = await runCli(['--config', secondaryConfig, 'verify', first.backupId, '--identity', keyFile], env);
  assert.equal(verified.code, 0, verified.stderr);
  assert.match(verified.stdout, new RegExp(`backup ${first.backupId}: OK \\(decrypted`));

  const again = await runCli(['--config', primaryConfig, 'replicate'], env);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^0 copied \(0 B\), 1 already there, 0 failed: s3:\/\/lifeboat-primary\/rep\/ .* -> s3:\/\/lifeboat-secondary\/copy\//m);
  assert.equal(logLines(again.stderr, 'replicate-started').length, 0);

  // In process, as the backup run and the daemon call it.
  const primary = new S3Store(storeOptions(rgw.endpoint, PRIMARY, 'rep/'));
  const secondary = new S3Store(storeOptions(rgw.endpoint, SECONDARY, 'copy/'));
  const second = await backupInto(primary);
  const inProcess = await replicate({ source: primary, target: secondary, trust: TEST_TRUST, log: quietLog }, config.cluster);
  assert.deepEqual(inProcess.copied.map((c) => [c.id, c.bytes]), [[second.backupId, second.archive.size]]);
  assert.deepEqual([inProcess.present, inProcess.failed], [[first.backupId], []]);
  assert.deepEqual(await replicate({ source: primary, target: secondary, trust: TEST_TRUST, log: quietLog }, config.cluster), { copied: [], present: [second.backupId, first.backupId], failed: [] });

  const listed = await runCli(['--config', secondaryConfig, 'list', '--json'], env);
  assert.deepEqual((JSON.parse(listed.stdout) as StoredManifest[]).map((m) => m.backupId), [second.backupId, first.backupId]);
  const shallow = await runCli(['--config', secondaryConfig, 'verify', 'latest'], env);
  assert.equal(shallow.code, 0, shallow.stderr);
  assert.match(shallow.stdout, new RegExp(`backup ${second.backupId}: OK`));
  assert.deepEqual(await uploadsUnder(SECONDARY, 'copy/'), []);
  // Two archives, two manifests and their signatures; besides them only the records that `lifeboat verify` wrote there.
  const kinds = (await secondary.list('')).map((o) => parseKey(o.key)?.kind);
  assert.deepEqual(kinds.filter((k) => k !== 'verification').sort(), ['archive', 'archive', 'manifest', 'manifest', 'signature', 'signature']);
});
