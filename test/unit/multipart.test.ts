import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { MIN_PART_SIZE, uploadPooled } from '../../src/store/multipart.ts';

/**
 * The pooled uploader's bookkeeping, against an in-memory stand-in for the S3 client: request
 * order, concurrency, buffer reuse and cleanup. Byte-for-byte equality with lib-storage's Upload
 * on a real RGW is checked in test/integration/s3-multipart.test.ts.
 */
const PART = MIN_PART_SIZE;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface Call {
  op: string;
  input: Record<string, unknown>;
  inFlightParts: number;
}

interface Behaviour {
  delay?: (partNumber: number) => number;
  fault?: (op: string, partNumber: number) => Error | 'hang' | undefined;
}

/** Answers each request after `delay` ms (per request, so parts finish out of order), or with `fault`. */
class FakeS3 {
  readonly calls: Call[] = [];
  readonly stored = new Map<number, Buffer>();
  /** The distinct memory the part bodies lived in. */
  readonly arrays = new Set<ArrayBufferLike>();
  inFlight = 0;
  maxInFlight = 0;
  /** A part body changed while its request was in flight. */
  overwritten: number[] = [];
  object: Buffer | undefined;

  readonly behave: Behaviour;

  constructor(behave: Behaviour = {}) {
    this.behave = behave;
  }

  async send(command: { input: Record<string, unknown> }, options: { abortSignal?: AbortSignal } = {}): Promise<Record<string, unknown>> {
    const op = command instanceof CreateMultipartUploadCommand ? 'create'
      : command instanceof UploadPartCommand ? 'part'
      : command instanceof CompleteMultipartUploadCommand ? 'complete'
      : command instanceof AbortMultipartUploadCommand ? 'abort'
      : command instanceof PutObjectCommand ? 'put'
      : 'other';
    const input = command.input;
    this.calls.push({ op, input, inFlightParts: this.inFlight });
    const partNumber = Number(input.PartNumber ?? 0);
    const fault = this.behave.fault?.(op, partNumber);
    if (op !== 'part') {
      await new Promise((r) => setImmediate(r));
      if (fault instanceof Error) throw fault;
      switch (op) {
        case 'create':
          return { UploadId: 'u1' };
        case 'put':
          this.object = Buffer.from(input.Body as Buffer);
          return {};
        case 'complete': {
          const parts = (input.MultipartUpload as { Parts: { PartNumber: number; ETag: string }[] }).Parts;
          assert.deepEqual(parts.map((p) => p.PartNumber), parts.map((_, i) => i + 1), 'parts listed in order');
          for (const p of parts) assert.equal(p.ETag, `"etag-${p.PartNumber}"`);
          this.object = Buffer.concat(parts.map((p) => this.stored.get(p.PartNumber)!));
          return {};
        }
        default:
          return {};
      }
    }
    const body = input.Body as Buffer;
    this.arrays.add(body.buffer);
    const before = sha(body);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise<void>((resolve, reject) => {
        const signal = options.abortSignal;
        const done = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          clearTimeout(timer);
          reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
        };
        const timer = fault === 'hang' ? undefined : setTimeout(done, this.behave.delay?.(partNumber) ?? 1);
        if (signal?.aborted) onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      if (fault instanceof Error) throw fault;
      if (sha(body) !== before) this.overwritten.push(partNumber);
      this.stored.set(partNumber, Buffer.from(body));
      return { ETag: `"etag-${partNumber}"` };
    } finally {
      this.inFlight -= 1;
    }
  }

  ops(): string[] {
    return this.calls.map((c) => (c.op === 'part' ? `part ${String(c.input.PartNumber)}` : c.op));
  }

  get client(): S3Client {
    return this as unknown as S3Client;
  }
}

const target = { Bucket: 'b', Key: 'k' };

function chunked(body: Buffer, sizes: () => number): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < body.length;) {
      const n = Math.max(1, sizes());
      yield body.subarray(i, i + n);
      i += n;
    }
  })());
}

test('a body of at most one part goes up in one PutObject; one byte more makes two parts', async () => {
  for (const size of [0, 1, 1000, PART]) {
    const s3 = new FakeS3();
    const body = randomBytes(size);
    const out = await uploadPooled(s3.client, target, Readable.from(size ? [body] : []), { partSize: PART, queueSize: 4 });
    assert.deepEqual(out, { bytes: size, parts: 0 });
    assert.deepEqual(s3.ops(), ['put'], `${size} bytes`);
    assert.ok(s3.object?.equals(body));
  }
  const s3 = new FakeS3();
  const body = randomBytes(PART + 1);
  assert.deepEqual(await uploadPooled(s3.client, target, Readable.from([body]), { partSize: PART, queueSize: 4 }), { bytes: PART + 1, parts: 2 });
  assert.deepEqual(s3.ops(), ['create', 'part 1', 'part 2', 'complete']);
  assert.equal((s3.calls[2]!.input.Body as Buffer).length, 1);
  assert.ok(s3.object?.equals(body));
});

test('many parts: at most queueSize in flight, queueSize + 1 buffers reused, none refilled while its request is in flight', async () => {
  for (const queueSize of [1, 2, 4]) {
    // Parts finish out of order: later ones sooner.
    const s3 = new FakeS3({ delay: (n) => 1 + ((n * 7) % 5) * 3 });
    const body = randomBytes(11 * PART + 12345);
    const out = await uploadPooled(s3.client, target, chunked(body, () => Math.floor(Math.random() * 200_000)), { partSize: PART, queueSize });
    assert.deepEqual(out, { bytes: body.length, parts: 12 });
    assert.equal(s3.maxInFlight, queueSize, `queueSize ${queueSize}: parts in flight`);
    assert.ok(s3.arrays.size <= queueSize + 1, `queueSize ${queueSize}: ${s3.arrays.size} part buffers`);
    assert.deepEqual(s3.overwritten, []);
    assert.equal(sha(s3.object!), sha(body));
    assert.deepEqual(s3.ops().filter((o) => !o.startsWith('part')), ['create', 'complete']);
  }
});

test('a chunking of many tiny writes stores the same bytes', async () => {
  const s3 = new FakeS3();
  const body = randomBytes(2 * PART + 17);
  await uploadPooled(s3.client, target, chunked(body, () => 1 + Math.floor(Math.random() * 300)), { partSize: PART, queueSize: 2 });
  assert.equal(sha(s3.object!), sha(body));
  assert.deepEqual(s3.calls.filter((c) => c.op === 'part').map((c) => (c.input.Body as Buffer).length), [PART, PART, 17]);
});

test('Object Lock fields go on CreateMultipartUpload and PutObject, the checksum algorithm on every part', async () => {
  const lock = { ...target, ObjectLockMode: 'GOVERNANCE' as const, ObjectLockRetainUntilDate: new Date('2030-01-01T00:00:00Z'), ChecksumAlgorithm: 'CRC32' as const };
  const s3 = new FakeS3();
  await uploadPooled(s3.client, lock, Readable.from([randomBytes(PART + 5)]), { partSize: PART, queueSize: 2 });
  const [create, p1, p2] = s3.calls;
  assert.deepEqual(create!.input, lock);
  for (const p of [p1!, p2!]) {
    assert.equal(p.input.ChecksumAlgorithm, 'CRC32');
    assert.equal(p.input.ObjectLockMode, undefined);
  }
  const small = new FakeS3();
  await uploadPooled(small.client, lock, Readable.from([Buffer.from('x')]), { partSize: PART, queueSize: 2 });
  assert.deepEqual({ ...small.calls[0]!.input, Body: undefined }, { ...lock, Body: undefined });
});

test('a failed part: the others in flight are cancelled, the upload is aborted only after they settled, the body is destroyed with the wrapped error', async () => {
  const s3 = new FakeS3({ delay: (n) => (n === 3 ? 5 : 50), fault: (op, n) => (op === 'part' && n === 3 ? Object.assign(new Error('slow down'), { name: 'SlowDown' }) : undefined) });
  const body = chunked(randomBytes(20 * PART), () => 64 * 1024);
  const wrapped: unknown[] = [];
  const wrap = (err: unknown) => {
    wrapped.push(err);
    return new Error(`wrapped: ${(err as Error).name}`);
  };
  await assert.rejects(uploadPooled(s3.client, target, body, { partSize: PART, queueSize: 4, wrap }), /^Error: wrapped: SlowDown$/);
  assert.equal(wrapped.length, 1, 'wrapped once');
  assert.ok(body.destroyed);
  assert.match(String(body.errored), /wrapped: SlowDown/);
  const abort = s3.calls.find((c) => c.op === 'abort');
  assert.ok(abort, 'the upload was aborted');
  assert.equal(abort.inFlightParts, 0, 'no part in flight when the upload was aborted');
  assert.equal(s3.calls.at(-1)?.op, 'abort');
  assert.ok(!s3.calls.some((c) => c.op === 'complete'));
  assert.ok(s3.calls.filter((c) => c.op === 'part').length <= 5, 'reading stopped at the failure');
});

test('a body that fails aborts the upload; so does a failed CompleteMultipartUpload', async () => {
  async function* failing(): AsyncGenerator<Buffer> {
    yield randomBytes(PART);
    yield randomBytes(PART);
    throw new Error('source broke');
  }
  const s3 = new FakeS3();
  await assert.rejects(uploadPooled(s3.client, target, Readable.from(failing()), { partSize: PART, queueSize: 2 }), /source broke/);
  assert.deepEqual(s3.ops(), ['create', 'part 1', 'abort']);

  const failingComplete = new FakeS3({ fault: (op) => (op === 'complete' ? new Error('InternalError') : undefined) });
  await assert.rejects(uploadPooled(failingComplete.client, target, Readable.from([randomBytes(PART + 1)]), { partSize: PART, queueSize: 2 }), /InternalError/);
  assert.deepEqual(failingComplete.ops(), ['create', 'part 1', 'part 2', 'complete', 'abort']);
});

test('aborting the signal cancels the parts in flight, then aborts the upload; an aborted signal sends nothing', async () => {
  const s3 = new FakeS3({ fault: (op) => (op === 'part' ? 'hang' : undefined) });
  const controller = new AbortController();
  const body = chunked(randomBytes(10 * PART), () => 1 << 20);
  const upload = uploadPooled(s3.client, target, body, { partSize: PART, queueSize: 2, signal: controller.signal, wrap: () => new Error('cancelled') });
  while (s3.inFlight < 2) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  await assert.rejects(upload, /^Error: cancelled$/);
  assert.equal(s3.inFlight, 0);
  assert.deepEqual(s3.ops(), ['create', 'part 1', 'part 2', 'abort']);
  assert.ok(body.destroyed);

  const none = new FakeS3();
  const aborted = AbortSignal.abort();
  await assert.rejects(uploadPooled(none.client, target, Readable.from([Buffer.from('x')]), { partSize: PART, queueSize: 2, signal: aborted }));
  assert.deepEqual(none.ops(), []);
});

test('a 403 on CreateMultipartUpload is the only request', async () => {
  const s3 = new FakeS3({ fault: (op) => (op === 'create' ? Object.assign(new Error('Access Denied'), { name: 'AccessDenied' }) : undefined) });
  const body = Readable.from([randomBytes(6 * 1024 * 1024), randomBytes(6 * 1024 * 1024)]);
  await assert.rejects(uploadPooled(s3.client, target, body, { partSize: PART, queueSize: 4 }), { name: 'AccessDenied' });
  assert.deepEqual(s3.ops(), ['create']);
  assert.ok(body.destroyed);
});

test('part size and queue size are checked', async () => {
  const s3 = new FakeS3();
  await assert.rejects(uploadPooled(s3.client, target, Readable.from([]), { partSize: PART - 1, queueSize: 1 }), RangeError);
  await assert.rejects(uploadPooled(s3.client, target, Readable.from([]), { partSize: PART, queueSize: 0 }), RangeError);
});
