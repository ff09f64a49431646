/**
 * Backup throughput and memory, against `etcdctl snapshot save` in the same run.
 *
 *   npm run bench -- [--size-mib 1100] [--rounds 3] [--compression zstd:1] [--dir DIR]
 *
 * Starts a single-member TLS etcd 3.5, fills it with Kubernetes-shaped keys until the database
 * is at least --size-mib, then alternates `etcdctl snapshot save FILE` and `lifeboat backup`
 * (local directory store on the same disk) and prints both throughputs (database MiB per
 * wall-clock second, median round of each), their ratio, and Lifeboat's peak RSS.
 * Targets: ratio >= 0.8, peak RSS <= 160 MiB. Needs scripts/install-deps.sh first.
 */
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { generateIdentity } from '../src/crypto/age.ts';
import { startFilledEtcd } from './bench/etcd.ts';
import { lifeboatBackup } from './bench/lifeboat.ts';
import { median, MiB, timed } from './bench/measure.ts';
import { Teardown } from './bench/teardown.ts';

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1100' },
    rounds: { type: 'string', default: '3' },
    compression: { type: 'string', default: 'zstd:1' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('usage: node scripts/bench-backup.ts [--size-mib 1100] [--rounds 3] [--compression zstd:1|gzip:1|none:0] [--dir /var/tmp/lifeboat-bench]');
  process.exit(0);
}
const targetBytes = Number(args['size-mib']) * MiB;
const rounds = Number(args.rounds);
const [algorithm, level] = (args.compression ?? 'zstd:1').split(':');
const dir = path.resolve(args.dir!);

const teardown = new Teardown();
teardown.onSignals();
try {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  teardown.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const { etcd, hostRoot, dbSize, etcdctlFlags } = await startFilledEtcd(dir, targetBytes, teardown);

  const { recipient } = await generateIdentity();
  const config = path.join(dir, 'lifeboat.yaml');
  await writeFile(config, stringify({
    cluster: 'bench',
    etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
    kit: { hostRoot },
    store: { fs: { dir: path.join(dir, 'store') } },
    compression: { algorithm, ...(algorithm === 'none' ? {} : { level: Number(level) }) },
    encryption: { recipients: [recipient] },
    log: { level: 'warn' },
  }));
  const measure = { teardown, scratch: dir };
  const times = { etcdctl: [] as number[], lifeboat: [] as number[] };
  const best = { rss: 0, stored: 0 };
  for (let r = 1; r <= rounds; r++) {
    const file = path.join(dir, 'etcdctl-snapshot.db');
    const a = await timed(etcd.bins.etcdctl, [...etcdctlFlags, 'snapshot', 'save', file], { ...measure, env: { ETCDCTL_API: '3' } });
    await rm(file, { force: true });
    await rm(path.join(dir, 'store'), { recursive: true, force: true });
    const b = await lifeboatBackup(config, measure);
    times.etcdctl.push(a.seconds);
    times.lifeboat.push(b.seconds);
    best.rss = Math.max(best.rss, b.peakRssMiB);
    const files = await readdir(path.join(dir, 'store'), { recursive: true });
    const archive = files.find((f) => f.endsWith('.age'));
    best.stored = archive ? (await stat(path.join(dir, 'store', archive))).size : 0;
    console.error(`round ${r}: etcdctl ${a.seconds.toFixed(2)} s, lifeboat ${b.seconds.toFixed(2)} s, lifeboat peak RSS ${b.peakRssMiB.toFixed(0)} MiB`);
  }
  const dbMiB = dbSize / MiB;
  const etcdctlRate = dbMiB / median(times.etcdctl);
  const lifeboatRate = dbMiB / median(times.lifeboat);
  const ratio = lifeboatRate / etcdctlRate;
  console.log(`database:                 ${dbMiB.toFixed(0)} MiB (${args.compression}, stored ${(best.stored / MiB).toFixed(0)} MiB)`);
  console.log(`etcdctl snapshot save:    ${etcdctlRate.toFixed(1)} MiB/s`);
  console.log(`lifeboat backup:          ${lifeboatRate.toFixed(1)} MiB/s (snapshot, tar, ${algorithm}, age, fsync'd store, end to end)`);
  console.log(`ratio lifeboat/etcdctl:   ${ratio.toFixed(2)}  (target >= 0.80: ${ratio >= 0.8 ? 'met' : 'NOT met'})`);
  console.log(`lifeboat peak RSS:        ${best.rss.toFixed(0)} MiB  (target <= 160: ${best.rss <= 160 ? 'met' : 'NOT met'})`);
} finally {
  await teardown.run();
}
