import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, IKeyValue } from 'etcd3';
import { ChangeCapture, type Gap } from '../../src/changes/capture.ts';
import { keyOf, parseEvents, type ChangeEvent } from '../../src/changes/format.ts';
import { checkChain, readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import { etcdWatcher } from '../../src/changes/watch.ts';
import { createEncryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { configDoc, configOf, quietLog, runCli, writeConfig } from '../support/lifeboat.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

let work: string;
let hostRoot: string;
let cluster: EtcdCluster;
let client: Etcd3;
const key = await generateIdentity();
let keyFile: string;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-changes-'));
  ({ etcd: cluster, hostRoot } = await startEtcdHost(work, { members: 1, hosts: ['m1'] }));
  client = cluster.client();
  keyFile = path.join(work, 'key.txt');
  await writeFile(keyFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
});

after(async () => {
  client?.close();
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** A capturer of the test etcd into `storeDir`, started after `backupRevision` when the store has no segment. */
function capturer(storeDir: string, backupRevision: string | undefined, extra: { onGap?: (gap: Gap) => void } = {}) {
  const config = configOf(configDoc(cluster, hostRoot, storeDir, [key.recipient]));
  const watcher = etcdWatcher(config.etcd, quietLog);
  const store = new FsStore(storeDir);
  const capture = new ChangeCapture(
    { store, trust: TEST_TRUST, signer: TEST_SIGNER, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => backupRevision, now: () => new Date(), log: quietLog, ...extra },
    { cluster: config.cluster, node: 'test-node', recipients: [key.recipient], level: 3, segmentSeconds: 0.3, maxSegmentBytes: 4096 },
  );
  const abort = new AbortController();
  const running = capture.run(abort.signal).finally(() => watcher.close());
  return { store, config, stop: async () => (abort.abort(), running), running };
}

async function revisionNow(): Promise<bigint> {
  const res = await client.kv.range({ key: Buffer.from('/'), limit: 1 });
  return BigInt(res.header.revision);
}

/** Polls `done` until it holds, at most `ms`. */
async function until(what: string, done: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function committedThrough(store: FsStore, revision: bigint): Promise<boolean> {
  const ids = await segmentIds(store, 'it');
  const last = ids.at(-1);
  return last !== undefined && BigInt((await readTrustedSegment(store, 'it', TEST_TRUST, last)).manifest.lastRevision) >= revision;
}

/** Every event of the store's segments, each decrypted by the stock age and zstd CLIs. */
async function eventsByCli(storeDir: string, store: FsStore): Promise<ChangeEvent[]> {
  const segments = [];
  for (const id of await segmentIds(store, 'it')) segments.push(await readTrustedSegment(store, 'it', TEST_TRUST, id));
  checkChain(segments);
  const events: ChangeEvent[] = [];
  for (const { manifest } of segments) {
    const plain = execFileSync('sh', ['-c', `age -d -i "$1" "$2" | zstd -d`, 'sh', keyFile, path.join(storeDir, manifest.data.key)]);
    const these = parseEvents(plain.toString('utf8'), manifest.segmentId);
    assert.equal(these.length, manifest.events);
    assert.equal(these[0]!.rev, manifest.firstRevision);
    assert.equal(these.at(-1)!.rev, manifest.lastRevision);
    events.push(...these);
  }
  return events;
}

/** etcd's own history from `from` through `to`, through a separate (etcd3 library) watcher. */
async function history(from: bigint, to: bigint): Promise<string[]> {
  const seen: string[] = [];
  const watcher = await client.watch().prefix('').startRevision(from.toString()).create();
  const line = (op: string, kv: IKeyValue) => `${kv.mod_revision} ${op} ${kv.key.toString()} ${op === 'put' ? kv.value.toString('base64') : ''} ${op === 'put' && kv.lease !== '0' ? kv.lease : ''}`;
  watcher.on('put', (kv) => seen.push(line('put', kv)));
  watcher.on('delete', (kv) => seen.push(line('delete', kv)));
  await until('the reference watch', async () => seen.length > 0 && BigInt(seen.at(-1)!.split(' ')[0]!) >= to);
  await watcher.cancel();
  return seen;
}

const asLines = (events: ChangeEvent[]) => events.map((e) => `${e.rev} ${e.op} ${keyOf(e)} ${e.value ?? ''} ${e.lease ?? ''}`);

async function writeSome(tag: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await client.put(`/registry/configmaps/${tag}/cm-${i}`).value(`${tag}-${i}-`.padEnd(300, 'x'));
  await client.put(`/registry/namespaces/${tag}`).value(`ns ${tag}`);
  // One revision, several events: a transaction.
  await client.if(`/registry/namespaces/${tag}`, 'Version', '>', 0).then(client.put(`/registry/pods/${tag}/a`).value('a'), client.put(`/registry/pods/${tag}/b`).value('b'), client.delete().key(`/registry/configmaps/${tag}/cm-0`)).commit();
  const lease = client.lease(60, { autoKeepAlive: false });
  await lease.put(`/registry/leases/${tag}`).value('held');
  await client.delete().key(`/registry/namespaces/${tag}`);
}

test('capture cuts puts, deletes and transactions into signed segments that age and zstd read, exactly as etcd recorded them; a restarted capture neither loses nor repeats', async () => {
  const storeDir = path.join(work, 'store-main');
  const start = await revisionNow();
  const first = capturer(storeDir, start.toString());
  await writeSome('alpha', 40);
  const mid = await revisionNow();
  await until('the first writes to be committed', () => committedThrough(first.store, mid));
  await first.stop();

  // While no capture runs, the cluster changes on.
  await writeSome('beta', 30);
  const end = await revisionNow();
  const second = capturer(storeDir, start.toString());
  await until('the capture to catch up', () => committedThrough(second.store, end));
  await second.stop();

  const ids = await segmentIds(second.store, 'it');
  assert.ok(ids.length >= 4, `several segments (size and time cuts): ${ids.length}`);
  const captured = await eventsByCli(storeDir, second.store);
  assert.deepEqual(asLines(captured), await history(start + 1n, end));
  assert.ok(captured.some((e) => e.lease !== undefined), 'a leased put records its lease');
  const revs = captured.map((e) => e.rev);
  assert.ok(revs.some((r, i) => i > 0 && revs[i - 1] === r), 'a transaction is one revision with several events');

  const doc = { ...configDoc(cluster, hostRoot, storeDir, [key.recipient]), encryption: { recipients: [key.recipient], identityFile: keyFile } };
  const configFile = await writeConfig(work, doc);
  const res = await runCli(['--config', configFile, 'changes', 'log', '--prefix', '/registry/namespaces/', '--deleted']);
  assert.equal(res.code, 0, res.stderr);
  const deletes = captured.filter((e) => e.op === 'delete' && keyOf(e).startsWith('/registry/namespaces/'));
  assert.equal(deletes.length, 2);
  for (const d of deletes) assert.match(res.stdout, new RegExp(`\\s${d.rev}\\s+delete\\s+${keyOf(d)}\\n`));
  assert.doesNotMatch(res.stdout, /put|configmaps/);
  const json = await runCli(['--config', configFile, 'changes', 'log', '--json', '--since', deletes[0]!.time]);
  assert.equal(json.code, 0, json.stderr);
  const since = Date.parse(deletes[0]!.time);
  const expected = captured.filter((e) => Date.parse(e.time) >= since).map((e) => `${e.rev} ${e.op} ${keyOf(e)}`);
  assert.ok(expected.length > 0 && expected.length < captured.length, 'the filter cuts somewhere');
  assert.deepEqual((JSON.parse(json.stdout) as { events: { revision: string; op: string; key: string }[] }).events.map((e) => `${e.revision} ${e.op} ${e.key}`), expected);
});

test('a start revision etcd already compacted is recorded as a gap in the next segment, and asks for a full backup', async () => {
  const storeDir = path.join(work, 'store-gap');
  const backupRevision = await revisionNow();
  await writeSome('gamma', 5);
  const compacted = await revisionNow();
  await client.kv.compact({ revision: compacted.toString(), physical: true });
  const gaps: Gap[] = [];
  const capture = capturer(storeDir, backupRevision.toString(), { onGap: (gap) => gaps.push(gap) });
  await until('the gap to be seen', async () => gaps.length > 0);
  await client.put('/registry/namespaces/after-gap').value('x');
  const end = await revisionNow();
  await until('the segment after the gap', () => committedThrough(capture.store, end));
  await capture.stop();
  assert.deepEqual(gaps, [{ from: (backupRevision + 1n).toString(), to: (compacted - 1n).toString() }]);
  const [segment] = await Promise.all((await segmentIds(capture.store, 'it')).map((id) => readTrustedSegment(capture.store, 'it', TEST_TRUST, id)));
  assert.deepEqual(segment!.manifest.gap, gaps[0]);
  assert.equal(segment!.manifest.firstRevision, compacted.toString(), 'the compact revision itself is still watchable');
  assert.deepEqual(checkChain([segment!]).gaps, [{ ...gaps[0]!, before: segment!.manifest.segmentId }]);
});

test('a catch-up larger than a watch response may be (etcd fragments it) is captured whole: every event, no revision split across segments', async () => {
  const storeDir = path.join(work, 'store-large');
  const start = await revisionNow();
  // About 19 MiB of history before the capture starts: etcd's catch-up response for it would be
  // over the client's 16 MiB limit unless fragmented.
  const value = Buffer.alloc(1024, 'f');
  for (let t = 0; t < 300; t++) {
    const ops = Array.from({ length: 64 }, (_, i) => ({ request_put: { key: Buffer.from(`/registry/pods/big/p-${t}-${i}`), value } }));
    await client.kv.txn({ compare: [], success: ops, failure: [] });
  }
  const end = await revisionNow();
  const capture = capturer(storeDir, start.toString());
  await until('the capture to catch up', () => committedThrough(capture.store, end), 60_000);
  await capture.stop();
  const segments = await Promise.all((await segmentIds(capture.store, 'it')).map((id) => readTrustedSegment(capture.store, 'it', TEST_TRUST, id)));
  checkChain(segments);
  assert.equal(segments.reduce((n, s) => n + s.manifest.events, 0), 300 * 64, 'every event of the 300 transactions');
  assert.ok(segments.every((s) => (BigInt(s.manifest.lastRevision) - BigInt(s.manifest.firstRevision) + 1n) * 64n === BigInt(s.manifest.events)), 'each segment holds whole transactions of 64 events');
});
