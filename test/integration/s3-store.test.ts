import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.ts';
import { StoreError } from '../../src/errors/errors.ts';
import { storeConformance } from '../support/store-conformance.ts';
import { configDoc, configOf, runCli, writeConfig } from '../support/lifeboat.ts';
import { takeBackup } from '../support/backups.ts';
import { startS3Rig } from '../support/s3-rig.ts';
import { Catalog } from '../../src/store/catalog.ts';
import type { BackupStore, PutOptions } from '../../src/store/store.ts';
import { startEtcdHost } from '../../scripts/rig/etcd.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { TEST_TRUST } from '../support/signing.ts';

const BUCKET = 'lifeboat-test';
const rig = await startS3Rig('rgw', { buckets: [BUCKET] });
after(() => rig.stop());
const { work, rgw, s3 } = rig;
const options = (prefix: string, overrides: Partial<S3StoreOptions> = {}) => rig.storeOptions({ bucket: BUCKET, prefix, ...overrides });

let n = 0;
storeConformance('rgw', async () => new S3Store(options(`conformance-${n++}/`)));

test('rgw: a multipart put of 12 MiB in 5 MiB parts round-trips', async () => {
  const store = new S3Store(options('multipart/'));
  const body = randomBytes(12 * 1024 * 1024);
  const put = await store.put('k/big', Readable.from((function* () {
    for (let i = 0; i < body.length; i += 1 << 20) yield body.subarray(i, i + (1 << 20));
  })()));
  assert.equal(put.size, body.length);
  const parts: Buffer[] = [];
  for await (const c of await store.get('k/big')) parts.push(c as Buffer);
  assert.deepEqual(Buffer.concat(parts), body);
});

test('rgw: a failed multipart put is aborted; removeIncomplete aborts what a killed process left', async () => {
  const store = new S3Store(options('failing/'));
  async function* failing(): AsyncGenerator<Buffer> {
    yield randomBytes(6 * 1024 * 1024);
    yield randomBytes(6 * 1024 * 1024);
    throw new Error('source broke');
  }
  await assert.rejects(store.put('k/broken', Readable.from(failing())), /source broke/);
  const left = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'failing/' }));
  assert.deepEqual(left.Uploads ?? [], []);
  // What a SIGKILLed process leaves: an upload with a part, never completed.
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'failing/k/orphan' }));
  await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'failing/k/orphan', UploadId, PartNumber: 1, Body: randomBytes(1024) }));
  assert.equal(await store.removeIncomplete('k/', new Date(Date.now() - 3600_000)), 0, 'younger than the threshold');
  assert.equal(await store.removeIncomplete('k/', new Date(Date.now() + 60_000)), 1);
  assert.deepEqual((await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'failing/' }))).Uploads ?? [], []);
});

test('rgw: wrong credentials and a missing bucket fail at once with what to check', async () => {
  for (const [overrides, pattern] of [
    [{ credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: 'wrong' } }, /SignatureDoesNotMatch.*secret key/],
    [{ credentials: { accessKeyId: 'NOSUCHKEY', secretAccessKey: 'x' } }, /InvalidAccessKeyId.*access key/],
    [{ bucket: 'no-such-bucket' }, /NoSuchBucket.*create bucket no-such-bucket/],
  ] as const) {
    const store = new S3Store(options('x/', overrides as Partial<S3StoreOptions>));
    const started = performance.now();
    await assert.rejects(store.list('a/'), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.match(`${err.message} ${err.hint ?? ''}`, pattern);
      return true;
    });
    assert.ok(performance.now() - started < 3000, 'no retry storm');
  }
});

test('rgw: lifeboat backup, list, verify and extract end to end through the CLI', async () => {
  const { etcd, hostRoot } = await startEtcdHost(work, { members: 1, populate: { keys: 300, valueBytes: [100, 20_000], seed: 11 } });
  try {
    const key = await generateIdentity();
    const keyFile = path.join(work, 'key.txt');
    await writeFile(keyFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
    const doc = configDoc(etcd, hostRoot, '/unused', [key.recipient]);
    const config = await writeConfig(work, {
      ...doc,
      store: { s3: { endpoint: rgw.endpoint, region: rgw.region, bucket: BUCKET, prefix: 'e2e/', partSizeMiB: 5 } },
    });
    const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    const made = await runCli(['--config', config, 'backup'], env);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /committed: .* stored at s3:\/\/lifeboat-test\/e2e\//);
    const list = await runCli(['--config', config, 'list', '--json'], env);
    const [only] = JSON.parse(list.stdout) as { backupId: string; archive: { key: string } }[];
    assert.ok(only);
    const verified = await runCli(['--config', config, 'verify', 'latest', '--identity', keyFile], env);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /OK \(decrypted/);
    const out = path.join(work, 'extracted');
    const extracted = await runCli(['--config', config, 'extract', only.backupId, '--to', out, '--identity', keyFile], env);
    assert.equal(extracted.code, 0, extracted.stderr);
    for await (const _ of await new S3Store(options('e2e/')).get(only.archive.key)) {
      // readable
    }
  } finally {
    await etcd.stop();
  }
});

test('rgw: radosgw killed mid-upload fails the backup cleanly; cleanup leaves nothing; the next backup succeeds', async () => {
  const { etcd, hostRoot } = await startEtcdHost(path.join(work, 'kill'), { members: 1, populate: { keys: 400, valueBytes: [60_000, 100_000], seed: 12 } });
  try {
    const key = await generateIdentity();
    const config = configOf(configDoc(etcd, hostRoot, '/unused', [key.recipient]));
    const s3store = new S3Store(options('kill/', { maxAttempts: 2 }));
    let passed = 0;
    let killed = false;
    const store: BackupStore = Object.assign(Object.create(s3store) as BackupStore, {
      put: (k: string, body: Readable, o?: PutOptions) => {
        body.on('data', (chunk: Buffer) => {
          passed += chunk.length;
          if (!killed && passed > 7 * 1024 * 1024) {
            killed = true;
            rgw.killGateway('SIGKILL');
          }
        });
        return s3store.put(k, body, o);
      },
    });
    const run = (s: BackupStore) => takeBackup(config, s, { node: 'n', compression: { algorithm: 'none', level: 1 } });
    await assert.rejects(run(store), StoreError);
    assert.ok(killed);
    await rgw.startGateway();
    const catalog = new Catalog(s3store, 'it', { trust: TEST_TRUST });
    await catalog.cleanup(new Date(Date.now() + 60_000));
    assert.deepEqual(await s3store.list(''), [], 'no object at all under the prefix');
    assert.deepEqual((await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'kill/' }))).Uploads ?? [], []);
    const manifest = await run(s3store);
    assert.deepEqual((await catalog.list()).map((m) => m.backupId), [manifest.backupId]);
  } finally {
    await etcd.stop();
  }
});
