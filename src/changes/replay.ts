import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Etcd3 } from 'etcd3';
import { EtcdUnavailableError } from '../errors/errors.ts';
import type { ChangeEvent } from './format.ts';

/**
 * Replay: the change log's events applied, in revision order, to an etcd that holds a full
 * backup, up to a target revision, so that it then holds exactly the keys and values the cluster
 * held at that revision. Its own revisions differ (a restore bumps them anyway).
 *
 * - **Batches.** Events are applied in transactions of up to `maxOps` operations. Within one
 *   batch only the last operation on a key is kept (a put then a delete of the same key is the
 *   delete): etcd refuses a transaction that names a key twice, and only the end state matters.
 * - **Leases.** An event's lease is a lease of the live cluster. Each lease id met is granted
 *   again with that same id and a TTL of `leaseTtlSeconds` (unless the backup already holds it),
 *   and the keys put with it stay attached to it: a key that had a TTL (Kubernetes Events,
 *   master leases) expires after the restore instead of living forever. The same id on every
 *   member keeps the members of an in-place restore identical, as a replay must be repeatable.
 * - **Memory:** one segment's events (at most changes.maxSegmentBytes of lines) and one batch.
 */
export interface ReplayOp {
  op: 'put' | 'delete';
  key: Buffer;
  value?: Buffer;
  /** A lease of the etcd replayed into. */
  lease?: string;
}

/** What replay asks of the etcd it writes to. The etcd3 implementation is below. */
export interface ReplayEtcd {
  /** One transaction with these operations. */
  apply(ops: readonly ReplayOp[]): Promise<void>;
  /** Grants lease `id`, or keeps it when the etcd already holds it. */
  grantLease(id: string, ttlSeconds: number): Promise<void>;
}

export interface ReplayOptions {
  /** Events with a revision above `from` and at most `to` are applied. */
  from: string;
  to: string;
  /** Operations per transaction (etcd's --max-txn-ops, 128 by default). */
  maxOps: number;
  leaseTtlSeconds: number;
}

export interface ReplayStats {
  /** Events applied (the target's revision and all before it, after `from`). */
  events: number;
  revisions: number;
  transactions: number;
  /** Leases granted for the leases the events named. */
  leases: number;
  /** The last revision applied (`from` when none was). */
  lastRevision: string;
  seconds: number;
  /** Of `seconds`, waiting on etcd's transactions and lease grants (the rest: reading the segments, batching). */
  etcdSeconds: number;
  eventsPerSecond: number;
}

/** Applies the events of `segments` (each a segment's events, oldest first) from `options.from` (exclusive) to `options.to`. */
export async function replayEvents(etcd: ReplayEtcd, segments: AsyncIterable<readonly ChangeEvent[]> | Iterable<readonly ChangeEvent[]>, options: ReplayOptions): Promise<ReplayStats> {
  const started = performance.now();
  const from = BigInt(options.from);
  const to = BigInt(options.to);
  const leases = new Set<string>();
  const batch = new Map<string, ReplayOp>();
  let events = 0;
  let revisions = 0;
  let transactions = 0;
  let lastRevision = options.from;
  let etcdMs = 0;
  const timedEtcd = async <T>(call: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await call();
    } finally {
      etcdMs += performance.now() - t0;
    }
  };
  const flush = async () => {
    if (batch.size === 0) return;
    const ops = [...batch.values()];
    batch.clear();
    await timedEtcd(() => etcd.apply(ops));
    transactions++;
  };
  outer: for await (const segment of segments) {
    for (const e of segment) {
      const rev = BigInt(e.rev);
      if (rev <= from) continue;
      if (rev > to) break outer;
      if (e.rev !== lastRevision) revisions++;
      lastRevision = e.rev;
      events++;
      const key = Buffer.from(e.key, 'base64');
      const id = key.toString('base64');
      if (!batch.has(id) && batch.size >= options.maxOps) await flush();
      batch.delete(id); // re-inserted last: the order of the batch stays the order of the events
      if (e.op === 'delete') {
        batch.set(id, { op: 'delete', key });
        continue;
      }
      const lease = e.lease;
      if (lease !== undefined && !leases.has(lease)) {
        await timedEtcd(() => etcd.grantLease(lease, options.leaseTtlSeconds));
        leases.add(lease);
      }
      batch.set(id, { op: 'put', key, value: Buffer.from(e.value ?? '', 'base64'), ...(lease === undefined ? {} : { lease }) });
    }
  }
  await flush();
  const seconds = (performance.now() - started) / 1000;
  return { events, revisions, transactions, leases: leases.size, lastRevision, seconds, etcdSeconds: etcdMs / 1000, eventsPerSecond: seconds > 0 ? Math.round(events / seconds) : events };
}

/** ReplayEtcd on an etcd3 client (of the throwaway etcd a replay runs). */
export function etcd3Replay(client: Etcd3): ReplayEtcd {
  return {
    async apply(ops) {
      try {
        await client.kv.txn({
          compare: [],
          success: ops.map((o) => (o.op === 'put' ? { request_put: { key: o.key, value: o.value ?? Buffer.alloc(0), ...(o.lease ? { lease: o.lease } : {}) } } : { request_delete_range: { key: o.key } })),
          failure: [],
        });
      } catch (err) {
        throw new EtcdUnavailableError(`replaying a transaction of ${ops.length} operations failed: ${(err as Error).message}`, { cause: err });
      }
    },
    async grantLease(id, ttlSeconds) {
      try {
        await client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: id });
      } catch (err) {
        if (/lease already exists/.test((err as Error).message)) return;
        throw new EtcdUnavailableError(`granting lease ${id} for the replay failed: ${(err as Error).message}`, { cause: err });
      }
    },
  };
}

/**
 * Writes a snapshot of the etcd behind `client` to `file` (mode 0600), as `etcdctl snapshot
 * save` would: the database followed by its sha256, streamed. Resolves with its size.
 */
export async function saveSnapshot(client: Etcd3, file: string): Promise<number> {
  let bytes = 0;
  const stream = (await client.maintenance.snapshot()) as unknown as AsyncIterable<{ blob: Buffer }>;
  async function* blobs() {
    for await (const chunk of stream) {
      bytes += chunk.blob.length;
      yield chunk.blob;
    }
  }
  await pipeline(Readable.from(blobs()), createWriteStream(file, { mode: 0o600, flags: 'wx' }));
  return bytes;
}
