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
 * - **Windows.** Only the end state matters, so the events are gathered in a window keyed by
 *   etcd key, each key holding its last operation (a put then a delete of the same key is the
 *   delete; a key rewritten ten times is put once). A window is closed when an event would take
 *   its keys and base64 values past `windowBytes` (the event then starts the next window, and an
 *   operation it replaces is dropped); it is applied, in the order of each key's last event,
 *   while the next window is gathered. Windows follow one another in revision order, and a key
 *   is in one window at a time, so every key ends with its last operation.
 * - **Transactions.** A window is applied in transactions of up to `maxOps` operations and
 *   `maxTxnBytes` of keys and values (a lone larger operation goes alone), one at a time, each
 *   sent when the one before it has been applied. The same events therefore always make the
 *   same transactions in the same order: every member of an in-place restore replays them alike
 *   and ends with the same keys at the same revisions. (Transactions in flight together could be
 *   applied by etcd in either order, and the revisions would then differ between members.)
 * - **Leases.** An event's lease is a lease of the live cluster. Each lease id met is granted
 *   again with that same id and a TTL of `leaseTtlSeconds` (unless the backup already holds it),
 *   and the keys put with it stay attached to it: a key that had a TTL (Kubernetes Events,
 *   master leases) expires after the restore instead of living forever. The same id on every
 *   member keeps the members of an in-place restore identical, as a replay must be repeatable.
 *   The leases first met in a window are granted together before its first transaction.
 * - **Memory:** the segments the caller holds (see ./replay-run.ts), and two windows (the one
 *   being applied and the one being gathered), each at most `windowBytes` of keys and base64
 *   values or a single larger operation (a value is decoded when its transaction is built), plus
 *   a map entry per key, and one transaction.
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
  /** Bytes of keys and values per transaction (below etcd's --max-request-bytes, 1.5 MiB by default). */
  maxTxnBytes: number;
  /** Bytes of keys and base64 values gathered before they are applied. */
  windowBytes: number;
  leaseTtlSeconds: number;
}

export interface ReplayStats {
  /** Events applied (the target's revision and all before it, after `from`). */
  events: number;
  revisions: number;
  /** Operations sent to etcd: the events less those a later event of the same key in its window replaced. */
  operations: number;
  transactions: number;
  /** Leases granted for the leases the events named. */
  leases: number;
  /** The last revision applied (`from` when none was). */
  lastRevision: string;
  seconds: number;
  /**
   * Of `seconds`, with a transaction or lease grant in flight. Reading the segments and gathering
   * go on meanwhile on the same thread, so an answer can wait for them: near `seconds`, this says
   * etcd or this process is the bound, not which.
   */
  etcdSeconds: number;
  eventsPerSecond: number;
}

interface Window {
  /** Each key's last event, by the key's canonical base64; values stay base64 until they are sent (most are replaced before). */
  keys: Map<string, ChangeEvent>;
  /** Bytes of the keys' and the values' base64 held. */
  bytes: number;
  /** Leases first met in this window. */
  leases: string[];
}

const heldBytes = (e: ChangeEvent) => e.key.length + (e.value?.length ?? 0);
const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * `s` (base64, as the event schema checked it) as Buffer.toString('base64') writes it, so that
 * one key has one id whatever its padding: the capture's own keys are returned as they are.
 */
export function canonicalBase64(s: string): string {
  const n = s.length;
  if (n % 4 === 0) {
    if (n === 0 || s[n - 1] !== '=') return s;
    const pad = s[n - 2] === '=' ? 2 : 1;
    if ((BASE64.indexOf(s[n - 1 - pad]!) & (pad === 2 ? 15 : 3)) === 0) return s; // no bits beyond the bytes
  }
  return Buffer.from(s, 'base64').toString('base64');
}

/** A window's operations, in order, cut into transactions of at most `maxOps` operations and `maxTxnBytes` (or one larger operation alone). */
function* transactionsOf(events: Iterable<ChangeEvent>, maxOps: number, maxTxnBytes: number): Generator<ReplayOp[]> {
  let txn: ReplayOp[] = [];
  let bytes = 0;
  for (const event of events) {
    const key = Buffer.from(event.key, 'base64');
    const op: ReplayOp = event.op === 'delete' ? { op: 'delete', key } : { op: 'put', key, value: Buffer.from(event.value ?? '', 'base64'), ...(event.lease === undefined ? {} : { lease: event.lease }) };
    const size = key.length + (op.value?.length ?? 0);
    if (txn.length > 0 && (txn.length >= maxOps || bytes + size > maxTxnBytes)) {
      yield txn;
      txn = [];
      bytes = 0;
    }
    txn.push(op);
    bytes += size;
  }
  if (txn.length > 0) yield txn;
}

/** Applies the events of `segments` (each a segment's events, oldest first) from `options.from` (exclusive) to `options.to`. */
export async function replayEvents(etcd: ReplayEtcd, segments: AsyncIterable<readonly ChangeEvent[]> | Iterable<readonly ChangeEvent[]>, options: ReplayOptions): Promise<ReplayStats> {
  const started = performance.now();
  const from = BigInt(options.from);
  const to = BigInt(options.to);
  const leases = new Set<string>();
  const stats = { events: 0, revisions: 0, operations: 0, transactions: 0, lastRevision: options.from };
  let etcdMs = 0;
  const timedEtcd = async (call: () => Promise<unknown>): Promise<void> => {
    const t0 = performance.now();
    try {
      await call();
    } finally {
      etcdMs += performance.now() - t0;
    }
  };
  const apply = async (w: Window): Promise<void> => {
    await timedEtcd(() => Promise.all(w.leases.map((id) => etcd.grantLease(id, options.leaseTtlSeconds))));
    const txns = transactionsOf(w.keys.values(), options.maxOps, options.maxTxnBytes);
    for (let txn = txns.next(); !txn.done; ) {
      const ops = txn.value;
      const applied = timedEtcd(() => etcd.apply(ops));
      txn = txns.next(); // the next one is built (its values decoded) while etcd applies this one
      await applied;
      stats.transactions++;
      stats.operations += ops.length;
    }
  };
  const fresh = (): Window => ({ keys: new Map(), bytes: 0, leases: [] });
  let window = fresh();
  // The window being applied, one at a time; a failure is seen at the next hand-over, or at the end.
  let applying: Promise<void> = Promise.resolve();
  const handOver = async () => {
    await applying;
    applying = apply(window);
    applying.catch(() => undefined); // awaited at the next hand-over; not an unhandled rejection meanwhile
    window = fresh();
  };
  const gather = async () => {
    for await (const segment of segments) {
      for (const e of segment) {
        const rev = BigInt(e.rev);
        if (rev <= from) continue;
        if (rev > to) return;
        if (e.rev !== stats.lastRevision) stats.revisions++;
        stats.lastRevision = e.rev;
        stats.events++;
        const id = canonicalBase64(e.key);
        const size = heldBytes(e);
        const replaced = window.keys.get(id);
        if (replaced) {
          // Dropped, and set again below, last: a window's order is the order of its keys' last events.
          window.bytes -= heldBytes(replaced);
          window.keys.delete(id);
        }
        if (window.keys.size > 0 && window.bytes + size > options.windowBytes) await handOver();
        window.keys.set(id, e);
        window.bytes += size;
        const lease = e.op === 'put' ? e.lease : undefined;
        if (lease !== undefined && !leases.has(lease)) {
          leases.add(lease);
          window.leases.push(lease);
        }
      }
    }
  };
  try {
    await gather();
  } catch (err) {
    await applying.catch(() => undefined); // no transaction is left in flight when this rejects
    throw err;
  }
  await handOver();
  await applying;
  const seconds = (performance.now() - started) / 1000;
  return { ...stats, leases: leases.size, seconds, etcdSeconds: etcdMs / 1000, eventsPerSecond: seconds > 0 ? Math.round(stats.events / seconds) : stats.events };
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
 * Compacts the etcd behind `client` at its current revision and defragments it: its snapshot
 * then holds the keys as they are, without every version the replay wrote (which about doubles
 * the database of a 1 GiB cluster after an hour's changes, past etcd's default quota of 2 GiB).
 * A restore marks that revision compacted anyway.
 */
export async function compactAndDefragment(client: Etcd3): Promise<void> {
  const { header } = await client.kv.range({ key: Buffer.from([0]), limit: 1 });
  await client.kv.compact({ revision: header.revision, physical: true });
  await client.maintenance.defragment();
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
