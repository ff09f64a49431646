import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { startPrometheus, type PrometheusRig } from '../../scripts/rig/prometheus.ts';
import { RULES_FILE } from '../../scripts/gen-prometheusrule.ts';
import type { ApiPki } from '../support/api-pki.ts';
import { curl, sample, scrape, spawnDaemon, until, type DaemonProcess } from '../support/daemon.ts';
import { startDaemonTrio, type DaemonTrio } from '../support/daemon-trio.ts';
import { TEST_TRUST } from '../support/signing.ts';

/**
 * Three `lifeboat serve` processes, one per member of a 3-member TLS etcd, sharing one store:
 * the DaemonSet on three control-plane nodes.
 */
const TICK_SECONDS = 6;
const TTL_SECONDS = 2;
let work: string;
let trio: DaemonTrio | undefined;
let pki: ApiPki;
let storeDir: string;
let tokens: DaemonTrio['tokens'];
let daemons: DaemonProcess[] = [];
let configFiles: Map<string, string>;
let prometheus: PrometheusRig | undefined;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-daemon-'));
  trio = await startDaemonTrio(work, {
    populate: { keys: 300, valueBytes: [64, 2048], seed: 3 },
    daemon: { schedules: { backup: `*/${TICK_SECONDS} * * * * *`, prune: 'off', drill: 'off' }, election: { ttlSeconds: TTL_SECONDS } },
  });
  ({ pki, storeDir, tokens, daemons, configFiles } = trio);
});

after(async () => {
  await prometheus?.stop();
  await trio?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function leaders(among: DaemonProcess[]): Promise<DaemonProcess[]> {
  const flags = await Promise.all(among.map(async (d) => sample(await scrape(d.ports.metrics), 'lifeboat_is_leader') === 1));
  return among.filter((_, i) => flags[i]);
}

const api = (d: DaemonProcess, route: string) => `https://127.0.0.1:${d.ports.api}${route}`;
const bearer = (token: string) => ['-H', `Authorization: Bearer ${token}`];

test('exactly one daemon backs up per schedule tick; after SIGKILL of the leader another takes over within TTL + 5 s; no tick is lost or doubled', async () => {
  await until('one leader', async () => (await leaders(daemons)).length === 1, 30_000);
  prometheus = await startPrometheus({
    dir: path.join(work, 'prometheus'),
    targets: daemons.map((d) => `127.0.0.1:${d.ports.metrics}`),
    ruleFiles: [RULES_FILE],
  });
  await until('Prometheus scrapes all three', async () => ((await prometheus!.query('count(up == 1)'))[0]?.value ?? 0) === 3, 30_000);
  const slotOf = (iso: string) => Math.floor(Date.parse(iso) / 1000 / TICK_SECONDS);
  const catalog = new Catalog(new FsStore(storeDir), 'it', { trust: TEST_TRUST });
  // Let a few ticks pass, then kill the leader just after it committed a backup of a tick.
  await until('three backups', async () => (await catalog.list()).length >= 3, 60_000);
  const [first] = await leaders(daemons);
  assert.ok(first);
  first.child.kill('SIGKILL');
  await first.exited;
  const killedAt = Date.now();
  const survivors = daemons.filter((d) => d !== first);
  const failoverMs = await until('a new leader', async () => (await leaders(survivors)).length === 1, (TTL_SECONDS + 5) * 1000);
  const [second] = await leaders(survivors);
  assert.ok(second);
  process.stdout.write(`# failover after SIGKILL of ${first.name}: ${second.name} leads after ${(Date.now() - killedAt) / 1000} s (${failoverMs} ms of polling); TTL ${TTL_SECONDS} s\n`);
  const newLeaderName = second.name;
  await until('three backups by the new leader', async () => (await catalog.list()).filter((m) => m.node === newLeaderName).length >= 3, 60_000);
  assert.equal((await leaders(survivors)).length, 1, 'still exactly one leader');

  const backups = (await catalog.list()).reverse();
  const perSlot = new Map<number, string[]>();
  for (const b of backups) perSlot.set(slotOf(b.createdAt), [...(perSlot.get(slotOf(b.createdAt)) ?? []), `${b.backupId}@${b.node}`]);
  const slots = [...perSlot.keys()];
  const from = Math.min(...slots);
  const to = Math.max(...slots);
  for (let s = from; s <= to; s++) {
    assert.equal(perSlot.get(s)?.length ?? 0, 1, `tick slot ${s - from} of ${to - from}: ${JSON.stringify(perSlot.get(s) ?? [])}; all: ${JSON.stringify([...perSlot])}`);
  }
  assert.ok(backups.some((b) => b.node === first.name) && backups.some((b) => b.node === newLeaderName), 'both leaders backed up');
  assert.ok(backups.every((b) => b.node === first.name || b.node === newLeaderName), 'only leaders backed up');

  // The real Prometheus scraped all three daemons the whole time.
  const value = async (q: string) => (await prometheus!.query(q)).map((r) => r.value);
  assert.deepEqual(await value('count(up == 1)'), [2], 'the killed daemon is down');
  assert.deepEqual(await value('sum(lifeboat_is_leader)'), [1]);
  const counted = async (d: DaemonProcess) => (await value(`max_over_time(lifeboat_backup_total{result="success",instance="127.0.0.1:${d.ports.metrics}"}[5m])`))[0] ?? 0;
  const bySecond = backups.filter((b) => b.node === newLeaderName).length;
  await until(`Prometheus counts ${bySecond} backups of ${newLeaderName}`, async () => (await counted(second)) === bySecond, 10_000);
  const byFirst = backups.filter((b) => b.node === first.name).length;
  const seenOfFirst = await counted(first);
  // The last success of the killed daemon may have come after its last scrape.
  assert.ok(seenOfFirst === byFirst || seenOfFirst === byFirst - 1, `Prometheus saw ${seenOfFirst} of ${byFirst} backups of ${first.name}`);
  assert.deepEqual(await value('sum(lifeboat_backup_total{result="failure"})'), [0]);
  const firing = (await prometheus!.query('ALERTS{alertstate="firing"}')).map((r) => r.metric.alertname);
  assert.ok(!firing.includes('LifeboatBackupFailed') && !firing.includes('LifeboatSplitBrain') && !firing.includes('LifeboatNoLeader'), `firing: ${firing.join(', ')}`);
});

test('curl: 401 without credentials, 403 for a viewer on POST, 202 for an operator (the job completes), the same Idempotency-Key gets the same job, 409 with the leader from a non-leader', async () => {
  const alive = daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  const [leader] = await leaders(alive);
  assert.ok(leader);
  const follower = alive.find((d) => d !== leader)!;
  const ca = ['--cacert', pki.ca.cert];

  const anonymous = await curl([...ca, api(leader, '/v1/backups')]);
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.json?.code, 'UNAUTHENTICATED');

  const viewerList = await curl([...ca, ...bearer(tokens.viewer), api(leader, '/v1/backups?limit=2')]);
  assert.equal(viewerList.status, 200, viewerList.body);
  const viewerPost = await curl([...ca, ...bearer(tokens.viewer), '-X', 'POST', api(leader, '/v1/backups')]);
  assert.equal(viewerPost.status, 403);
  assert.equal(viewerPost.json?.code, 'FORBIDDEN');

  const key = ['-H', `Idempotency-Key: it-${Date.now()}`];
  const posted = await curl([...ca, ...bearer(tokens.operator), ...key, '-X', 'POST', api(leader, '/v1/backups')]);
  assert.equal(posted.status, 202, posted.body);
  const job = posted.json?.job as { id: string };
  const again = await curl([...ca, ...bearer(tokens.operator), ...key, '-X', 'POST', api(leader, '/v1/backups')]);
  assert.equal(again.status, 202);
  assert.equal((again.json?.job as { id: string }).id, job.id);
  let final: Record<string, unknown> | undefined;
  await until('the job completes', async () => {
    final = (await curl([...ca, ...bearer(tokens.viewer), api(leader, `/v1/jobs/${job.id}`)])).json;
    const state = (final?.job as { state?: string } | undefined)?.state ?? (final as { state?: string } | undefined)?.state;
    return state === 'succeeded' || state === 'failed';
  }, 60_000);
  const done = ((final?.job ?? final) as { state: string; kind: string; backupId?: string; progress: { bytesDone: number; bytesTotal?: number } });
  assert.equal(done.state, 'succeeded', JSON.stringify(final));
  assert.equal(done.kind, 'backup');
  assert.ok(done.backupId);
  assert.ok(done.progress.bytesTotal !== undefined && done.progress.bytesDone === done.progress.bytesTotal, JSON.stringify(done.progress));
  const shown = await curl([...ca, ...bearer(tokens.viewer), api(follower, `/v1/backups/${done.backupId}`)]);
  assert.equal(shown.status, 200, 'every instance reads the shared catalogue');

  const byCert = await curl([...ca, '--cert', pki.operatorClient.cert, '--key', pki.operatorClient.key, '-X', 'POST', api(follower, '/v1/backups')]);
  assert.equal(byCert.status, 409, byCert.body);
  assert.equal(byCert.json?.code, 'NOT_LEADER');
  assert.equal(byCert.json?.leader, leader.name);
});

test('SIGTERM stops a daemon cleanly, leader or not: it resigns and exits 0, and the other takes over at once', async () => {
  // The daemon SIGKILLed earlier comes back, on its own state dir, as a follower.
  const dead = daemons.find((d) => d.child.signalCode === 'SIGKILL')!;
  const again = await spawnDaemon(dead.name, configFiles.get(dead.name)!);
  daemons.push(again);
  assert.ok(again.logs.some((l) => l.phase === 'interrupted' || l.phase === 'serving'));
  const alive = daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  assert.equal(alive.length, 3);
  const [leader] = await leaders(alive);
  assert.ok(leader);
  const follower = alive.find((d) => d !== leader && d !== again)!;

  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0, 'a follower exits');
  assert.ok(again.logs.some((l) => l.phase === 'stopped'));

  leader.child.kill('SIGTERM');
  assert.equal(await leader.exited, 0);
  assert.ok(leader.logs.some((l) => l.phase === 'resigned'), 'resigned before exiting');
  assert.ok(leader.logs.some((l) => l.phase === 'stopped'));
  // A revoked lease hands over at the next poll, well under the TTL.
  await until('the other leads', async () => (await leaders([follower])).length === 1, TTL_SECONDS * 1000);
});
