import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { checkChain, readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import type { ChangeLogDrillReport } from '../../src/changes/drill-replay.ts';
import type { Job } from '../../src/jobs/job.ts';
import { curl, sample, scrape, until, type DaemonProcess } from '../support/daemon.ts';
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
    identity: true,
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

test('a leader paused (SIGSTOP) while etcd compacts what it had not committed: the next leader records the gap, takes a full backup at once, and the paused one commits nothing when it wakes', async () => {
  const { daemons, storeDir } = trio!;
  const store = new FsStore(storeDir);
  const alive = daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  const [paused] = await leaders(alive);
  const next = alive.find((d) => d !== paused)!;
  const caughtUp = await revisionNow(client!);
  await until('the log is caught up', async () => BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision) >= caughtUp, 30_000);
  const lastBefore = BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision);

  let mark = 0;
  paused!.child.kill('SIGSTOP');
  try {
    for (let i = 0; i < 20; i++) await client!.put(`/registry/configmaps/lost/cm-${i}`).value('gone before it was captured');
    const compacted = await revisionNow(client!);
    await client!.kv.compact({ revision: compacted.toString(), physical: true });
    await until(`${next.name} leads`, async () => (await leaders([next])).length === 1, (TTL_SECONDS + 10) * 1000);
    await until('the gap is seen and a backup queued', () => next.logs.some((l) => l.phase === 'changes-gap-backup' && typeof l.jobId === 'string'), 30_000);
    const catalog = new Catalog(store, 'it', { trust: TEST_TRUST });
    await until(`a full backup by ${next.name}`, async () => (await catalog.list()).some((m) => m.node === next.name && BigInt(m.etcd.revision) >= compacted), 60_000);
    await client!.put('/registry/configmaps/after/cm').value('captured');
    const end = await revisionNow(client!);
    await until(`the log reaches revision ${end}`, async () => BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision) >= end, 30_000);

    const { segments, report } = await chain(store);
    const after = segments.findIndex((s) => s.manifest.gap !== undefined);
    assert.deepEqual(report.gaps.map((g) => [g.from, g.to]), [[(lastBefore + 1n).toString(), (compacted - 1n).toString()]], 'one gap: what the paused leader had not committed');
    assert.equal(segments[after]!.manifest.firstRevision, compacted.toString(), 'the compact revision itself is captured');
    assert.equal(sample(await scrape(next.ports.metrics), 'lifeboat_changes_gaps_total'), 1);
  } finally {
    mark = paused!.logs.length;
    paused!.child.kill('SIGCONT');
  }
  // The woken leader's term has long ended: its capture stops, and whatever it held is refused by the fence.
  await until(`${paused!.name}'s capture stops`, () => paused!.logs.slice(mark).some((l) => l.phase === 'changes-stop'), 30_000);
  const segmentsBefore = (await chain(store)).segments.length;
  await client!.put('/registry/configmaps/after/cm2').value('captured by the leader');
  const end = await revisionNow(client!);
  await until(`the log reaches revision ${end}`, async () => BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision) >= end, 30_000);
  const { segments } = await chain(store);
  assert.ok(segments.length > segmentsBefore);
  const gapAt = segments.findIndex((s) => s.manifest.gap !== undefined);
  assert.deepEqual([...new Set(segments.slice(gapAt).map((s) => s.manifest.node))], [next.name], `only ${next.name} committed after the gap`);
  assert.equal((await leaders([paused!])).length, 0, `${paused!.name} follows`);
});

test('SIGTERM of the leader: it commits what it holds before it resigns and exits 0; the next leader continues the chain', async () => {
  const { daemons, storeDir } = trio!;
  const store = new FsStore(storeDir);
  const alive = daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  const [leader] = await leaders(alive);
  const other = alive.find((d) => d !== leader)!;
  for (let i = 0; i < 10; i++) await client!.put(`/registry/configmaps/term/cm-${i}`).value('held at SIGTERM');
  const held = await revisionNow(client!);
  leader!.child.kill('SIGTERM');
  assert.equal(await leader!.exited, 0);
  const { segments: atExit } = await chain(store);
  assert.ok(BigInt(atExit.at(-1)!.manifest.lastRevision) >= held, `the stopping leader committed through ${held}`);
  assert.equal(atExit.at(-1)!.manifest.node, leader!.name);

  await until(`${other.name} leads`, async () => (await leaders([other])).length === 1, (TTL_SECONDS + 10) * 1000);
  await client!.put('/registry/configmaps/term/after').value('next');
  const end = await revisionNow(client!);
  await until(`the log reaches revision ${end}`, async () => BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision) >= end, 30_000);
  const { segments, report } = await chain(store);
  assert.equal(report.gaps.length, 1, 'no gap but the one compaction made');
  assert.equal(segments.at(-1)!.manifest.node, other.name);
});

test('a drill through the API replays the change log the leaders committed after the gap\'s backup, equal to the live cluster key for key; the replay rate is a metric', async () => {
  const { daemons, storeDir, pki, tokens } = trio!;
  const store = new FsStore(storeDir);
  const alive = daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  await until('one leader', async () => (await leaders(alive)).length === 1, 30_000);
  const [leader] = await leaders(alive);
  for (let i = 0; i < 30; i++) await client!.put(`/registry/configmaps/drill/cm-${i % 7}`).value(`v${i}`);
  await client!.delete().key('/registry/configmaps/drill/cm-3');
  const end = await revisionNow(client!);
  await until(`the log reaches revision ${end}`, async () => BigInt((await chain(store)).segments.at(-1)!.manifest.lastRevision) >= end, 30_000);
  const latest = await new Catalog(store, 'it', { trust: TEST_TRUST }).resolve('latest');
  const after = (await chain(store)).segments.filter((s) => BigInt(s.manifest.lastRevision) > BigInt(latest.etcd.revision));
  assert.ok(new Set(after.map((s) => s.manifest.node)).size >= 2, 'the segments after the backup come from two leaders');

  const api = (route: string, ...args: string[]) => curl(['--cacert', pki.ca.cert, '-H', `Authorization: Bearer ${tokens.operator}`, ...args, `https://127.0.0.1:${leader!.ports.api}${route}`]);
  const posted = await api('/v1/backups/latest/verify', '-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{"deep":true}');
  assert.equal(posted.status, 202, posted.body);
  const id = (posted.json?.job as Job).id;
  let job: Job | undefined;
  await until('the drill ends', async () => {
    job = (await api(`/v1/jobs/${id}`)).json?.job as Job;
    return job.state === 'succeeded' || job.state === 'failed';
  }, 120_000);
  assert.equal(job!.state, 'succeeded', JSON.stringify(job!.error));
  const report = job!.result as ChangeLogDrillReport;
  assert.equal(report.backupId, latest.backupId);
  assert.ok(report.changeLog.replayed, JSON.stringify(report.changeLog));
  const c = report.changeLog;
  assert.equal(BigInt(c.targetRevision) >= end, true, `replayed to the newest revision the log holds (${c.targetRevision}), at least ${end}`);
  assert.equal(c.segments, after.length);
  assert.ok('keys' in c.comparison && c.comparison.difference === undefined, JSON.stringify(c.comparison));
  assert.ok(c.comparison.keys > 50, `every key compared: ${c.comparison.keys}`);
  // Every event after the backup, once: the writes above and the gap test's, at most what the segments hold.
  assert.ok(c.stats.events >= 31 && c.stats.events <= after.reduce((n, s) => n + s.manifest.events, 0), `events replayed: ${c.stats.events}`);
  const rate = sample(await scrape(leader!.ports.metrics), 'lifeboat_changes_replay_events_per_second');
  assert.ok(rate !== undefined && rate > 0, `the replay rate: ${rate}`);
  assert.equal(sample(await scrape(leader!.ports.metrics), 'lifeboat_changes_replayed_events_total'), c.stats.events);
});
