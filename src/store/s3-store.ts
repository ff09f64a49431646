import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { Readable } from 'node:stream';
import type { HeadObjectCommandOutput, S3Client } from '@aws-sdk/client-s3';
import { CancelledError, LifeboatError, NotFoundError, ObjectLockedError, StoreError } from '../errors/errors.ts';
import { assertObjectKey } from './layout.ts';
import type { UploadTarget } from './multipart.ts';
import { isLocked, type BackupStore, type ObjectInfo, type PutOptions } from './store.ts';

const DAY_MS = 86_400_000;

/** The AWS SDK and the uploader, loaded by the first request: a process that never talks to S3 does not pay for them (about 12 MiB of RSS). */
interface Loaded {
  sdk: typeof import('@aws-sdk/client-s3');
  multipart: typeof import('./multipart.ts');
  client: S3Client;
}

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
  /** Multipart part size in bytes (S3 minimum 5 MiB); a body of at most this goes up in one PutObject. */
  partSize: number;
  /** Parts uploaded at once. Memory for one put is bounded by (queueSize + 1) x partSize. */
  queueSize: number;
  /** Attempts per request (and per part) for transient errors: 5xx, timeouts, resets. */
  maxAttempts: number;
  /**
   * Object Lock retention for backup objects (puts with `retain`): this mode, until `days` after
   * the write. The bucket must have been created with Object Lock enabled.
   */
  objectLock?: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number } | undefined;
  /** A request whose socket moves no bytes for this long fails, and is retried (default 60 s). */
  idleTimeoutMs?: number | undefined;
  /**
   * How puts upload: `pooled` (the default, ./multipart.ts) or `lib-storage`, the SDK's Upload,
   * kept as the reference the pooled uploader is cross-checked against in tests.
   */
  uploader?: 'pooled' | 'lib-storage' | undefined;
}

/** Per request: connecting, and (by default) a socket with no bytes moving either way. */
const CONNECT_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 60_000;

/**
 * S3 or Ceph RGW as a store. Puts stream through a fixed pool of part buffers (./multipart.ts):
 * one PutObject for a body of at most partSize bytes, else a multipart upload with up to
 * queueSize parts in flight. Memory for one put is bounded by (queueSize + 1) x partSize
 * (default 5 x 8 MiB = 40 MiB), allocated once per put; on any failure or abort the multipart
 * upload is aborted once its requests in flight have settled, and an object appears only when
 * the upload completes. Checksums are sent only when an operation requires them: Ceph Pacific's
 * RGW refuses aws-chunked bodies with trailing checksums.
 *
 * Object Lock (`objectLock`, for puts with `retain`): the upload carries the lock mode and
 * retain-until date, and a CRC32 checksum per request (AWS requires Content-MD5 or a checksum on
 * uploads with Object Lock; each part is a buffer, so the checksum goes in a header, never an
 * aws-chunked trailer, and memory stays within the bound above). Pacific's RGW ignores
 * the lock headers of CreateMultipartUpload, so after every retained put the stored version is
 * checked with HeadObject and, if it lacks the retention, gets it with PutObjectRetention; a
 * version that cannot be locked is deleted and the put fails.
 *
 * Delete removes every version and delete marker of the key (Object Lock implies a versioned
 * bucket, where a plain DeleteObject only adds a delete marker that hides the object). A version
 * still under retention or legal hold is not deleted: ObjectLockedError. GOVERNANCE retention is
 * never bypassed.
 */
export class S3Store implements BackupStore {
  readonly description: string;
  readonly #options: S3StoreOptions;
  /** The endpoint's CA bundle, read at once so that a bad caFile fails at construction. */
  readonly #ca: Buffer | undefined;
  #loaded: Promise<Loaded> | undefined;

  constructor(options: S3StoreOptions) {
    this.#options = options;
    this.description = `s3://${options.bucket}/${options.prefix}${options.endpoint ? ` at ${options.endpoint}` : ''}`;
    this.#ca = options.caFile ? readFileSync(options.caFile) : undefined;
  }

  #s3(): Promise<Loaded> {
    this.#loaded ??= Promise.all([import('@aws-sdk/client-s3'), import('./multipart.ts')]).then(([sdk, multipart]) => ({ sdk, multipart, client: this.#newClient(sdk) }));
    return this.#loaded;
  }

  #newClient(sdk: Loaded['sdk']): S3Client {
    const options = this.#options;
    return new sdk.S3Client({
      region: options.region,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      forcePathStyle: options.forcePathStyle,
      credentials: { ...options.credentials }, // the SDK annotates this object; config is frozen
      maxAttempts: options.maxAttempts,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        // A connection that cannot be made, or a socket on which nothing moves, fails the request
        // so that the SDK retries it (with backoff and jitter) instead of hanging for ever.
        connectionTimeout: CONNECT_TIMEOUT_MS,
        socketTimeout: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
        ...(this.#ca ? { httpsAgent: new Agent({ ca: this.#ca, keepAlive: true }) } : {}),
      },
    });
  }

  #key(key: string): string {
    return this.#options.prefix + assertObjectKey(key);
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const Key = this.#key(key);
    const lock = options.retain ? this.#options.objectLock : undefined;
    const retainUntil = lock ? new Date(Date.now() + lock.days * DAY_MS) : undefined;
    const target: UploadTarget = { Bucket: this.#options.bucket, Key };
    if (lock && retainUntil) Object.assign(target, { ObjectLockMode: lock.mode, ObjectLockRetainUntilDate: retainUntil, ChecksumAlgorithm: 'CRC32' });
    const wrap = (err: unknown) =>
      options.signal?.aborted ? new CancelledError(`upload of ${key} cancelled`) : this.#wrap(err, `write ${key}`, lock ? { InvalidRequest: this.#objectLockHint() } : {});
    try {
      if (options.signal?.aborted) throw new CancelledError(`upload of ${key} cancelled`);
      const { client, multipart } = await this.#s3();
      const { partSize, queueSize } = this.#options;
      if (this.#options.uploader === 'lib-storage') await this.#referenceUpload(client, target, body, options.signal);
      else await multipart.uploadPooled(client, target, body, { partSize, queueSize, signal: options.signal, wrap });
    } catch (err) {
      const wrapped = err instanceof LifeboatError ? err : wrap(err);
      // A body nobody listens to must not crash the process with an unhandled 'error' event.
      if (!body.destroyed) body.on('error', () => undefined).destroy(wrapped);
      throw wrapped;
    }
    // CompleteMultipartUpload's answer is unreliable on RGW (empty ETag); HeadObject is not.
    const head = await this.#head(key);
    if (!head) throw new StoreError(`${this.description}: ${key} is missing right after its upload completed`);
    if (lock && retainUntil) await this.#ensureRetention(key, head, lock.mode, retainUntil);
    return { size: head.ContentLength ?? 0 };
  }

  /**
   * The same upload through lib-storage's Upload, the SDK's own streaming uploader: the
   * reference the pooled uploader is cross-checked against in tests (`uploader: 'lib-storage'`).
   * Loaded only when used.
   */
  async #referenceUpload(client: S3Client, target: UploadTarget, body: Readable, signal: AbortSignal | undefined): Promise<void> {
    const { Upload } = await import('@aws-sdk/lib-storage');
    const upload = new Upload({ client, params: { ...target, Body: body }, queueSize: this.#options.queueSize, partSize: this.#options.partSize, leavePartsOnError: false });
    const onAbort = () => void upload.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Makes sure the version just written carries `retainUntil` (RGW drops the lock headers of a
   * multipart upload). A version that cannot be locked is deleted, and the put fails.
   */
  async #ensureRetention(key: string, head: HeadObjectCommandOutput, mode: 'GOVERNANCE' | 'COMPLIANCE', retainUntil: Date): Promise<void> {
    // Some stores keep the date to the second; a second less is the same retention.
    const applied = (h: HeadObjectCommandOutput | undefined) => h?.ObjectLockRetainUntilDate !== undefined && h.ObjectLockRetainUntilDate.getTime() >= retainUntil.getTime() - 1000;
    if (applied(head)) return;
    const VersionId = head.VersionId;
    const { client, sdk } = await this.#s3();
    try {
      await client.send(new sdk.PutObjectRetentionCommand({ Bucket: this.#options.bucket, Key: this.#key(key), ...(VersionId ? { VersionId } : {}), Retention: { Mode: mode, RetainUntilDate: retainUntil } }));
      const again = await this.#head(key, VersionId);
      if (!applied(again)) {
        throw new StoreError(`${this.description}: ${key} was stored, but the store did not keep its Object Lock retention`, {
          hint: `${this.#objectLockHint()}; these credentials need s3:GetObjectRetention and s3:PutObjectRetention`,
        });
      }
    } catch (err) {
      const wrapped = this.#wrap(err, `lock ${key}`, { InvalidRequest: this.#objectLockHint() });
      // Best effort: an unlocked version is deletable; cleanup removes what remains.
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key), ...(VersionId ? { VersionId } : {}) })).catch(() => undefined);
      throw wrapped;
    }
  }

  #objectLockHint(): string {
    return `store.s3.objectLock is set: bucket ${this.#options.bucket} must have been created with Object Lock enabled (else remove store.s3.objectLock)`;
  }

  async get(key: string): Promise<Readable> {
    try {
      const { client, sdk } = await this.#s3();
      const res = await client.send(new sdk.GetObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key) }));
      if (!(res.Body instanceof Readable)) throw new StoreError(`${this.description}: ${key}: no body`);
      return res.Body;
    } catch (err) {
      throw this.#wrap(err, `read ${key}`);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const res = await this.#head(key);
    return res ? objectInfo(key, res) : undefined;
  }

  /** HeadObject of the current version (or of `versionId`); undefined when there is none. */
  async #head(key: string, versionId?: string): Promise<HeadObjectCommandOutput | undefined> {
    try {
      const { client, sdk } = await this.#s3();
      return await client.send(new sdk.HeadObjectCommand({ Bucket: this.#options.bucket, Key: this.#key(key), ...(versionId ? { VersionId: versionId } : {}) }));
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
      const { client, sdk } = await this.#s3();
      do {
        const res = await client.send(new sdk.ListObjectsV2Command({ Bucket: this.#options.bucket, Prefix: this.#options.prefix + prefix, ContinuationToken }));
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

  /**
   * Deletes every version and delete marker of `key`, oldest first, each by its VersionId, so
   * what is visible does not change until the last one goes (an unversioned bucket lists one
   * version, `null`). A version that cannot be deleted is looked at with HeadObject: if it is
   * under retention or legal hold, ObjectLockedError naming the key and the date; else the
   * store's error.
   */
  async delete(key: string): Promise<void> {
    const Key = this.#key(key);
    const hints = { AccessDenied: `deleting needs s3:ListBucketVersions and s3:DeleteObjectVersion on bucket ${this.#options.bucket}` };
    const versions: { VersionId: string; modified: number; marker: boolean }[] = [];
    let KeyMarker: string | undefined;
    let VersionIdMarker: string | undefined;
    const { client, sdk } = await this.#s3();
    try {
      do {
        const res = await client.send(new sdk.ListObjectVersionsCommand({ Bucket: this.#options.bucket, Prefix: Key, KeyMarker, VersionIdMarker }));
        for (const [list, marker] of [[res.Versions ?? [], false], [res.DeleteMarkers ?? [], true]] as const) {
          for (const v of list) {
            if (v.Key === Key && v.VersionId !== undefined) versions.push({ VersionId: v.VersionId, modified: v.LastModified?.getTime() ?? 0, marker });
          }
        }
        KeyMarker = res.IsTruncated ? res.NextKeyMarker : undefined;
        VersionIdMarker = res.IsTruncated ? res.NextVersionIdMarker : undefined;
      } while (KeyMarker);
    } catch (err) {
      throw this.#wrap(err, `delete ${key}`, hints);
    }
    // Oldest first; on a tie, a version before the delete marker that followed it.
    versions.sort((a, b) => a.modified - b.modified || Number(a.marker) - Number(b.marker));
    for (const v of versions) {
      try {
        await client.send(new sdk.DeleteObjectCommand({ Bucket: this.#options.bucket, Key, VersionId: v.VersionId }));
      } catch (err) {
        const wrapped = this.#wrap(err, `delete ${key}`, hints);
        if (wrapped instanceof NotFoundError) continue;
        const head = v.marker ? undefined : await this.#head(key, v.VersionId).catch(() => undefined);
        const info = head ? objectInfo(key, head) : undefined;
        if (info && isLocked(info, new Date())) {
          const why = [info.retainUntil && info.retainUntil > new Date() ? `under ${head?.ObjectLockMode ?? 'Object Lock'} retention until ${info.retainUntil.toISOString()}` : '', info.legalHold ? 'under a legal hold' : ''].filter(Boolean).join(' and ');
          throw new ObjectLockedError(key, info, `${this.description}: ${key} is ${why}; it cannot be deleted until ${info.legalHold ? 'the hold is lifted' : 'then'}`, { cause: err });
        }
        throw wrapped;
      }
    }
  }

  async removeIncomplete(prefix: string, olderThan: Date): Promise<number> {
    let removed = 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    try {
      const { client, sdk } = await this.#s3();
      do {
        const res = await client.send(new sdk.ListMultipartUploadsCommand({ Bucket: this.#options.bucket, Prefix: this.#options.prefix + prefix, KeyMarker, UploadIdMarker }));
        for (const u of res.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated >= olderThan) continue;
          await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: this.#options.bucket, Key: u.Key, UploadId: u.UploadId }));
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

  /** Maps SDK errors by their stable S3 error codes, with what to check next (`extraHints` first). */
  #wrap(err: unknown, what: string, extraHints: Record<string, string> = {}): Error {
    if (err instanceof LifeboatError) return err;
    // Every error the SDK throws for an answer from the store carries its HTTP status here.
    const status = (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
    const code = err instanceof Error ? err.name : String(err);
    const where = `${this.description}: ${what}`;
    if (code === 'NoSuchKey' || code === 'NotFound' || (status === 404 && code !== 'NoSuchBucket')) {
      return new NotFoundError(`${where}: no such object`);
    }
    const tls = tlsProblem(err, this.#options.caFile);
    if (tls) return new StoreError(`${where}: TLS: ${tls.problem} (${tls.code})`, { cause: err, hint: tls.hint });
    const hints: Record<string, string> = {
      NoSuchBucket: `create bucket ${this.#options.bucket}, or fix store.s3.bucket`,
      InvalidAccessKeyId: 'check the access key (store.s3 credentials)',
      SignatureDoesNotMatch: 'check the secret key (store.s3 credentials)',
      AccessDenied: `check that these credentials may use bucket ${this.#options.bucket}`,
      RequestTimeTooSkewed: "check this node's clock (NTP)",
    };
    const hint = extraHints[code] ?? hints[code] ?? (status !== undefined && status >= 500 ? 'the store failed after retries; check its health' : undefined);
    const message = err instanceof Error ? err.message : String(err);
    return new StoreError(`${where}: ${code}${status ? ` (HTTP ${status})` : ''}${message && message !== code ? `: ${message}` : ''}`, { cause: err, ...(hint ? { hint } : {}) });
  }
}

/** What HeadObject says of an object, Object Lock included. */
function objectInfo(key: string, res: HeadObjectCommandOutput): ObjectInfo {
  return {
    key,
    size: res.ContentLength ?? 0,
    modified: res.LastModified ?? new Date(0),
    ...(res.ObjectLockRetainUntilDate ? { retainUntil: res.ObjectLockRetainUntilDate } : {}),
    ...(res.ObjectLockLegalHoldStatus === 'ON' ? { legalHold: true } : {}),
  };
}

const UNTRUSTED_CA = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_GET_ISSUER_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT']);

/**
 * A TLS failure to the endpoint, by Node's stable certificate error code (on the error or its
 * causes): what is wrong, and what to check. Undefined for any other error.
 */
function tlsProblem(err: unknown, caFile: string | undefined): { code: string; problem: string; hint: string } | undefined {
  let code: string | undefined;
  for (let e = err, depth = 0; e instanceof Error && depth < 4 && code === undefined; e = e.cause, depth += 1) {
    const c = (e as NodeJS.ErrnoException).code;
    if (typeof c === 'string' && (UNTRUSTED_CA.has(c) || c === 'CERT_HAS_EXPIRED' || c === 'CERT_NOT_YET_VALID' || c === 'ERR_TLS_CERT_ALTNAME_INVALID')) code = c;
  }
  if (code === undefined) return undefined;
  const who = "the endpoint's certificate";
  if (UNTRUSTED_CA.has(code)) {
    return {
      code,
      problem: `${who} is not signed by a trusted CA`,
      hint: caFile
        ? `check that caFile ${caFile} holds the CA that signed it (PEM)`
        : 'set s3.caFile of this store (store or secondaryStore) to the PEM bundle of the CA that signed it',
    };
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return { code, problem: `${who} does not name this host`, hint: 'use an endpoint host name that the certificate lists in its subjectAltName' };
  }
  return { code, problem: `${who} is ${code === 'CERT_HAS_EXPIRED' ? 'expired' : 'not valid yet'}`, hint: "renew the endpoint's certificate, or check this node's clock (NTP)" };
}
