/**
 * Time to restore to a point one hour after a 1 GiB full backup.
 *
 *   node scripts/bench-point-restore.ts [--db-mib 1024] [--events 720000] [--txn 1] [--no-compare] [--dir DIR]
 *
 * A 1-member TLS etcd 3.6 on loopback (scripts/rig/etcd.ts) is filled with Kubernetes-shaped
 * keys (scripts/rig/populate.ts: /registry/<resource>/<ns>/<name>, values of 1–12 KiB, about 3:1
 * compressible) until its database is at least `--db-mib`, and backed up with `lifeboat backup`
 * (the CLI). Then the capture of src/changes/ runs in this process, as the leader's daemon runs
 * it (5 s segments, zstd 3, age, signed and chained, into the directory store), while one hour
 * of a cluster's changes at 200 writes/s is written: `--events` (720,000 = 200 × 3,600) puts and
 * deletes of Kubernetes-shaped objects, each its own transaction (`--txn`) as an apiserver
 * writes them:
 *
 *   36 %  renewals of the 100 node leases and 2 controller leases (about 400 B each)
 *   20 %  new Events, each put with the lease of its minute, as the apiserver does (about 1 KiB)
 *   30 %  new versions of objects of the backup, most of them to a few hot ones (1–4 KiB)
 *    7 %  new Pods of rollouts (about 3 KiB)
 *    7 %  deletes of objects of the backup, each deleted once
 *
 * The hour is counted in events, not in wall time: they are written as fast as etcd takes them
 * (64 writers), and the capture records them as it would have over the hour. Once every event is
 * committed to the log, the steps of a restore to the last revision are timed, with the real
 * CLI and the real etcdutl, each from process start to exit:
 *
 *   1. lifeboat changes replay --to-revision <last> --snapshot point.db
 *      (the drill of the backup: fetch, check, etcdutl restore, a throwaway etcd; then the
 *      replay of the log's events onto it, its compaction and defragmentation, and the snapshot
 *      written)
 *   2. etcdutl snapshot restore point.db ... --bump-revision --mark-compacted --data-dir ...
 *      (the step every restore then runs on each member, with the argv a restore plan builds)
 *
 * and their total is the time to restore. Then, unless --no-compare, `lifeboat changes replay
 * --to-revision <last> --compare-live` checks the rebuilt etcd against the live one key by key
 * (it replays again; reported separately, with the comparison's share). Peak RSS is that of the
 * largest process of each command (GNU time). Everything is under `--dir` (default
 * /var/tmp/lifeboat-bench-point-restore; about 4 times `--db-mib` free), removed at the end and
 * on Ctrl-C; etcd is stopped by its PID. A quick try: `--db-mib 64 --events 20000`.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { ChangeCapture } from '../src/changes/capture.ts';
import { readTrustedSegment, segmentIds } from '../src/changes/manifest.ts';
import type { ReplayReport } from '../src/changes/replay-run.ts';
import { etcdWatcher } from '../src/changes/watch.ts';
import { createEncryptStream, generateIdentity, identityFileText } from '../src/crypto/age.ts';
import { createLogger } from '../src/log/logger.ts';
import { etcdutlArgv } from '../src/restore/plan-parts.ts';
import { loadSigning } from '../src/signing/trust.ts';
import { FsStore } from '../src/store/fs-store.ts';
import { lifeboatBackup, SOURCE_CLI } from './bench/lifeboat.ts';
import { MiB, timed, type Measured } from './bench/measure.ts';
import { printTable } from './bench/report.ts';
import { Teardown } from './bench/teardown.ts';
import { etcdBinaries } from './rig/binaries.ts';
import { startEtcdHost } from './rig/etcd.ts';
import { entry, type PopulateOptions } from './rig/populate.ts';

const { values: args } = parseArgs({
  options: {
    'db-mib': { type: 'string', default: '1024' },
    events: { type: 'string', default: '720000' },
    txn: { type: 'string', default: '1' },
    'no-compare': { type: 'boolean', default: false },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench-point-restore' },
  },
});
const dbBytes = Number(args['db-mib']) * MiB;
const hourEvents = Number(args.events);
const txnOps = Number(args.txn);
const dir = path.resolve(args.dir!);
/** Writers of the fill, and of the hour (an apiserver has many writes in flight). */
const WRITERS = 8;
const HOUR_WRITERS = 64;
const NODES = 100;
/** The apiserver attaches the Events of one minute to one lease (--lease-reuse-duration-seconds=60). */
const MINUTES = 60;

const teardown = new Teardown();
teardown.onSignals();
const log = createLogger('silent');
const seconds = (t0: number) => (performance.now() - t0) / 1000;
try {
  await teardown.freshDir(dir);
  const { etcd, hostRoot } = await startEtcdHost(dir, { members: 1, hosts: ['m1'], extraArgs: ['--quota-backend-bytes=12884901888'] });
  teardown.add('stop etcd', () => etcd.stop());
  const client = etcd.client();
  teardown.add('close the etcd client', async () => client.close());

  // The cluster: Kubernetes-shaped keys until the database is at least --db-mib.
  const fillOptions: PopulateOptions = { keys: 0, valueBytes: [1024, 12 * 1024], seed: 42, prefix: '/registry' };
  let t0 = performance.now();
  let dbSize = 0;
  for (let next = 0; dbSize < dbBytes; ) {
    // About 8 KiB of database per key (6.5 KiB of value on average): short of the size first, then topped up.
    const until = next + Math.max(2000, Math.ceil((dbBytes - dbSize) / (8 * 1024)));
    await Promise.all(Array.from({ length: WRITERS }, async () => {
      while (next < until) {
        const ops = [];
        for (let bytes = 0; bytes < 512 * 1024 && next < until; next++) {
          const [key, value] = entry(fillOptions, next);
          ops.push({ request_put: { key: Buffer.from(key), value } });
          bytes += value.length;
        }
        await client.kv.txn({ compare: [], success: ops, failure: [] });
      }
    }));
    fillOptions.keys = until;
    dbSize = Number((await client.maintenance.status()).dbSize);
  }
  const fillSeconds = seconds(t0);
  console.error(`filled: ${fillOptions.keys} keys, database ${(dbSize / MiB).toFixed(0)} MiB in ${fillSeconds.toFixed(0)} s`);

  const key = await generateIdentity();
  const identityFile = path.join(dir, 'key.txt');
  await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  const signingKey = path.join(dir, 'signing.key');
  await writeFile(signingKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const storeDir = path.join(dir, 'store');
  const bins = etcdBinaries('3.6');
  const config = path.join(dir, 'config.yaml');
  await writeFile(config, stringify({
    cluster: 'bench',
    node: 'bench',
    etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
    kit: { hostRoot },
    store: { fs: { dir: storeDir } },
    compression: { algorithm: 'zstd', level: 1 },
    encryption: { recipients: [key.recipient], identityFile },
    signing: { keyFile: signingKey },
    tools: { etcdutl: bins.etcdutl, etcd: bins.etcd },
    drill: { scratchDir: dir, startTimeoutSeconds: 300 },
    log: { level: 'warn' },
  }));
  const measure = { teardown, scratch: dir };
  const backup = await lifeboatBackup(config, measure);
  const backupRevision = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
  console.error(`backup: ${backup.seconds.toFixed(1)} s`);

  // The hour, captured as the leader's daemon captures it.
  const signing = loadSigning({ keyFile: signingKey, publicKeyFiles: [], allowUnsigned: false });
  const store = new FsStore(storeDir);
  const watcher = etcdWatcher({ endpoints: etcd.endpoints, tls: { ...etcd.tls, serverName: 'localhost' }, discoverMembers: false, dialTimeoutMs: 5000 }, log);
  const capture = new ChangeCapture(
    { store, trust: signing.trust, signer: signing.signer, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => backupRevision, now: () => new Date(), log },
    { cluster: 'bench', node: 'bench', recipients: [key.recipient], level: 3, segmentSeconds: 5, maxSegmentBytes: 8 << 20 },
  );
  const abort = new AbortController();
  const running = capture.run(abort.signal);
  teardown.add('stop the capture', async () => {
    abort.abort();
    await running.catch(() => undefined);
    watcher.close();
  });
  const leases: string[] = [];
  for (let m = 0; m < MINUTES; m++) leases.push((await client.leaseClient.leaseGrant({ TTL: 7200, ID: '0' })).ID);
  const hour = hourWriter(fillOptions.keys, leases);
  t0 = performance.now();
  let written = 0;
  await Promise.all(Array.from({ length: HOUR_WRITERS }, async () => {
    while (written < hourEvents) {
      const ops = hour.next(Math.min(txnOps, hourEvents - written));
      written += ops.length;
      await client.kv.txn({ compare: [], success: ops, failure: [] });
    }
  }));
  const writeSeconds = seconds(t0);
  const end = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
  console.error(`the hour: ${hourEvents} events written in ${writeSeconds.toFixed(0)} s (${Math.round(hourEvents / writeSeconds)}/s), to revision ${end}`);
  let committed: { segments: number; events: number; bytes: number } | undefined;
  while (!committed) {
    const ids = await segmentIds(store, 'bench');
    const last = ids.length > 0 ? (await readTrustedSegment(store, 'bench', signing.trust, ids.at(-1)!)).manifest : undefined;
    if (last && BigInt(last.lastRevision) >= BigInt(end)) {
      let events = 0;
      let bytes = 0;
      for (const id of ids) {
        const m = (await readTrustedSegment(store, 'bench', signing.trust, id)).manifest;
        events += m.events;
        bytes += m.data.size;
      }
      committed = { segments: ids.length, events, bytes };
    } else await new Promise((r) => setTimeout(r, 1000));
  }
  const captureSeconds = seconds(t0);
  abort.abort();
  await running;
  watcher.close();
  if (committed.events !== hourEvents) throw new Error(`the change log holds ${committed.events} events, not the ${hourEvents} written`);

  // The restore to the last revision: replay, then etcdutl.
  const cli = (argv: string[]) => timed(process.execPath, ['--max-semi-space-size=1', SOURCE_CLI, '--config', config, ...argv], measure);
  const snapshot = path.join(dir, 'point.db');
  const load = loadavg()[0]!;
  const replay = await cli(['changes', 'replay', '--to-revision', end, '--snapshot', snapshot, '--scratch-dir', dir, '-o', 'json']);
  const report = JSON.parse(replay.stdout) as ReplayReport;
  const member = { name: 'm1', peerURL: 'https://127.0.0.1:2380' };
  const argv = etcdutlArgv(bins.etcdutl, snapshot, member, [member], 'lifeboat-bench', 1_000_000, path.join(dir, 'restored.etcd'));
  const restore = await timed(argv.command, argv.args, measure);
  const restoredBytes = await dirBytes(path.join(dir, 'restored.etcd'));

  let compare: { run: Measured; report: ReplayReport } | undefined;
  if (!args['no-compare']) {
    const run = await cli(['changes', 'replay', '--to-revision', end, '--compare-live', '--scratch-dir', dir, '-o', 'json']);
    compare = { run, report: JSON.parse(run.stdout) as ReplayReport };
  }

  const s = report.stats;
  const t = report.drill.timings;
  console.log(`database ${(dbSize / MiB).toFixed(0)} MiB (${fillOptions.keys} keys); backup ${backup.seconds.toFixed(1)} s; the hour: ${hourEvents} events (${hourEvents / 200} s at 200 writes/s, counted in events), written in ${writeSeconds.toFixed(0)} s and committed in ${committed.segments} segments (${(committed.bytes / MiB).toFixed(1)} MiB stored) ${captureSeconds.toFixed(0)} s after the first write`);
  console.log(`replay: ${s.events} events of ${s.revisions} revisions as ${s.operations} operations in ${s.transactions} transactions, ${s.seconds.toFixed(1)} s (${s.eventsPerSecond} events/s, ${s.etcdSeconds.toFixed(1)} s with a transaction in flight), ${s.leases} leases`);
  printTable([
    ['step', 'seconds', 'peak RSS MiB'],
    ['1. lifeboat changes replay --snapshot', replay.seconds.toFixed(1), replay.peakRssMiB.toFixed(0)],
    ['2. etcdutl snapshot restore', restore.seconds.toFixed(1), restore.peakRssMiB.toFixed(0)],
    ['time to restore to the point', (replay.seconds + restore.seconds).toFixed(1), ''],
  ]);
  console.log(`(load average ${load.toFixed(2)} when the replay started, on ${cpus().length} cores)`);
  console.log(
    `1: the drill of the backup: fetch and check ${t.archive.toFixed(1)} s, etcdutl restore ${t.restore.toFixed(1)} s, etcd start ${t.start.toFixed(1)} s, key counts ${t.check.toFixed(1)} s; ` +
      `the replay ${s.seconds.toFixed(1)} s, then compaction, defragmentation and the snapshot (${((report.snapshotBytes ?? 0) / MiB).toFixed(0)} MiB) ${((t.replay ?? 0) - s.seconds).toFixed(1)} s\n` +
      `2: a data dir of ${(restoredBytes / MiB).toFixed(0)} MiB, the revision bumped by 1,000,000 and compacted, as a restore plan runs it`,
  );
  if (compare) {
    const c = compare.report;
    const compareSeconds = (c.drill.timings.replay ?? 0) - c.stats.seconds;
    const d = c.comparison?.difference;
    console.log(`--compare-live (a second replay, then every key compared with the live etcd at revision ${end}): ${c.comparison?.keys ?? 0} keys ${d ? `DIFFERENT at ${d.key} (replayed ${d.replayed}, live ${d.live})` : 'equal'}; the comparison ${compareSeconds.toFixed(1)} s, the whole command ${compare.run.seconds.toFixed(1)} s`);
  }
} finally {
  await teardown.run();
}

/**
 * The hour's writes, `count` at a time: distinct keys within one transaction (etcd refuses a
 * key twice), deletes only of keys that exist (a delete of a missing key is no event), so that
 * every operation is one event.
 */
function hourWriter(filled: number, leases: readonly string[]) {
  let state = 0x2545f491;
  const rand = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const fill: PopulateOptions = { keys: filled, valueBytes: [1024, 12 * 1024], seed: 42, prefix: '/registry' };
  // Each filled object deleted at most once: a walk through them with a step prime to their count.
  const step = [7919, 104_729, 1_299_709].find((p) => filled % p !== 0)!;
  let deleted = 0;
  let n = 0;
  const one = (): { key: string; value?: Buffer; lease?: string } => {
    const i = n++;
    const r = rand();
    const rv = String(1_000_000 + i);
    if (r < 0.36) {
      const node = Math.floor(rand() * (NODES + 2));
      const name = node < NODES ? `node-${node}` : ['kube-controller-manager', 'kube-scheduler'][node - NODES]!;
      const ns = node < NODES ? 'kube-node-lease' : 'kube-system';
      return { key: `/registry/leases/${ns}/${name}`, value: k8s('Lease', 'coordination.k8s.io/v1', ns, name, rv, 250) };
    }
    if (r < 0.56) {
      const ns = `team-${i % 40}`;
      const name = `web-${i % 997}.${(i * 2654435761 >>> 0).toString(16)}`;
      return { key: `/registry/events/${ns}/${name}`, value: k8s('Event', 'v1', ns, name, rv, 700), lease: leases[Math.min(MINUTES - 1, Math.floor((i / hourEvents) * MINUTES))]! };
    }
    if (r < 0.86) {
      // Most updates go to a few hot objects (status of busy Pods, EndpointSlices, Deployments).
      const [key] = entry(fill, Math.floor(rand() ** 4 * filled));
      const [, , resource, ns, name] = key.split('/') as [string, string, string, string, string];
      return { key, value: k8s(resource[0]!.toUpperCase() + resource.slice(1, -1), 'v1', ns, name, rv, 1000 + Math.floor(rand() * 3000)) };
    }
    if (r < 0.93 || deleted >= filled) {
      const ns = `team-${i % 40}`;
      return { key: `/registry/pods/${ns}/web-${i.toString(36)}`, value: k8s('Pod', 'v1', ns, `web-${i.toString(36)}`, rv, 2800) };
    }
    return { key: entry(fill, (deleted++ * step) % filled)[0] };
  };
  return {
    next(count: number) {
      const keys = new Set<string>();
      const ops = [];
      while (ops.length < count) {
        const o = one();
        if (keys.has(o.key)) continue;
        keys.add(o.key);
        const key = Buffer.from(o.key);
        ops.push(o.value ? { request_put: { key, value: o.value, ...(o.lease ? { lease: o.lease } : {}) } } : { request_delete_range: { key } });
      }
      return ops;
    },
  };
}

/** A Kubernetes object's JSON of about `bytes` bytes: metadata, a spec and status padded out as managedFields are. */
function k8s(kind: string, apiVersion: string, namespace: string, name: string, resourceVersion: string, bytes: number): Buffer {
  const object = {
    apiVersion,
    kind,
    metadata: { name, namespace, uid: `${resourceVersion}-4b1d-8c5e-${name.length}`, resourceVersion, creationTimestamp: '2026-11-24T03:00:00Z', labels: { app: name.split(/[-.]/)[0], 'pod-template-hash': '5d8f7c9b6' } },
    spec: { holderIdentity: `${name}-holder`, leaseDurationSeconds: 40, renewTime: new Date(1_795_000_000_000 + Number(resourceVersion)).toISOString() },
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: '2026-11-24T03:00:00Z' }] },
    managedFields: [] as { manager: string; fieldsV1: string }[],
  };
  for (let m = 0; JSON.stringify(object).length < bytes; m++) {
    const hash = createHash('sha256').update(`${name}/${resourceVersion}/${m}`).digest('hex');
    object.managedFields.push({ manager: `kube-controller-manager-${m}`, fieldsV1: `{"f:status":{"f:conditions":{"k:{\\"type\\":\\"Ready\\"}":{".":{},"f:status":{}}}},"f:image":"sha256:${hash}"}` });
  }
  return Buffer.from(JSON.stringify(object));
}

async function dirBytes(root: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(root, { recursive: true, withFileTypes: true })) if (f.isFile()) total += (await stat(path.join(f.parentPath, f.name))).size;
  return total;
}
