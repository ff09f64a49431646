import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.ts';
import { StoreError } from '../../src/errors/errors.ts';
import { startRgw } from '../../scripts/rig/rgw.ts';
import { storeConformance } from '../support/store-conformance.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-rgw-'));
const rgw = await startRgw({ dir: path.join(work, 'ceph') });
after(async () => {
  await rgw.stop();
  await rm(work, { recursive: true, force: true });
});
const BUCKET = 'lifeboat-test';
const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: rgw, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));

function options(prefix: string, overrides: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    endpoint: rgw.endpoint,
    region: rgw.region,
    bucket: BUCKET,
    prefix,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
    maxAttempts: 3,
    ...overrides,
  };
}

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
