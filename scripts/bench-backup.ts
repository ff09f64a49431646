/**
 * Backup throughput and memory, against `etcdctl snapshot save` in the same run.
 *
 *   npm run bench -- [--size-mib 1100] [--rounds 3] [--compression zstd:1] [--dir DIR]
 *                    [--from dist|src] [--cli FILE]
 *
 * Starts a single-member TLS etcd 3.6, fills it with Kubernetes-shaped keys until the database
 * is at least --size-mib, then alternates `etcdctl snapshot save FILE` and `lifeboat backup`
 * (local directory store on the same disk), each timed from process start to exit, and prints
 * per round and as medians: database MiB per wall-clock second, peak RSS and CPU of each, the
 * CPU etcd spent meanwhile, Lifeboat's CPU by thread, their ratio and Lifeboat's peak RSS.
 * By default Lifeboat is built first (tsc into DIR) and run as the installed `lifeboat` bin runs
 * it (dist/cli/main.js under node --max-semi-space-size=1); --from src runs src/ instead.
 * Targets: ratio >= 0.8, peak RSS <= 160 MiB. Needs scripts/install-deps.sh first.
 */
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { generateIdentity } from '../src/crypto/age.ts';
import { startFilledEtcd } from './bench/etcd.ts';
import { chooseLifeboat, lifeboatBackup } from './bench/lifeboat.ts';
import { cpuDuring, median, MiB, timed, type Measured } from './bench/measure.ts';
import { busiestThreads, printTable } from './bench/report.ts';
import { Teardown } from './bench/teardown.ts';

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1100' },
    rounds: { type: 'string', default: '3' },
    compression: { type: 'string', default: 'zstd:1' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench' },
    from: { type: 'string', default: 'dist' },
    cli: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(`usage: npm run bench -- [options]

  --size-mib N         etcd database size to reach (default 1100)
  --rounds N           rounds of (etcdctl snapshot save, lifeboat backup) (default 3)
  --compression A:L    zstd:1 (default), gzip:1 or none:0
  --dir DIR            working directory, removed before and after (default /var/tmp/lifeboat-bench)
  --from dist|src      run Lifeboat as the installed bin does, built with tsc into DIR (default),
                       or from src/ with Node's type stripping (as npm run lifeboat does)
  --cli FILE           run this Lifeboat entry point instead`);
  process.exit(0);
}
const targetBytes = Number(args['size-mib']) * MiB;
const rounds = Number(args.rounds);
const [algorithm, level] = (args.compression ?? 'zstd:1').split(':');
const dir = path.resolve(args.dir!);

const teardown = new Teardown();
teardown.onSignals();
try {
  await teardown.freshDir(dir);
  const measure = { teardown, scratch: dir };
  const loadBefore = loadavg();
  const entry = await chooseLifeboat(args.from!, args.cli, dir);
  const { etcd, hostRoot, dbSize, etcdctlFlags } = await startFilledEtcd(dir, targetBytes, teardown);
  const pids = { etcd: etcd.members[0]!.pid! };

  const { recipient } = await generateIdentity();
  const config = path.join(dir, 'lifeboat.yaml');
  await writeFile(config, stringify({
    cluster: 'bench',
    etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
    kit: { hostRoot },
    store: { fs: { dir: path.join(dir, 'store') } },
    compression: { algorithm, ...(algorithm === 'none' ? {} : { level: Number(level) }) },
    encryption: { recipients: [recipient] },
    log: { level: 'info' },
  }));
  type Run = Measured & { etcdCpu: number };
  const runs: { etcdctl: Run; lifeboat: Run }[] = [];
  let stored = 0;
  for (let r = 1; r <= rounds; r++) {
    const file = path.join(dir, 'etcdctl-snapshot.db');
    const a = await cpuDuring(pids, () => timed(etcd.bins.etcdctl, [...etcdctlFlags, 'snapshot', 'save', file], measure));
    await rm(file, { force: true });
    await rm(path.join(dir, 'store'), { recursive: true, force: true });
    const b = await cpuDuring(pids, () => lifeboatBackup(config, { ...measure, cli: entry.path }));
    runs.push({ etcdctl: { ...a.result, etcdCpu: a.cpu.etcd ?? 0 }, lifeboat: { ...b.result, etcdCpu: b.cpu.etcd ?? 0 } });
    const files = await readdir(path.join(dir, 'store'), { recursive: true });
    const archive = files.find((f) => f.endsWith('.age'));
    stored = archive ? (await stat(path.join(dir, 'store', archive))).size : 0;
    console.error(`round ${r}: etcdctl ${a.result.seconds.toFixed(2)} s, lifeboat ${b.result.seconds.toFixed(2)} s, lifeboat peak RSS ${b.result.peakRssMiB.toFixed(0)} MiB`);
  }

  const dbMiB = dbSize / MiB;
  const rate = (seconds: number) => dbMiB / seconds;
  const med = (pick: (x: { etcdctl: Run; lifeboat: Run }) => number) => median(runs.map(pick));
  const f1 = (n: number) => n.toFixed(1);
  const f2 = (n: number) => n.toFixed(2);
  const etcdctlRate = rate(med((x) => x.etcdctl.seconds));
  const lifeboatRate = rate(med((x) => x.lifeboat.seconds));
  const ratio = lifeboatRate / etcdctlRate;
  const peakRss = Math.max(...runs.map((x) => x.lifeboat.peakRssMiB));
  console.log(`database:        ${f1(dbMiB)} MiB, single-member TLS etcd ${etcd.bins.version}, Kubernetes-shaped keys`);
  console.log(`etcdctl:         etcdctl snapshot save FILE (TLS, no compression, no encryption)`);
  console.log(`lifeboat:        node --max-semi-space-size=1 ${entry.path} backup, ${entry.what}`);
  console.log(`                 snapshot, tar with the kit, ${args.compression}, age (1 recipient), local directory store with fsync; stored ${f1(stored / MiB)} MiB`);
  console.log(`measured:        wall clock from process start to exit; peak RSS and CPU (user + system) from GNU time; etcd's CPU from /proc`);
  console.log(`load average:    ${loadBefore.map(f2).join(' ')} before, ${loadavg().map(f2).join(' ')} after`);
  console.log('');
  const rows = [['round', 'etcdctl s', 'MiB/s', 'RSS MiB', 'CPU s', 'etcd CPU s', 'lifeboat s', 'MiB/s', 'RSS MiB', 'CPU s', 'etcd CPU s', 'ratio']];
  const row = (name: string, x: { etcdctl: Run; lifeboat: Run }) => [name, f2(x.etcdctl.seconds), f1(rate(x.etcdctl.seconds)), x.etcdctl.peakRssMiB.toFixed(0), f2(x.etcdctl.cpuSeconds), f2(x.etcdctl.etcdCpu), f2(x.lifeboat.seconds), f1(rate(x.lifeboat.seconds)), x.lifeboat.peakRssMiB.toFixed(0), f2(x.lifeboat.cpuSeconds), f2(x.lifeboat.etcdCpu), f2(rate(x.lifeboat.seconds) / rate(x.etcdctl.seconds))];
  runs.forEach((x, i) => rows.push(row(String(i + 1), x)));
  const medianRun = (side: 'etcdctl' | 'lifeboat'): Run => ({
    seconds: med((x) => x[side].seconds),
    peakRssMiB: med((x) => x[side].peakRssMiB),
    cpuSeconds: med((x) => x[side].cpuSeconds),
    etcdCpu: med((x) => x[side].etcdCpu),
    stdout: '',
    stderr: '',
  });
  rows.push(row('median', { etcdctl: medianRun('etcdctl'), lifeboat: medianRun('lifeboat') }));
  printTable(rows);
  const threads = busiestThreads(runs.map((x) => x.lifeboat), { MainThread: 'JavaScript, TLS, sha256, age', 'libuv-worker': 'thread pool: zstd, file writes', V8Worker: 'V8 helpers, mostly GC' });
  if (threads) console.log(`lifeboat threads (CPU s, median): ${threads}`);
  console.log('');
  console.log(`etcdctl snapshot save:    ${f1(etcdctlRate)} MiB/s (median of ${runs.length})`);
  console.log(`lifeboat backup:          ${f1(lifeboatRate)} MiB/s (median of ${runs.length})`);
  console.log(`ratio lifeboat/etcdctl:   ${f2(ratio)}  (target >= 0.80: ${ratio >= 0.8 ? 'met' : 'NOT met'})`);
  console.log(`lifeboat peak RSS:        ${peakRss.toFixed(0)} MiB, highest of ${runs.length} round${runs.length === 1 ? '' : 's'}  (target <= 160: ${peakRss <= 160 ? 'met' : 'NOT met'})`);
} finally {
  await teardown.run();
}
