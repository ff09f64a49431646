/**
 * Replay of the change log on a real etcd 3.6: a full backup with the CLI, then the capture
 * (src/changes/capture.ts) records a steady 200 writes/s, a namespace-shaped prefix is deleted
 * in one request, and the writes go on. `lifeboat changes replay` then rebuilds etcd just before
 * the deletion, at a time, and at a revision: each rebuilt etcd equals the live cluster at its
 * target revision key for key (--compare-live), the snapshot it writes restores with etcdutl
 * (its status checks), and the one lease the events name is granted again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { parse } from 'yaml';
import { ChangeCapture } from '../../src/changes/capture.ts';
import { readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import type { ChangeLogDrillReport } from '../../src/changes/drill-replay.ts';
import type { ReplayReport } from '../../src/changes/replay-run.ts';
import { etcdWatcher } from '../../src/changes/watch.ts';
import { createEncryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { configDoc, configOf, quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const run = promisify(execFile);
let work: string;
let cluster: EtcdCluster;
let client: Etcd3;
let configFile: string;
let storeDir: string;
const key = await generateIdentity();
/** Revisions of the story: the backup, the deletion, the end of the writes. */
const at = { backup: 0n, deletion: 0n, end: 0n, midTime: '', mid: 0n };

const revisionNow = async () => BigInt((await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision);

async function until(what: string, done: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Writes at about `perSecond` for `seconds`: ConfigMaps of namespace `ns` put and overwritten, one in ten with a lease. */
async function writeSteadily(ns: string, perSecond: number, seconds: number, lease: string): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < perSecond * seconds; i++) {
    const name = `/registry/configmaps/${ns}/cm-${i % 50}`;
    if (i % 10 === 0) await client.kv.put({ key: Buffer.from(`/registry/events/${ns}/ev-${i}`), value: Buffer.from(`event ${i}`), lease });
    else await client.put(name).value(`${ns} ${i}`.padEnd(200, '.'));
    const ahead = (i + 1) * (1000 / perSecond) - (performance.now() - start);
    if (ahead > 0) await sleep(ahead);
  }
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-replay-'));
  let hostRoot: string;
  ({ etcd: cluster, hostRoot } = await startEtcdHost(work, { members: 1, hosts: ['m1'] }));
  client = cluster.client();
  storeDir = path.join(work, 'store');
  const keyFile = path.join(work, 'key.txt');
  await writeFile(keyFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  const doc = { ...configDoc(cluster, hostRoot, storeDir, [key.recipient]), encryption: { recipients: [key.recipient], identityFile: keyFile }, tools: { etcdutl: etcdBinaries('3.6').etcdutl, etcd: etcdBinaries('3.6').etcd } };
  configFile = await writeConfig(work, doc);

  // Before the backup: a namespace that stays, and the one that is deleted later.
  for (let i = 0; i < 20; i++) await client.put(`/registry/configmaps/shop/cm-${i}`).value(`shop ${i}`);
  await client.put('/registry/namespaces/shop').value('ns shop');
  const made = await runCli(['--config', configFile, 'backup']);
  assert.equal(made.code, 0, made.stderr);
  at.backup = await revisionNow();

  const config = configOf(doc);
  const watcher = etcdWatcher(config.etcd, quietLog);
  const store = new FsStore(storeDir);
  const capture = new ChangeCapture(
    { store, trust: TEST_TRUST, signer: TEST_SIGNER, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => at.backup.toString(), now: () => new Date(), log: quietLog },
    { cluster: config.cluster, node: 'test-node', recipients: [key.recipient], level: 3, segmentSeconds: 0.5, maxSegmentBytes: 256 * 1024 },
  );
  const abort = new AbortController();
  const running = capture.run(abort.signal).finally(() => watcher.close());

  const lease = (await client.leaseClient.leaseGrant({ TTL: 600, ID: '0' })).ID;
  await writeSteadily('app', 200, 2, lease);
  at.mid = await revisionNow();
  at.midTime = new Date().toISOString();
  await sleep(20);
  // New keys in shop after the backup: only the change log has them.
  for (let i = 20; i < 30; i++) await client.put(`/registry/configmaps/shop/cm-${i}`).value(`shop ${i}`);
  await writeSteadily('app', 200, 1, lease);
  // The accident: the whole namespace, one request.
  const deleted = await client.kv.deleteRange({ key: Buffer.from('/registry/configmaps/shop/'), range_end: Buffer.from('/registry/configmaps/shop0') });
  at.deletion = BigInt(deleted.header.revision);
  await client.delete().key('/registry/namespaces/shop');
  await writeSteadily('app', 200, 1, lease);
  at.end = await revisionNow();
  await until('the capture commits every revision', async () => {
    const ids = await segmentIds(store, 'it');
    return ids.length > 0 && BigInt((await readTrustedSegment(store, 'it', TEST_TRUST, ids.at(-1)!)).manifest.lastRevision) >= at.end;
  });
  abort.abort();
  await running;
});

after(async () => {
  client?.close();
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function replay(args: string[]): Promise<ReplayReport> {
  const res = await runCli(['--config', configFile, 'changes', 'replay', ...args, '--compare-live', '--scratch-dir', work, '-o', 'json']);
  assert.equal(res.code, 0, `${args.join(' ')}: ${res.stdout}${res.stderr}`);
  return JSON.parse(res.stdout) as ReplayReport;
}

test('before the deletion of a key: the rebuilt etcd equals the live cluster just before the prefix was deleted, and its snapshot restores with etcdutl', async () => {
  const output = path.join(work, 'before-deletion.db');
  const r = await replay(['--before-deletion-of', '/registry/configmaps/shop/cm-25', '--snapshot', output]);
  assert.equal(r.plan.targetRevision, (at.deletion - 1n).toString(), 'the revision just before the delete');
  assert.equal(BigInt(r.plan.backupRevision) <= at.backup, true);
  assert.equal(r.comparison?.difference, undefined, JSON.stringify(r.comparison));
  assert.ok(r.comparison!.keys >= 30 + 50, `every key compared: ${r.comparison!.keys}`);
  assert.ok(r.stats.events > 600, `the steady writes replayed: ${r.stats.events}`);
  assert.equal(r.stats.leases, 1, 'the one lease the events name is granted again');
  console.log(`# replay: ${r.stats.events} events, ${r.stats.transactions} transactions, ${r.stats.eventsPerSecond} events/s; drill ${r.drill.durationSeconds} s`);

  // The snapshot, as etcdutl checks and restores it (its trailing sha256 included).
  const { etcdutl } = etcdBinaries('3.6');
  const status = JSON.parse((await run(etcdutl, ['snapshot', 'status', output, '-w', 'json'])).stdout) as { totalKey: number };
  assert.ok(status.totalKey >= r.comparison!.keys, `the snapshot holds the keys: ${status.totalKey}`);
  const data = path.join(work, 'restored');
  await run(etcdutl, ['snapshot', 'restore', output, '--data-dir', data, '--name', 'r', '--initial-cluster', 'r=http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380']);
});

test('at a time and at a revision: equal to the live cluster there; a target past the log, inside no log, or a key never deleted is refused naming the flag', async () => {
  const byTime = await replay(['--to-time', at.midTime]);
  // The time is when the capture received a revision, a little after its put: the revision named
  // is after the backup and before the deletion, and no later than the last put before that time.
  const named = BigInt(byTime.plan.targetRevision);
  assert.ok(named > at.backup && named <= at.mid && named < at.deletion, `${named} is the last revision received by ${at.midTime} (puts before it reached ${at.mid})`);
  assert.equal(byTime.comparison?.difference, undefined);
  const byRevision = await replay(['--to-revision', at.end.toString()]);
  assert.equal(byRevision.plan.targetRevision, at.end.toString());
  assert.equal(byRevision.comparison?.difference, undefined);
  assert.ok(byRevision.comparison!.keys < byTime.comparison!.keys + 30, 'shop is gone at the end');

  const past = await runCli(['--config', configFile, 'changes', 'replay', '--to-revision', (at.end + 1000n).toString(), '--compare-live']);
  assert.equal(past.code, 2, past.stderr);
  assert.match(past.stderr, /past the end of the change log/);
  const never = await runCli(['--config', configFile, 'changes', 'replay', '--before-deletion-of', '/registry/configmaps/app/cm-1', '--compare-live']);
  assert.equal(never.code, 2, never.stderr);
  assert.match(never.stderr, /holds no delete of \/registry\/configmaps\/app\/cm-1/);
  const two = await runCli(['--config', configFile, 'changes', 'replay', '--to-revision', '5', '--to-time', at.midTime, '--compare-live']);
  assert.equal(two.code, 2);
  assert.match(two.stderr, /exactly one target/);
});

test('lifeboat drill also replays the change log after the backup, up to its newest revision, equal to the live cluster; --no-change-log drills the backup alone', async () => {
  const res = await runCli(['--config', configFile, 'drill', 'latest', '--scratch-dir', work, '-o', 'json']);
  assert.equal(res.code, 0, res.stderr);
  const report = JSON.parse(res.stdout) as ChangeLogDrillReport & { verification: { result: string } };
  assert.ok(report.changeLog.replayed, JSON.stringify(report.changeLog));
  const c = report.changeLog;
  assert.equal(c.targetRevision, at.end.toString(), 'the newest revision the log holds');
  assert.ok(c.stats.events > 800, `the steady writes, the new keys and the deletes: ${c.stats.events}`);
  assert.equal(c.stats.leases, 1);
  assert.ok('keys' in c.comparison && c.comparison.difference === undefined, JSON.stringify(c.comparison));
  assert.ok(c.comparison.keys >= 50, `every key compared: ${c.comparison.keys}`);
  assert.equal(report.verification.result, 'passed');
  const text = await runCli(['--config', configFile, 'drill', 'latest', '--scratch-dir', work]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`change log: replayed \\d+ event\\(s\\) from \\d+ segment\\(s\\) to revision ${at.end} .*equal to the live cluster at that revision: \\d+ keys, every value`));

  const alone = await runCli(['--config', configFile, 'drill', 'latest', '--no-change-log', '--scratch-dir', work, '-o', 'json']);
  assert.equal(alone.code, 0, alone.stderr);
  const plain = JSON.parse(alone.stdout) as ChangeLogDrillReport;
  assert.deepEqual(plain.changeLog, { replayed: false, skipped: 'the change log is not drilled (drill.changeLog is off)' });
  assert.equal(plain.timings.replay, undefined);
});

test('changes verify checks the log without a key: OK as captured; a changed segment and a missing one are each named', async () => {
  const plain = parse(await readFile(configFile, 'utf8')) as { encryption: Record<string, unknown>; store: { fs: { dir: string } } };
  const withoutKey = async (dir: string) => writeConfig(work, { ...plain, encryption: { recipients: plain.encryption['recipients'] }, store: { fs: { dir } } });
  const ok = await runCli(['--config', await withoutKey(storeDir), 'changes', 'verify']);
  assert.equal(ok.code, 0, ok.stderr);
  const ids = await segmentIds(new FsStore(storeDir), 'it');
  assert.match(ok.stdout, new RegExp(`^change log OK: ${ids.length} segment\\(s\\), \\d+ event\\(s\\)`));
  const middle = ids[Math.floor(ids.length / 2)]!;

  const changed = path.join(work, 'store-changed');
  await cp(storeDir, changed, { recursive: true });
  const dataFile = path.join(changed, 'it', 'changes', middle, 'segment.jsonl.zst.age');
  const bytes = await readFile(dataFile);
  const at = bytes.length - 20;
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
  await writeFile(dataFile, bytes);
  const bad = await runCli(['--config', await withoutKey(changed), 'changes', 'verify']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, new RegExp(`change segment ${middle} is \\d+ bytes with sha256 [0-9a-f]{64}, but its manifest says .*it was changed`));

  const missing = path.join(work, 'store-missing');
  await cp(storeDir, missing, { recursive: true });
  await rm(path.join(missing, 'it', 'changes', middle), { recursive: true });
  const gone = await runCli(['--config', await withoutKey(missing), 'changes', 'verify']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /a segment is missing or was added/);
});

test('a drill after the live cluster compacted the target revision: the replay still runs and passes, and the comparison says why it was skipped', async () => {
  await client.put('/registry/configmaps/after/compaction').value('not in the log');
  const now = await revisionNow();
  await client.kv.compact({ revision: now.toString(), physical: true });
  const res = await runCli(['--config', configFile, 'drill', 'latest', '--scratch-dir', work, '-o', 'json']);
  assert.equal(res.code, 0, res.stderr);
  const c = (JSON.parse(res.stdout) as ChangeLogDrillReport).changeLog;
  assert.ok(c.replayed, JSON.stringify(c));
  assert.equal(c.targetRevision, at.end.toString());
  assert.deepEqual(c.comparison, { skipped: `the live cluster no longer holds revision ${at.end} (compacted since it was captured)` });
});
