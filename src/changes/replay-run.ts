import type { Etcd3 } from 'etcd3';
import type { StoredManifest } from '../archive/manifest.ts';
import { IntegrityError } from '../errors/errors.ts';
import { etcdClient } from '../etcd/client.ts';
import type { ManifestTrust } from '../signing/trust.ts';
import type { Catalog } from '../store/catalog.ts';
import { runDrill, type DrillDeps, type DrillOptions, type DrillReport } from '../verify/drill.ts';
import { readSegmentEvents } from './commit.ts';
import type { ChangeEvent } from './format.ts';
import { readChain, type SegmentManifest } from './manifest.ts';
import { planReplay, type ReadEvents, type ReplayPlan, type ReplayTarget } from './replay-plan.ts';
import { compactAndDefragment, etcd3Replay, replayEvents, saveSnapshot, type ReplayStats } from './replay.ts';

/** Operations per replay transaction; the throwaway etcd is started to accept them. */
export const REPLAY_MAX_OPS = 1024;
/** Bytes of keys and values per replay transaction. */
export const REPLAY_MAX_TXN_BYTES = 1 << 20;
/**
 * The largest request the throwaway etcd accepts: a transaction of REPLAY_MAX_TXN_BYTES with its
 * framing, or one operation alone that is larger (a value up to the cluster's own limit).
 */
export const REPLAY_MAX_REQUEST_BYTES = 32 << 20;
/** Bytes of keys and base64 values a replay gathers, each key's last operation, before applying them. */
export const REPLAY_WINDOW_BYTES = 32 << 20;

export interface ReplayRunDeps extends DrillDeps {
  trust: ManifestTrust;
  catalog: Catalog;
}

export interface ReplayRunOptions extends Omit<DrillOptions, 'replay' | 'etcdArgs'> {
  cluster: string;
  target: ReplayTarget;
  /** Write the replayed etcd's snapshot here (mode 0600; the file must not exist). */
  output?: string;
  /** Compares the replayed keys with another etcd (the live cluster) at the target revision. */
  compare?: (replayed: Etcd3, targetRevision: string) => Promise<Comparison>;
  leaseTtlSeconds: number;
}

export interface Comparison {
  keys: number;
  /** The first key whose value differs or that only one side holds; absent when all are equal. */
  difference?: { key: string; replayed: string; live: string };
}

export interface ReplayReport {
  plan: ReplayPlan;
  stats: ReplayStats;
  drill: DrillReport;
  snapshotBytes?: number;
  comparison?: Comparison;
}

/**
 * A replay to a point: the plan (./replay-plan.ts) over the signed, chained segments and the
 * trusted backups; then a drill of the chosen backup (download, every hash, etcdutl restore, a
 * throwaway etcd on unix sockets, its revision and key counts checked) whose etcd gets the
 * change log's events up to the target revision (./replay.ts); then, on that etcd, the comparison
 * is made and the snapshot saved (compacted at its revision and defragmented first), before the
 * drill stops it and removes its scratch dir.
 *
 * The throwaway etcd runs with `--unsafe-no-fsync`: it is scratch, and only its final snapshot
 * is kept. Memory here: two segments' events (the one gathered, the next being read), and the
 * two windows of ./replay.ts (2 × REPLAY_WINDOW_BYTES of keys and base64 values).
 */
export async function runReplay(deps: ReplayRunDeps, options: ReplayRunOptions): Promise<ReplayReport> {
  const log = await openChangeLog(deps, options.cluster, options.identities);
  const plan = await planReplay(options.target, log.segments, await deps.catalog.list(), log.readEvents);
  const stored = await deps.catalog.get(plan.backupId);
  return { plan, ...(await replayOnto(deps, stored, plan, log.segments, options)) };
}

/** The committed change log of `cluster`: its segment manifests (signatures and chain checked), and a reader of their events. */
export async function openChangeLog(deps: { store: DrillDeps['store']; decrypt: DrillDeps['decrypt']; trust: ManifestTrust }, cluster: string, identities: readonly string[]): Promise<{ segments: SegmentManifest[]; readEvents: ReadEvents }> {
  const { segments: trusted } = await readChain(deps.store, cluster, deps.trust);
  let cached: { id: string; events: ChangeEvent[] } | undefined;
  const readEvents = async (m: SegmentManifest): Promise<ChangeEvent[]> => {
    if (cached?.id !== m.segmentId) cached = { id: m.segmentId, events: await readSegmentEvents(deps, m, identities) };
    return cached.events;
  };
  return { segments: trusted.map((t) => t.manifest), readEvents };
}

/**
 * The replay of `plan` onto backup `stored` (a drill of it, given `options.snapshotFile` when a
 * restore already fetched its snapshot), with the snapshot saved and the comparison made.
 */
export async function replayOnto(deps: DrillDeps, stored: StoredManifest, plan: ReplayPlan, segments: readonly SegmentManifest[], options: Omit<ReplayRunOptions, 'cluster' | 'target'>): Promise<Omit<ReplayReport, 'plan'>> {
  const wanted = new Set(plan.segments.map((s) => s.segmentId));
  const list = segments.filter((m) => wanted.has(m.segmentId));
  // Nothing compacts the replayed etcd, so it keeps every version it is given: room for the
  // backup's database and every line replayed (more than the keys and values they carry), twice
  // over for bbolt's half-empty pages, and at least etcd's default of 2 GiB.
  const quota = Math.max(2 * 1024 ** 3, 2 * (stored.etcd.dbSize + list.reduce((n, m) => n + m.data.plainBytes, 0)));
  let stats: ReplayStats | undefined;
  let snapshotBytes: number | undefined;
  let comparison: Comparison | undefined;
  const drill = await runDrill(deps, stored, {
    ...options,
    etcdArgs: ['--unsafe-no-fsync', `--max-txn-ops=${REPLAY_MAX_OPS}`, `--max-request-bytes=${REPLAY_MAX_REQUEST_BYTES}`, `--quota-backend-bytes=${quota}`],
    replay: async (endpoint) => {
      // As throwawayClient, with the flow-control window of a backup's snapshot stream: gRPC's
      // default of 64 KiB caps saving the snapshot near 90 MiB/s (../etcd/etcd3-source.ts).
      const client = etcdClient({ endpoints: endpoint, dialTimeoutMs: 2000, maxResponseBytes: 64 << 20, flowControlWindow: 4 << 20 });
      try {
        // The next segment is read and decrypted while this one's events are gathered.
        const read = (m: SegmentManifest | undefined) => {
          const p = m && readSegmentEvents(deps, m, options.identities);
          p?.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
          return p;
        };
        async function* events(): AsyncGenerator<readonly ChangeEvent[]> {
          let next = read(list[0]);
          for (let i = 0; next; i++) {
            const current = await next;
            next = read(list[i + 1]);
            yield current;
          }
        }
        stats = await replayEvents(etcd3Replay(client), events(), { from: plan.backupRevision, to: plan.targetRevision, maxOps: REPLAY_MAX_OPS, maxTxnBytes: REPLAY_MAX_TXN_BYTES, windowBytes: REPLAY_WINDOW_BYTES, leaseTtlSeconds: options.leaseTtlSeconds });
        // Every revision has events: a replay that stops short lacks a segment.
        if (BigInt(plan.targetRevision) > BigInt(plan.backupRevision) && stats.lastRevision !== plan.targetRevision) {
          throw new IntegrityError(`the change log's events end at revision ${stats.lastRevision}, before the target revision ${plan.targetRevision}: a segment is missing`);
        }
        deps.log.info({ phase: 'replay', backupId: plan.backupId, targetRevision: plan.targetRevision, ...stats }, 'change log replayed to the target revision');
        if (options.compare) comparison = await options.compare(client, plan.targetRevision);
        if (options.output) {
          const t0 = performance.now();
          await compactAndDefragment(client);
          deps.log.info({ phase: 'replay-compacted', backupId: plan.backupId, durationMs: Math.round(performance.now() - t0) }, 'replayed etcd compacted and defragmented');
          snapshotBytes = await saveSnapshot(client, options.output);
        }
      } finally {
        client.close();
      }
    },
  });
  return { stats: stats!, drill, ...(snapshotBytes === undefined ? {} : { snapshotBytes }), ...(comparison ? { comparison } : {}) };
}

/**
 * Compares every key and value of `replayed` (now) with `live` at `revision`, in key order, a
 * page at a time (memory: two pages). Revisions and leases are not compared: a replay has its
 * own. `live` must still hold that revision (it is not compacted yet).
 */
export async function compareKeys(replayed: Etcd3, live: Etcd3, revision: string, pageSize = 1000): Promise<Comparison> {
  const a = pages(replayed, undefined, pageSize);
  const b = pages(live, revision, pageSize);
  let keys = 0;
  let left = await a.next();
  let right = await b.next();
  for (;;) {
    if (left.done && right.done) return { keys };
    const l = left.done ? undefined : left.value;
    const r = right.done ? undefined : right.value;
    if (!l || !r || !l.key.equals(r.key) || !l.value.equals(r.value)) {
      const key = (l && r ? (Buffer.compare(l.key, r.key) <= 0 ? l.key : r.key) : (l ?? r)!.key).toString();
      const show = (kv: { key: Buffer; value: Buffer } | undefined) => (kv && kv.key.toString() === key ? `${kv.value.length} bytes` : 'absent');
      return { keys, difference: { key, replayed: show(l), live: show(r) } };
    }
    keys++;
    left = await a.next();
    right = await b.next();
  }
}

async function* pages(client: Etcd3, revision: string | undefined, limit: number): AsyncGenerator<{ key: Buffer; value: Buffer }> {
  let from = Buffer.from([0]);
  for (;;) {
    const res = await client.kv.range({ key: from, range_end: Buffer.from([0]), limit, ...(revision ? { revision } : {}) });
    for (const kv of res.kvs) yield { key: kv.key, value: kv.value };
    if (!res.more || res.kvs.length === 0) return;
    from = Buffer.concat([res.kvs.at(-1)!.key, Buffer.from([0])]);
  }
}
