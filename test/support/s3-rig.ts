import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, ListMultipartUploadsCommand, S3Client, type MultipartUpload } from '@aws-sdk/client-s3';
import { startRgw, type Rgw } from '../../scripts/rig/rgw.ts';
import type { S3StoreOptions } from '../../src/store/s3-store.ts';

/** A real Ceph RGW with buckets made, for one test file. */
export interface S3Rig {
  /** The test file's temp dir (the RGW's state is in `ceph/` under it); stop() removes it. */
  work: string;
  rgw: Rgw;
  /** A plain SDK client of the RGW, to look behind the store's back. */
  s3: S3Client;
  /** The RGW user's keys as the CLI takes them. */
  env: { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string };
  /** S3Store options for this RGW (path style; 5 MiB parts, 2 at once, 3 attempts unless overridden). */
  storeOptions(options: Partial<S3StoreOptions> & { bucket: string; prefix: string }): S3StoreOptions;
  /** The multipart uploads still in progress in `bucket` under `prefix`. */
  uploadsUnder(bucket: string, prefix: string): Promise<MultipartUpload[]>;
  /** Stops the RGW and removes `work`. */
  stop(): Promise<void>;
}

/** Starts an RGW in a new temp dir named after `name`, and makes `buckets` (and `objectLockBuckets`, with Object Lock). */
export async function startS3Rig(name: string, options: { buckets?: string[]; objectLockBuckets?: string[]; https?: boolean }): Promise<S3Rig> {
  const work = await mkdtemp(path.join(tmpdir(), `lifeboat-it-${name}-`));
  const rgw = await startRgw({ dir: path.join(work, 'ceph'), ...(options.https ? { https: true } : {}) });
  const stop = async () => {
    await rgw.stop();
    await rm(work, { recursive: true, force: true });
  };
  const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: rgw, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  try {
    for (const bucket of options.buckets ?? []) await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    for (const bucket of options.objectLockBuckets ?? []) await s3.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    work,
    rgw,
    s3,
    env: { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey },
    storeOptions: (o) => ({
      endpoint: rgw.endpoint,
      region: rgw.region,
      forcePathStyle: true,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      partSize: 5 * 1024 * 1024,
      queueSize: 2,
      maxAttempts: 3,
      ...o,
    }),
    uploadsUnder: async (bucket, prefix) => (await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }))).Uploads ?? [],
    stop,
  };
}
