/**
 * Measures the change log's memory under a write burst: a 1-member etcd 3.6 on loopback, the
 * capture of src/changes/ into a temp directory store, and writers putting values as fast as
 * etcd takes them. Prints the peak RSS, and heap + external (where the segment buffer lives),
 * sampled every 50 ms, for each changes.maxSegmentBytes given.
 *
 *   node --max-semi-space-size=1 scripts/bench-changes.ts [puts=20000] [valueBytes=2048] [maxSegmentMiB=8,1]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ChangeCapture } from '../src/changes/capture.ts';
import { segmentIds } from '../src/changes/manifest.ts';
import { etcdWatcher } from '../src/changes/watch.ts';
import { createEncryptStream, generateIdentity } from '../src/crypto/age.ts';
import { createLogger } from '../src/log/logger.ts';
import { loadSigning } from '../src/signing/trust.ts';
import { FsStore } from '../src/store/fs-store.ts';
import { startEtcdHost } from './rig/etcd.ts';
import { readPrivateKey } from '../src/signing/keys.ts';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const [puts = 20000, valueBytes = 2048] = process.argv.slice(2, 4).map(Number);
const limits = (process.argv[4] ?? '8,1').split(',').map((m) => Number(m) * 1024 * 1024);
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-bench-changes-'));
const { etcd } = await startEtcdHost(work, { members: 1, hosts: ['m1'] });
const log = createLogger('silent');
const key = await generateIdentity();
const keyFile = path.join(work, 'signing.key');
writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
readPrivateKey(keyFile, 'bench');
const signing = loadSigning({ keyFile, publicKeyFiles: [], allowUnsigned: false });
const client = etcd.client();
try {
  for (const [round, maxSegmentBytes] of limits.entries()) {
    const store = new FsStore(path.join(work, `store-${round}`));
    const start = (await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision;
    const watcher = etcdWatcher({ endpoints: etcd.endpoints, tls: { ...etcd.tls, serverName: 'localhost' }, discoverMembers: false, dialTimeoutMs: 5000 }, log);
    const capture = new ChangeCapture(
      { store, trust: signing.trust, signer: signing.signer, encrypt: createEncryptStream, openWatch: watcher.open, newestBackupRevision: async () => start, now: () => new Date(), log },
      { cluster: 'bench', node: 'bench', recipients: [key.recipient], level: 3, segmentSeconds: 5, maxSegmentBytes },
    );
    const abort = new AbortController();
    const running = capture.run(abort.signal);
    globalThis.gc?.();
    const base = process.memoryUsage();
    let peakRss = base.rss;
    let peakHeap = base.heapUsed + base.external;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakHeap = Math.max(peakHeap, m.heapUsed + m.external);
    }, 50);
    const value = Buffer.alloc(valueBytes, 'v');
    const began = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < puts) await client.put(`/bench/${round}/${next++}`).value(value);
    }));
    const end = BigInt((await client.kv.range({ key: Buffer.from('/'), limit: 1 })).header.revision);
    const writeSeconds = (performance.now() - began) / 1000;
    for (;;) {
      const ids = await segmentIds(store, 'bench');
      if (ids.length > 0 && BigInt(ids.at(-1)!.split('-')[1]!) >= end) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    abort.abort();
    await running;
    watcher.close();
    clearInterval(sampler);
    const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
    const segments = (await segmentIds(store, 'bench')).length;
    process.stdout.write(`maxSegmentBytes ${mib(maxSegmentBytes)} MiB: ${puts} puts of ${valueBytes} B (${mib(puts * valueBytes)} MiB) in ${writeSeconds.toFixed(1)} s, ${segments} segments; RSS ${mib(base.rss)} -> peak ${mib(peakRss)} MiB; heap+external ${mib(base.heapUsed + base.external)} -> peak ${mib(peakHeap)} MiB\n`);
  }
} finally {
  client.close();
  await etcd.stop();
  await rm(work, { recursive: true, force: true });
}
