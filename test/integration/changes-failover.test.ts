import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { checkChain, readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { sample, scrape, until, type DaemonProcess } from '../support/daemon.ts';
import { startDaemonTrio, type DaemonTrio } from '../support/daemon-trio.ts';
import { TEST_TRUST } from '../support/signing.ts';

/**
 * The change log on the DaemonSet: three `lifeboat serve` on a 3-member etcd with
 * changes.enabled, a writer changing etcd all along, and the leader SIGKILLed mid-capture.
 */
const TTL_SECONDS = 2;
let work: string;
let trio: DaemonTrio | undefined;
let client: Etcd3 | undefined;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-changes-failover-'));
  trio = await startDaemonTrio(work, {
    populate: { keys: 50, valueBytes: [64, 256], seed: 5 },
    daemon: { election: { ttlSeconds: TTL_SECONDS } },
    config: { changes: { enabled: true, segmentSeconds: 0.5, maxSegmentBytes: 16384 } },
  });
  client = trio.cluster.client();
});

after(async () => {
  client?.close();
  await trio?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function leaders(among: DaemonProcess[]): Promise<DaemonProcess[]> {
  const flags = await Promise.all(among.map(async (d) => sample(await scrape(d.ports.metrics), 'lifeboat_is_leader') === 1));
  return among.filter((_, i) => flags[i]);
}

/** Puts one key after another until stopped; each put is one etcd revision. */
function writer(etcd: Etcd3) {
  let stopped = false;
  let puts = 0;
  const done = (async () => {
    while (!stopped) {
      await etcd.put(`/registry/configmaps/load/cm-${puts % 200}`).value(`v${puts}-`.padEnd(200, 'x'));
      puts++;
    }
  })();
  return { puts: () => puts, stop: async () => ((stopped = true), await done) };
}

async function revisionNow(etcd: Etcd3): Promise<bigint> {
  const res = await etcd.kv.range({ key: Buffer.from('/'), limit: 1 });
  return BigInt(res.header.revision);
}

async function chain(store: FsStore) {
  const segments = [];
  for (const id of await segmentIds(store, 'it')) segments.push(await readTrustedSegment(store, 'it', TEST_TRUST, id));
  return { segments, report: checkChain(segments) };
}

test('the leader captures; SIGKILLed mid-capture, the next leader continues from the last committed segment: the chain has every revision, once', async () => {
  const { daemons, storeDir } = trio!;
  const store = new FsStore(storeDir);
  await until('one leader', async () => (await leaders(daemons)).length === 1, 30_000);
  const [first] = await leaders(daemons);
  const load = writer(client!);
  await until('the leader commits segments', async () => (await segmentIds(store, 'it')).length >= 3, 30_000);
  const before = await chain(store);
  assert.ok(before.segments.every((s) => s.manifest.node === first!.name), 'only the leader commits');

  first!.child.kill('SIGKILL');
  await first!.exited;
  const killedAt = Date.now();
  const survivors = daemons.filter((d) => d !== first);
  await until('a new leader', async () => (await leaders(survivors)).length === 1, (TTL_SECONDS + 10) * 1000);
  const [second] = await leaders(survivors);
  await until('the new leader commits', async () => (await chain(store)).segments.some((s) => s.manifest.node === second!.name), 30_000);
  await load.stop();
  const end = await revisionNow(client!);
  await until(`the log reaches revision ${end}`, async () => {
    const last = (await chain(store)).segments.at(-1);
    return last !== undefined && BigInt(last.manifest.lastRevision) >= end;
  }, 30_000);

  const { segments, report } = await chain(store);
  assert.deepEqual(report.gaps, [], 'nothing was compacted away');
  const startRevision = BigInt(segments[0]!.manifest.firstRevision);
  const revisions = new Set<bigint>();
  let events = 0;
  for (const s of segments) {
    events += s.manifest.events;
    for (let r = BigInt(s.manifest.firstRevision); r <= BigInt(s.manifest.lastRevision); r++) {
      assert.ok(!revisions.has(r), `revision ${r} is in two segments`);
      revisions.add(r);
    }
  }
  // checkChain proved each segment starts right after the one before; with one put per revision
  // every revision in between holds an event.
  assert.equal(BigInt(revisions.size), end - startRevision + 1n, `every revision from ${startRevision} to ${end}`);
  assert.ok(events >= revisions.size, 'at least one event per revision');
  assert.deepEqual([...new Set(segments.map((s) => s.manifest.node))].sort(), [first!.name, second!.name].sort());
  const metrics = await scrape(second!.ports.metrics);
  assert.equal(sample(metrics, 'lifeboat_changes_captured_revision'), Number(end));
  assert.ok((sample(metrics, 'lifeboat_changes_lag_seconds') ?? -1) < 5, 'caught up');
  const follower = survivors.find((d) => d !== second)!;
  assert.equal(sample(await scrape(follower.ports.metrics), 'lifeboat_changes_lag_seconds'), 0, 'a follower reports no lag');
  process.stdout.write(`# change log failover: ${load.puts()} puts, ${segments.length} segments, ${second!.name} led ${(Date.now() - killedAt) / 1000} s after the SIGKILL of ${first!.name}\n`);
});
