import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type ObjectLockMode,
  type S3Client,
} from '@aws-sdk/client-s3';

/** S3's smallest part (all but the last) and its most parts per upload. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PARTS = 10_000;

/** What every request of one upload carries besides its body. */
export interface UploadTarget {
  Bucket: string;
  Key: string;
  /** Object Lock: sent with PutObject and CreateMultipartUpload. */
  ObjectLockMode?: ObjectLockMode;
  ObjectLockRetainUntilDate?: Date;
  /** A checksum on every request that carries a body (a header: bodies are buffers). */
  ChecksumAlgorithm?: 'CRC32';
}

export interface PooledUploadOptions {
  /** Bytes per part (at least MIN_PART_SIZE); a body of at most this many goes up in one PutObject. */
  partSize: number;
  /** Parts in flight at once (at least 1). */
  queueSize: number;
  /** Aborting cancels the parts in flight and aborts the multipart upload. */
  signal?: AbortSignal | undefined;
  /**
   * Turns the first failure (of the body, of a request, or the abort) into the error the upload
   * rejects with and destroys `body` with. Called once. Default: the failure itself.
   */
  wrap?: (err: unknown) => Error;
}

export interface UploadOutcome {
  /** Bytes read from the body and stored. */
  bytes: number;
  /** Parts of the multipart upload; 0 when the body went up in one PutObject. */
  parts: number;
}

/**
 * Streams `body` into one S3 object through a fixed pool of part buffers.
 *
 * Memory: at most queueSize + 1 buffers of partSize bytes, allocated as the body needs them and
 * never more, so one upload holds at most (queueSize + 1) x partSize (default 5 x 8 MiB = 40 MiB):
 * queueSize parts in flight and one filling. The body is copied once, into the buffer being
 * filled; while queueSize parts are in flight and that buffer is full, the body is not read
 * (backpressure). A buffer is refilled only after its UploadPart request settled: the SDK's
 * HTTP handler settles a request only once its body was handed to the socket or the request was
 * destroyed, and a request that failed is not read again. (lib-storage's Upload instead
 * concatenates a new buffer for every part, which left V8 to collect 8 MiB per part.)
 *
 * Requests: a body of at most partSize bytes goes up in one PutObject (also an empty one);
 * otherwise CreateMultipartUpload, UploadPart per full part (up to queueSize at once, in order
 * of the body), and CompleteMultipartUpload with the part list. Every request is retried by the
 * client's retry strategy (maxAttempts, with backoff and jitter) when its error is transient;
 * a part's body is a buffer, so a retry sends it again. The object appears only when
 * CompleteMultipartUpload (or the PutObject) succeeds.
 *
 * Failure: on any failure (the body errs, a request fails after its retries, or `signal`
 * aborts), the parts in flight are cancelled and, once every one of them has settled, the
 * multipart upload is aborted, so the store keeps no part; `body` is destroyed with the wrapped
 * error, which the upload rejects with. Aborting the upload is best effort: what a dead network
 * leaves, the store's removeIncomplete finds later. PutObject and CompleteMultipartUpload are
 * the commit: once sent they are not cancelled (a cancelled one could still take effect on the
 * server), and an abort that comes while they run has no effect.
 */
export async function uploadPooled(client: S3Client, target: UploadTarget, body: Readable, options: PooledUploadOptions): Promise<UploadOutcome> {
  const { partSize, queueSize } = options;
  if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE) throw new RangeError(`partSize must be at least ${MIN_PART_SIZE} bytes, got ${partSize}`);
  if (!Number.isInteger(queueSize) || queueSize < 1) throw new RangeError(`queueSize must be a whole number of at least 1, got ${queueSize}`);
  const { Bucket, Key, ChecksumAlgorithm } = target;
  const cancel = new AbortController();
  const pool = new PartBuffers(queueSize + 1, partSize);
  const inFlight = new Set<Promise<void>>();
  const parts: CompletedPart[] = [];
  let failure: Error | undefined;
  let uploadId: string | undefined;
  let partNumber = 0;
  let bytes = 0;

  const fail = (err: unknown): void => {
    if (failure) return;
    failure = options.wrap ? options.wrap(err) : err instanceof Error ? err : new Error(String(err));
    cancel.abort(failure);
    destroyWith(body, failure);
  };
  const onAbort = () => fail(options.signal?.reason ?? new Error('upload aborted'));
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();

  const start = async () => {
    const res = await client.send(new CreateMultipartUploadCommand(target));
    if (!res.UploadId) throw new Error(`CreateMultipartUpload of ${Key} answered without an UploadId`);
    return res.UploadId;
  };
  const ship = (buffer: Buffer, length: number, UploadId: string) => {
    const PartNumber = ++partNumber;
    if (PartNumber > MAX_PARTS) throw new RangeError(`the object needs more than ${MAX_PARTS} parts of ${partSize} bytes: raise the part size`);
    const request = new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body: buffer.subarray(0, length), ...(ChecksumAlgorithm ? { ChecksumAlgorithm } : {}) });
    const sent: Promise<void> = client
      .send(request, { abortSignal: cancel.signal })
      .then((res) => {
        if (!res.ETag) throw new Error(`UploadPart ${PartNumber} of ${Key} answered without an ETag`);
        parts.push({ PartNumber, ETag: res.ETag, ...(res.ChecksumCRC32 ? { ChecksumCRC32: res.ChecksumCRC32 } : {}) });
      })
      .catch(fail)
      .finally(() => {
        inFlight.delete(sent);
        pool.release(buffer);
      });
    inFlight.add(sent);
  };
  const check = () => {
    if (failure) throw failure;
  };

  try {
    check();
    let current = pool.take();
    let fill = 0;
    for await (const data of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer | string>) {
      const chunk = typeof data === 'string' ? Buffer.from(data) : data;
      check();
      bytes += chunk.length;
      let offset = 0;
      while (offset < chunk.length) {
        if (fill === partSize) {
          // The full buffer is not the last part: more bytes follow.
          uploadId ??= await start();
          check();
          while (inFlight.size >= queueSize) await Promise.race(inFlight);
          check();
          ship(current, fill, uploadId);
          current = pool.take();
          fill = 0;
        }
        const n = chunk.copy(current, fill, offset);
        fill += n;
        offset += n;
      }
    }
    check();
    if (uploadId === undefined) {
      await client.send(new PutObjectCommand({ ...target, Body: current.subarray(0, fill) }));
      return { bytes, parts: 0 };
    }
    while (inFlight.size >= queueSize) await Promise.race(inFlight);
    check();
    ship(current, fill, uploadId);
    while (inFlight.size > 0) await Promise.race(inFlight);
    check();
    parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    await client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    return { bytes, parts: parts.length };
  } catch (err) {
    fail(err);
    await Promise.allSettled(inFlight);
    if (uploadId !== undefined) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId })).catch(() => undefined);
    }
    throw failure ?? err;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Destroys `body` with `err`, so that whatever produces it stops and learns why. The upload's
 * rejection reports the error; a body nobody else listens to must not crash the process with an
 * unhandled 'error' event.
 */
export function destroyWith(body: Readable, err: Error): void {
  if (body.destroyed) return;
  body.on('error', ignore);
  body.destroy(err);
}

function ignore(): void {}

/**
 * At most `count` buffers of `size` bytes, made when first needed (a small body touches one)
 * and reused: take() hands out a free one. The uploader takes one only while fewer than
 * `count` are out, so take() never waits.
 */
class PartBuffers {
  readonly #count: number;
  readonly #size: number;
  readonly #free: Buffer[] = [];
  #made = 0;

  constructor(count: number, size: number) {
    this.#count = count;
    this.#size = size;
  }

  take(): Buffer {
    const free = this.#free.pop();
    if (free) return free;
    if (this.#made >= this.#count) throw new Error(`all ${this.#count} part buffers are in use`);
    this.#made += 1;
    // Outside Node's shared pool: each part buffer is its own allocation, freed with the upload.
    return Buffer.allocUnsafeSlow(this.#size);
  }

  release(buffer: Buffer): void {
    this.#free.push(buffer);
  }
}
