import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { CancelledError, LifeboatError, NotFoundError, StoreError } from '../errors/errors.ts';
import { assertObjectKey } from './layout.ts';
import type { BackupStore, ObjectInfo, PutOptions } from './store.ts';

export interface S3StoreOptions {
  /** e.g. `https://rgw.example:443`; absent for AWS itself. */
  endpoint?: string | undefined;
  region: string;
  bucket: string;
  /** Prepended to every key, e.g. `lifeboat/`. */
  prefix: string;
  forcePathStyle: boolean;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** PEM bundle for an endpoint behind a private CA. */
  caFile?: string | undefined;
  /** Multipart part size in bytes (S3 minimum 5 MiB). */
  partSize: number;
  /** Parts uploaded at once. Memory for one put is bounded by queueSize x partSize. */
  queueSize: number;
  /** Attempts per request (and per part) for transient errors: 5xx, timeouts, resets. */
  maxAttempts: number;
}

/**
 * S3 or Ceph RGW as a store. Puts stream through lib-storage's Upload (multipart above one
 * part), which keeps memory at queueSize x partSize and aborts the multipart upload on failure;
 * an object appears only when the upload completes. Checksums are sent only when an operation
 * requires them: Ceph Pacific's RGW refuses aws-chunked bodies with trailing checksums.
 */
export class S3Store implements BackupStore {
  readonly description: string;
  readonly #client: S3Client;
  readonly #options: S3StoreOptions;

  constructor(options: S3StoreOptions) {
    this.#options = options;
    this.description = `s3://${options.bucket}/${options.prefix}${options.endpoint ? ` at ${options.endpoint}` : ''}`;
    this.#client = new S3Client({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle,
      credentials: { ...options.credentials }, // the SDK annotates this object; config is frozen
      maxAttempts: options.maxAttempts,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(options.caFile ? { requestHandler: { httpsAgent: new Agent({ ca: readFileSync(options.caFile), keepAlive: true }) } } : {}),
    });
  }

  #key(key: string): string {
    return this.#options.prefix + assertObjectKey(key);
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const Key = this.#key(key);
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#options.bucket, Key, Body: body },
      queueSize: this.#options.queueSize,
      partSize: this.#options.partSize,
      leavePartsOnError: false,
    });
    const onAbort = () => void upload.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (options.signal?.aborted) throw new CancelledError(`upload of ${key} cancelled`);
      await upload.done();
    } catch (err) {
      const wrapped = options.signal?.aborted ? new CancelledError(`upload of ${key} cancelled`) : this.#wrap(err, `write ${key}`);
      if (!body.destroyed) body.destroy(wrapped);
      throw wrapped;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    // CompleteMultipartUpload's answer is unreliable on RGW (empty ETag); HeadObject is not.
    const info = await this.stat(key);
    if (!info) throw new StoreError(`${this.description}: ${key} is missing right after its upload completed`);
    return { size: info.size };
  }

  async get(key: string): Promise<Readable> {
    try {
      const res = await this.#client.send(new GetObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }));
      if (!(res.Body instanceof Readable)) throw new StoreError(`${this.description}: ${key}: no body`);
      return res.Body;
    } catch (err) {
      throw this.#wrap(err, `read ${key}`);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const res = await this.#client.send(new HeadObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }));
      return { key, size: res.ContentLength ?? 0, modified: res.LastModified ?? new Date(0) };
    } catch (err) {
      const wrapped = this.#wrap(err, `stat ${key}`);
      if (wrapped instanceof NotFoundError) return undefined;
      throw wrapped;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let ContinuationToken: string | undefined;
    try {
      do {
        const res = await this.#client.send(new ListObjectsV2Command({ Bucket: this.#options.bucket, Prefix: this.#options.prefix + prefix, ContinuationToken }));
        for (const o of res.Contents ?? []) {
          if (o.Key === undefined) continue;
          out.push({ key: o.Key.slice(this.#options.prefix.length), size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) });
        }
        ContinuationToken = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (ContinuationToken);
    } catch (err) {
      throw this.#wrap(err, `list ${prefix}`);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }));
    } catch (err) {
      const wrapped = this.#wrap(err, `delete ${key}`);
      if (!(wrapped instanceof NotFoundError)) throw wrapped;
    }
  }

  async removeIncomplete(prefix: string, olderThan: Date): Promise<number> {
    let removed = 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    try {
      do {
        const res = await this.#client.send(new ListMultipartUploadsCommand({ Bucket: this.#options.bucket, Prefix: this.#options.prefix + prefix, KeyMarker, UploadIdMarker }));
        for (const u of res.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated >= olderThan) continue;
          await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#options.bucket, Key: u.Key, UploadId: u.UploadId }));
          removed += 1;
        }
        KeyMarker = res.IsTruncated ? res.NextKeyMarker : undefined;
        UploadIdMarker = res.IsTruncated ? res.NextUploadIdMarker : undefined;
      } while (KeyMarker);
    } catch (err) {
      throw this.#wrap(err, `clean up uploads under ${prefix}`);
    }
    return removed;
  }

  /** Maps SDK errors by their stable S3 error codes, with what to check next. */
  #wrap(err: unknown, what: string): Error {
    if (err instanceof LifeboatError) return err;
    const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
    const code = err instanceof Error ? err.name : String(err);
    const where = `${this.description}: ${what}`;
    if (code === 'NoSuchKey' || code === 'NotFound' || (status === 404 && code !== 'NoSuchBucket')) {
      return new NotFoundError(`${where}: no such object`);
    }
    const hints: Record<string, string> = {
      NoSuchBucket: `create bucket ${this.#options.bucket}, or fix store.s3.bucket`,
      InvalidAccessKeyId: 'check the access key (store.s3 credentials)',
      SignatureDoesNotMatch: 'check the secret key (store.s3 credentials)',
      AccessDenied: `check that these credentials may use bucket ${this.#options.bucket}`,
      RequestTimeTooSkewed: "check this node's clock (NTP)",
    };
    const hint = hints[code] ?? (status !== undefined && status >= 500 ? 'the store failed after retries; check its health' : undefined);
    const message = err instanceof Error ? err.message : String(err);
    return new StoreError(`${where}: ${code}${status ? ` (HTTP ${status})` : ''}${message && message !== code ? `: ${message}` : ''}`, { cause: err, ...(hint ? { hint } : {}) });
  }
}
