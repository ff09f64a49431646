/**
 * The change log under a steady load: the RPO it keeps, its CPU and its memory.
 *
 *   node --max-semi-space-size=1 scripts/bench-capture.ts [writesPerSecond=1000] [seconds=300] [segmentSeconds=5]
 *
 * A 1-member etcd 3.6 on loopback (scripts/rig/etcd.ts); a writer in its own process
 * (scripts/bench/steady-writer.ts) puts Kubernetes-shaped Pods (about 2 KiB of JSON) at the given
 * rate and reports, every second, the wall time and the revision its last put got; this process
 * runs the capture of src/changes/ (zstd 3, age, signed and chained segments) into a directory
 * store, as the leader's daemon does. All measured in one run:
 *
 * - RPO: for each of the writer's reports, the time from the put being acknowledged to the
 *   commit of the segment that holds its revision (the segment manifest's createdAt): what a
 *   crash of the whole cluster at that moment would have lost from the log. p50, p99, max
 *   against the target of p99 <= 10 s.
 * - Lifeboat's CPU: this process's user + system CPU over the run, as a share of one core (the
 *   writer and etcd are other processes); peak RSS sampled every 100 ms.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ChangeCapture } from '../src/changes/capture.ts';
import { readTrustedSegment, segmentIds, type SegmentManifest } from '../src/changes/manifest.ts';
import { etcdWatcher } from '../src/changes/watch.ts';
import { createEncryptStream, generateIdentity } from '../src/crypto/age.ts';
import { createLogger } from '../src/log/logger.ts';
import { loadSigning } from '../src/signing/trust.ts';
import { FsStore } from '../src/store/fs-store.ts';
import { startEtcdHost } from './rig/etcd.ts';

const [rate = 1000, seconds = 300, segmentSeconds = 5] = process.argv.slice(2, 5).map(Number);
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-bench-capture-'));
const { etcd } = await startEtcdHost(work, { members: 1, hosts: ['m1'] });
const log = createLogger('silent');
const client = etcd.client();
try {
  const key = await generateIdentity();
  const keyFile = path.join(work, 'signing.key');
  writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const signing = loadSigning({ keyFile, publicKeyFiles: [], allowUnsigned: false });
  const store = new FsStore(path.join(work, 'store'));
  const start = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
  const watcher = etcdWatcher({ endpoints: etcd.endpoints, tls: { ...etcd.tls, serverName: 'localhost' }, discoverMembers: false, dialTimeoutMs: 5000 }, log);
  const capture = new ChangeCapture(
    { store, trust: signing.trust, signer: signing.signer, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => start, now: () => new Date(), log },
    { cluster: 'bench', node: 'bench', recipients: [key.recipient], level: 3, segmentSeconds, maxSegmentBytes: 8 << 20 },
  );
  const abort = new AbortController();
  const running = capture.run(abort.signal);

  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const writer = spawn(process.execPath, [path.join(import.meta.dirname, 'bench/steady-writer.ts'), JSON.stringify({ endpoints: etcd.endpoints, tls: etcd.tls, rate, seconds })], { stdio: ['ignore', 'pipe', 'inherit'] });
  const reports: { at: number; revision: bigint }[] = [];
  for await (const line of createInterface({ input: writer.stdout! })) {
    const [at, revision] = line.split(' ');
    reports.push({ at: Number(at), revision: BigInt(revision!) });
  }
  const wall = (performance.now() - t0) / 1000;
  const last = reports.at(-1)!.revision;
  for (;;) {
    const ids = await segmentIds(store, 'bench');
    if (ids.length > 0 && BigInt((await readTrustedSegment(store, 'bench', signing.trust, ids.at(-1)!)).manifest.lastRevision) >= last) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  abort.abort();
  await running;
  watcher.close();

  const segments: SegmentManifest[] = [];
  for (const id of await segmentIds(store, 'bench')) segments.push((await readTrustedSegment(store, 'bench', signing.trust, id)).manifest);
  const rpo = reports.map((r) => {
    const seg = segments.find((s) => BigInt(s.lastRevision) >= r.revision)!;
    return (Date.parse(seg.createdAt) - r.at) / 1000;
  }).sort((a, b) => a - b);
  const pct = (p: number) => rpo[Math.min(rpo.length - 1, Math.floor((p / 100) * rpo.length))]!;
  const events = segments.reduce((n, s) => n + s.events, 0);
  const bytes = segments.reduce((n, s) => n + s.data.size, 0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(
    `${events} puts in ${wall.toFixed(0)} s (${(events / wall).toFixed(0)}/s asked ${rate}/s), ${segments.length} segments of ${segmentSeconds} s, ${(bytes / 1048576).toFixed(1)} MiB stored\n` +
      `RPO over ${rpo.length} samples: p50 ${pct(50).toFixed(2)} s, p99 ${pct(99).toFixed(2)} s, max ${rpo.at(-1)!.toFixed(2)} s (target p99 <= 10 s: ${(pct(99) / 10).toFixed(2)} of it)\n` +
      `Lifeboat's capture: ${cpuSeconds.toFixed(1)} CPU-s over ${wall.toFixed(0)} s = ${((100 * cpuSeconds) / wall).toFixed(1)} % of one core; peak RSS ${(peakRss / 1048576).toFixed(0)} MiB\n`,
  );
} finally {
  client.close();
  await etcd.stop();
  await rm(work, { recursive: true, force: true });
}
