import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { CancelledError, StoreError } from '../../src/errors/errors.ts';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.ts';
import { startFaultProxy } from '../support/fault-proxy.ts';
import { startEtcdHost } from '../../scripts/rig/etcd.ts';
import { generateIdentity } from '../../src/crypto/age.ts';
import { storedSha256 as storedSha } from '../support/fixtures.ts';
import { configDoc, runCli, writeConfig } from '../support/lifeboat.ts';
import { startS3Rig } from '../support/s3-rig.ts';

/**
 * The pooled multipart uploader against lib-storage's Upload, its reference, on a real Ceph RGW:
 * for the same bodies both store byte-identical objects in the same parts (equal multipart
 * ETags), with the same requests; Object Lock puts too. Then the pooled path under faults: parts
 * retried (503, reset, a hung request) while their buffers are reused still store exactly the
 * body, and a failed or cancelled upload leaves no multipart upload behind.
 */
const MiB = 1024 * 1024;
const PART = 5 * MiB;
const PLAIN = 'multipart-plain';
const LOCKED = 'multipart-lock';
const rig = await startS3Rig('multipart', { buckets: [PLAIN], objectLockBuckets: [LOCKED] });
after(() => rig.stop());
const { work, rgw, s3 } = rig;
const options = (overrides: Partial<S3StoreOptions> = {}) => rig.storeOptions({ bucket: PLAIN, prefix: '', partSize: PART, ...overrides });

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function chunks(body: Buffer, size: () => number): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < body.length;) {
      const n = Math.max(1, size());
      yield body.subarray(i, i + n);
      i += n;
    }
  })());
}

const uploadsLeft = rig.uploadsUnder;

/** Name, body, how it is written, and the parts it must be stored in (0: one PutObject). */
const BODIES: { name: string; body: Buffer; write: (b: Buffer) => Readable; parts: number }[] = [
  { name: 'empty', body: Buffer.alloc(0), write: () => Readable.from([]), parts: 0 },
  { name: 'one-byte', body: randomBytes(1), write: (b) => Readable.from([b]), parts: 0 },
  { name: 'one-part', body: randomBytes(PART), write: (b) => chunks(b, () => MiB), parts: 0 },
  { name: 'one-part-and-a-byte', body: randomBytes(PART + 1), write: (b) => Readable.from([b]), parts: 2 },
  // Eight parts through a pool of three buffers: each buffer is refilled at least twice.
  { name: 'several-parts', body: randomBytes(7 * PART + 4321), write: (b) => chunks(b, () => 1 + Math.floor(Math.random() * 300_000)), parts: 8 },
  { name: 'tiny-writes', body: randomBytes(2 * PART + 99), write: (b) => chunks(b, () => 1 + Math.floor(Math.random() * 512)), parts: 3 },
];

test('pooled and lib-storage uploads store byte-identical objects in the same parts, with the same requests', async (t) => {
  const proxy = await startFaultProxy(rgw.endpoint, () => undefined);
  try {
    for (const { name, body, write, parts } of BODIES) {
      const requests: Record<string, string[]> = {};
      const etags: Record<string, string | undefined> = {};
      for (const uploader of ['pooled', 'lib-storage'] as const) {
        const store = new S3Store(options({ endpoint: proxy.endpoint, prefix: `${uploader}/`, uploader }));
        const from = proxy.seen.length;
        const put = await store.put(`same/${name}`, write(body));
        requests[uploader] = proxy.seen.slice(from).map((r) => `${r.operation}${r.query.has('partNumber') ? ` ${r.query.get('partNumber')}` : ''}`).sort();
        assert.equal(put.size, body.length, `${uploader} ${name}: size`);
        assert.equal(await storedSha(store, `same/${name}`), sha(body), `${uploader} ${name}: bytes`);
        const head = await s3.send(new HeadObjectCommand({ Bucket: PLAIN, Key: `${uploader}/same/${name}` }));
        assert.equal(head.ContentLength, body.length);
        etags[uploader] = head.ETag;
      }
      assert.equal(etags.pooled, etags['lib-storage'], `${name}: same ETag, so the same part boundaries`);
      assert.equal(/-(\d+)"$/.exec(etags.pooled ?? '')?.[1], parts === 0 ? undefined : String(parts), `${name}: ${etags.pooled}`);
      assert.deepEqual(requests.pooled, requests['lib-storage'], `${name}: same requests`);
      t.diagnostic(`${name}: ${body.length} bytes, ETag ${etags.pooled}, requests ${requests.pooled?.join(', ')}`);
    }
    assert.deepEqual(await uploadsLeft(PLAIN, ''), []);
  } finally {
    await proxy.close();
  }
});

test('Object Lock puts: both uploaders store the same bytes under the same retention', async () => {
  const lock = { mode: 'GOVERNANCE' as const, days: 1 };
  const started = Date.now();
  for (const size of [1, PART + 1]) {
    const body = randomBytes(size);
    const heads = [];
    for (const uploader of ['pooled', 'lib-storage'] as const) {
      const store = new S3Store(options({ bucket: LOCKED, prefix: `${uploader}/`, uploader, objectLock: lock }));
      const put = await store.put(`locked/${size}`, Readable.from([body]), { retain: true });
      assert.equal(put.size, size);
      assert.equal(await storedSha(store, `locked/${size}`), sha(body));
      const head = await s3.send(new HeadObjectCommand({ Bucket: LOCKED, Key: `${uploader}/locked/${size}` }));
      assert.equal(head.ObjectLockMode, 'GOVERNANCE', `${uploader} ${size}`);
      const until = head.ObjectLockRetainUntilDate?.getTime() ?? 0;
      assert.ok(until >= started + 86_400_000 - 1000 && until <= Date.now() + 86_400_000, `${uploader} ${size}: retained for a day`);
      heads.push(head.ETag);
    }
    assert.equal(heads[0], heads[1], `${size}: same ETag`);
  }
});

test('parts retried (503, reset, a hung request) while the pool reuses their buffers: RGW stores exactly the body', async (t) => {
  const proxy = await startFaultProxy(rgw.endpoint, (req) => {
    if (req.operation !== 'UploadPart' || req.attempt > 1) return undefined;
    const n = Number(req.query.get('partNumber'));
    if (n === 3) return 'reset';
    if (n === 5) return 'hold';
    return { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };
  });
  try {
    const store = new S3Store(options({ endpoint: proxy.endpoint, prefix: 'retried/', idleTimeoutMs: 1500 }));
    const body = randomBytes(9 * PART + 777);
    const put = await store.put('k/retried', chunks(body, () => 64 * 1024 + 16));
    assert.equal(put.size, body.length);
    assert.equal(await storedSha(new S3Store(options({ prefix: 'retried/' })), 'k/retried'), sha(body));
    const parts = proxy.seen.filter((r) => r.operation === 'UploadPart');
    for (let n = 1; n <= 10; n++) {
      const tries = parts.filter((r) => r.query.get('partNumber') === String(n));
      assert.deepEqual(tries.map((r) => [r.attempt, r.outcome]), [[1, n === 3 ? 'reset' : n === 5 ? 'hold' : 503], [2, 'forwarded']], `part ${n}`);
      assert.equal(tries[1]?.clientAttempt, 2, `part ${n}: retried by the SDK`);
    }
    assert.deepEqual(await uploadsLeft(PLAIN, 'retried/'), []);
    t.diagnostic(`${parts.length} UploadPart requests for 10 parts, every first attempt faulted`);
  } finally {
    await proxy.close();
  }
});

test('a part refused with 403 fails the put: no multipart upload is left, the body is destroyed', async () => {
  const proxy = await startFaultProxy(rgw.endpoint, (req) => (req.operation === 'UploadPart' && req.query.get('partNumber') === '2' ? { status: 403, code: 'AccessDenied', message: 'Access Denied' } : undefined));
  try {
    const store = new S3Store(options({ endpoint: proxy.endpoint, prefix: 'denied/', maxAttempts: 5 }));
    const body = chunks(randomBytes(6 * PART), () => MiB);
    await assert.rejects(store.put('k/denied', body), (err: unknown) => {
      assert.ok(err instanceof StoreError, String(err));
      assert.match(err.message, /AccessDenied \(HTTP 403\)/);
      return true;
    });
    assert.ok(body.destroyed);
    assert.match(String(body.errored), /AccessDenied/);
    assert.equal(proxy.seen.filter((r) => r.operation === 'UploadPart' && r.query.get('partNumber') === '2').length, 1, '403 is not retried');
    const abort = proxy.seen.findIndex((r) => r.operation === 'AbortMultipartUpload');
    assert.ok(abort > 0, 'the upload was aborted');
    assert.deepEqual(await uploadsLeft(PLAIN, 'denied/'), []);
    assert.equal(await store.stat('k/denied'), undefined);
  } finally {
    await proxy.close();
  }
});

test('cancelling a put whose parts hang returns at once, aborts the upload and leaves nothing', async () => {
  const proxy = await startFaultProxy(rgw.endpoint, (req) => (req.operation === 'UploadPart' && req.query.get('partNumber') !== '1' ? 'hold' : undefined));
  try {
    // The idle timeout is far away: only the cancellation can end the held requests.
    const store = new S3Store(options({ endpoint: proxy.endpoint, prefix: 'cancel/', idleTimeoutMs: 600_000 }));
    const controller = new AbortController();
    const body = chunks(randomBytes(8 * PART), () => MiB);
    const put = store.put('k/cancelled', body, { signal: controller.signal });
    while (proxy.seen.filter((r) => r.outcome === 'hold').length < 2) await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    await assert.rejects(put, CancelledError);
    assert.ok(body.destroyed);
    const ops = proxy.seen.map((r) => r.operation);
    assert.equal(ops.at(-1), 'AbortMultipartUpload');
    assert.deepEqual(await uploadsLeft(PLAIN, 'cancel/'), []);
    assert.equal(await store.stat('k/cancelled'), undefined);
  } finally {
    await proxy.close();
  }
});

test('lifeboat backup whose upload is refused mid-stream exits with the error, cancels the snapshot and leaves nothing', { timeout: 300_000 }, async () => {
  // About 50 MB of values: far more than etcd sends ahead (the 4 MiB gRPC window) when part 2 fails.
  const { etcd, hostRoot } = await startEtcdHost(work, { members: 1, populate: { keys: 600, valueBytes: [60_000, 100_000], seed: 31 } });
  const proxy = await startFaultProxy(rgw.endpoint, (req) => (req.operation === 'UploadPart' && req.query.get('partNumber') === '2' ? { status: 403, code: 'AccessDenied', message: 'Access Denied' } : undefined));
  try {
    const { recipient } = await generateIdentity();
    const config = await writeConfig(work, {
      ...configDoc(etcd, hostRoot, '/unused', [recipient]),
      compression: { algorithm: 'none' },
      store: { s3: { endpoint: proxy.endpoint, region: rgw.region, bucket: PLAIN, prefix: 'cli/', partSizeMiB: 5, queueSize: 1 } },
    });
    // Before the fix the process never exited: the abandoned snapshot call kept it alive.
    const result = await runCli(['--config', config, 'backup'], { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /AccessDenied \(HTTP 403\)/);
    assert.deepEqual(await uploadsLeft(PLAIN, 'cli/'), []);
    assert.deepEqual(await new S3Store(options({ prefix: 'cli/' })).list(''), []);
  } finally {
    await proxy.close();
    await etcd.stop();
  }
});
