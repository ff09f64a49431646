/**
 * Replay throughput: how many change-log events per second `lifeboat changes replay` applies.
 *
 *   node scripts/bench-replay.ts [events=200000] [keys=20000] [valueBytes=1024]
 *
 * A 1-member etcd 3.6 on loopback (scripts/rig/etcd.ts) is backed up with the CLI; then the
 * capture of src/changes/ records `events` puts, Kubernetes-shaped (keys /registry/pods/ns-N/
 * pod-M spread over `keys` objects, each put a new version of one, in transactions of 64 so that
 * they are written fast), into a directory store. The real CLI then runs
 *
 *   lifeboat changes replay --to-revision <last> --compare-live -o json
 *
 * which drills the backup into a throwaway etcd, replays every event, and compares every key
 * and value with the live etcd at that revision. Printed: the events applied per second (the
 * replay step alone), against the target of 50,000 and the about 6,000 revisions per second
 * published for etcd-backup-restore's delta replay, all measured in this one run; and the
 * operations sent to etcd. A replay keeps each key's last operation within a window of 32 MiB
 * (src/changes/replay.ts): with the defaults every key is written 10 times and all 20,000 fit
 * in one window, so etcd gets 20,000 puts; `keys` = `events` writes each key once, and then
 * every event is a put in etcd, which bounds the rate.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { ChangeCapture } from '../src/changes/capture.ts';
import { readTrustedSegment, segmentIds } from '../src/changes/manifest.ts';
import type { ReplayReport } from '../src/changes/replay-run.ts';
import { etcdWatcher } from '../src/changes/watch.ts';
import { createEncryptStream, generateIdentity, identityFileText } from '../src/crypto/age.ts';
import { createLogger } from '../src/log/logger.ts';
import { loadSigning } from '../src/signing/trust.ts';
import { FsStore } from '../src/store/fs-store.ts';
import { SOURCE_CLI } from './bench/lifeboat.ts';
import { etcdBinaries } from './rig/binaries.ts';
import { startEtcdHost } from './rig/etcd.ts';

const run = promisify(execFile);
const [events = 200_000, keys = 20_000, valueBytes = 1024] = process.argv.slice(2, 5).map(Number);
const TXN = 64;
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-bench-replay-'));
const { etcd, hostRoot } = await startEtcdHost(work, { members: 1, hosts: ['m1'] });
const log = createLogger('silent');
const client = etcd.client();
try {
  const key = await generateIdentity();
  const identityFile = path.join(work, 'key.txt');
  writeFileSync(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  const signingKey = path.join(work, 'signing.key');
  writeFileSync(signingKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const storeDir = path.join(work, 'store');
  const bins = etcdBinaries('3.6');
  const config = path.join(work, 'config.yaml');
  writeFileSync(config, stringify({
    cluster: 'bench',
    node: 'bench',
    etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
    kit: { hostRoot },
    store: { fs: { dir: storeDir } },
    encryption: { recipients: [key.recipient], identityFile },
    signing: { keyFile: signingKey },
    tools: { etcdutl: bins.etcdutl, etcd: bins.etcd },
    log: { level: 'warn' },
  }));
  const cli = (args: string[]) => run(process.execPath, ['--max-semi-space-size=1', SOURCE_CLI, '--config', config, ...args], { maxBuffer: 64 << 20 });
  // A drill wants keys under /registry/ in the backup, as a real cluster has.
  for (let i = 0; i < 100; i++) await client.put(`/registry/namespaces/ns-${i}`).value(`ns-${i}`);
  await cli(['backup']);
  const start = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;

  const signing = loadSigning({ keyFile: signingKey, publicKeyFiles: [], allowUnsigned: false });
  const store = new FsStore(storeDir);
  const watcher = etcdWatcher({ endpoints: etcd.endpoints, tls: { ...etcd.tls, serverName: 'localhost' }, discoverMembers: false, dialTimeoutMs: 5000 }, log);
  const capture = new ChangeCapture(
    { store, trust: signing.trust, signer: signing.signer, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => start, now: () => new Date(), log },
    { cluster: 'bench', node: 'bench', recipients: [key.recipient], level: 3, segmentSeconds: 5, maxSegmentBytes: 8 << 20 },
  );
  const abort = new AbortController();
  const running = capture.run(abort.signal);
  const value = Buffer.alloc(valueBytes, 'v');
  const began = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < events) {
      const ops = [];
      for (let i = 0; i < TXN && next < events; i++, next++) {
        const k = next % keys;
        ops.push({ request_put: { key: Buffer.from(`/registry/pods/ns-${k % 100}/pod-${k}`), value } });
      }
      await client.kv.txn({ compare: [], success: ops, failure: [] });
    }
  }));
  const end = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
  const writeSeconds = (performance.now() - began) / 1000;
  for (;;) {
    const ids = await segmentIds(store, 'bench');
    if (ids.length > 0 && BigInt((await readTrustedSegment(store, 'bench', signing.trust, ids.at(-1)!)).manifest.lastRevision) >= BigInt(end)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  abort.abort();
  await running;
  watcher.close();
  const segments = (await segmentIds(store, 'bench')).length;

  const load = loadavg()[0]!;
  const { stdout } = await cli(['changes', 'replay', '--to-revision', end, '--compare-live', '--scratch-dir', work, '-o', 'json']);
  const report = JSON.parse(stdout) as ReplayReport;
  const s = report.stats;
  const rate = s.events / s.seconds;
  process.stdout.write(
    `${events} events over ${keys} keys of ${valueBytes} B written in ${writeSeconds.toFixed(1)} s, captured in ${segments} segments\n` +
      `replay: ${s.events} events, ${s.revisions} revisions, as ${s.operations} operations (each key's last in its window) in ${s.transactions} transactions, in ${s.seconds.toFixed(2)} s ` +
      `(${s.etcdSeconds.toFixed(2)} s of it with a transaction in flight, while the segments are read, decrypted and gathered) = ${Math.round(rate)} events/s ` +
      `(${(rate / 50_000).toFixed(2)} x the 50,000 target; ${(rate / 6_000).toFixed(1)} x etcd-backup-restore's about 6,000/s)\n` +
      `whole replay command: drill ${report.drill.durationSeconds.toFixed(1)} s (its replay step ${(report.drill.timings.replay ?? 0).toFixed(1)} s, with reading and decrypting the segments); ` +
      `compared ${report.comparison!.keys} keys with the live etcd: ${report.comparison!.difference ? `DIFFERENT at ${report.comparison!.difference.key}` : 'equal'}\n` +
      `load average ${load.toFixed(2)} when the replay started, on ${cpus().length} cores\n`,
  );
} finally {
  client.close();
  await etcd.stop();
  await rm(work, { recursive: true, force: true });
}
