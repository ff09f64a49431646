/**
 * Backup to S3 (a real Ceph RGW): Lifeboat against the shell pipeline a user would write, in
 * the same run.
 *
 *   npm run bench:s3 -- [--size-mib 1100] [--rounds 3] [--dir DIR] [--zstd-args "-1"]
 *                       [--part-size-mib N] [--queue-size N] [--from dist|src] [--cli FILE]
 *
 * Starts a single-node Ceph RGW (memstore, sized for what one round stores; each round's objects
 * are deleted and garbage-collected after it) and a single-member TLS etcd 3.6 filled with
 * Kubernetes-shaped keys to at least --size-mib. Then, for each round:
 *   (a) `lifeboat backup` through the CLI, store.s3 on the RGW, zstd 1, one age recipient; by
 *       default the CLI is built first (tsc into the working directory), and the benchmark runs
 *       dist/cli/main.js as the installed `lifeboat` bin does (--from src runs src/ instead);
 *   (b) the shell pipeline, one command after the other, as a user would type them:
 *         etcdctl --endpoints=... --cacert=... --cert=... --key=... snapshot save FILE
 *         zstd -1 FILE                    (writes FILE.zst; the CLI's default of one worker
 *                                          thread: what `zstd -1 FILE` does; --zstd-args "-1 -T0"
 *                                          uses every core instead)
 *         age -r RECIPIENT -o FILE.zst.age FILE.zst
 *         s3cmd put FILE.zst.age s3://bench/KEY
 *                                         (s3cmd config: host_base/host_bucket 127.0.0.1:PORT,
 *                                          no SSL, signature v4, default 15 MiB multipart chunks)
 * Each is timed from process start to exit, with its peak RSS and CPU time (GNU time), and the
 * CPU that etcd, radosgw and the OSD spent meanwhile (/proc). Prints per round and the median:
 * database MiB per wall-clock second of each, their ratio (target >= 1.5), Lifeboat's peak RSS
 * (target <= 200 MiB), the archive sizes and each shell step's seconds. Everything started is
 * stopped by PID and every file removed, also on failure and Ctrl-C.
 * Needs scripts/install-deps.sh first (etcd 3.6, ceph, age, zstd, s3cmd) and GNU time.
 */
import { execFile } from 'node:child_process';
import { rm, stat, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { stringify } from 'yaml';
import { generateIdentity } from '../src/crypto/age.ts';
import { etcdBinaries } from './rig/binaries.ts';
import { startRgw } from './rig/rgw.ts';
import { startFilledEtcd } from './bench/etcd.ts';
import { chooseLifeboat, lifeboatBackup, type BackupPhases, type LifeboatCli } from './bench/lifeboat.ts';
import { cpuDuring, median, MiB, timed, type Measured } from './bench/measure.ts';
import { busiestThreads, printTable } from './bench/report.ts';
import { Teardown } from './bench/teardown.ts';

const run = promisify(execFile);

const USAGE = `usage: npm run bench:s3 -- [options]

  --size-mib N        etcd database size to reach (default 1100)
  --rounds N          rounds of (lifeboat backup, shell pipeline) (default 3)
  --dir DIR           working directory, removed before and after (default /var/tmp/lifeboat-bench-s3)
  --zstd-args ARGS    the shell pipeline's zstd flags (default "-1"; try "-1 -T0")
  --part-size-mib N   Lifeboat store.s3.partSizeMiB (default: Lifeboat's, 8)
  --queue-size N      Lifeboat store.s3.queueSize (default: Lifeboat's, 4)
  --from dist|src     run Lifeboat as the installed bin does, built with tsc into DIR (default),
                      or from src/ with Node's type stripping (as npm run lifeboat does)
  --cli FILE          run this Lifeboat entry point instead

Needs bash scripts/install-deps.sh first. Takes a few minutes; with 1.1 GiB it holds about
4 GB of memory at its peak (etcd, the RGW's memstore, the shell pipeline's files).`;

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1100' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench-s3' },
    'zstd-args': { type: 'string', default: '-1' },
    'part-size-mib': { type: 'string' },
    'queue-size': { type: 'string' },
    from: { type: 'string', default: 'dist' },
    cli: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const targetBytes = Number(args['size-mib']) * MiB;
const rounds = Number(args.rounds);
const zstdArgs = args['zstd-args']!.split(/\s+/).filter(Boolean);
const partSizeMiB = args['part-size-mib'] === undefined ? undefined : Number(args['part-size-mib']);
const queueSize = args['queue-size'] === undefined ? undefined : Number(args['queue-size']);
for (const [name, n] of [['--size-mib', targetBytes], ['--rounds', rounds], ['--part-size-mib', partSizeMiB ?? 5], ['--queue-size', queueSize ?? 1]] as const) {
  if (!Number.isInteger(n) || n < 1) {
    console.error(`${name}: expected a positive whole number\n\n${USAGE}`);
    process.exit(2);
  }
}
const dir = path.resolve(args.dir!);
const REPO = path.resolve(import.meta.dirname, '..');
/** A path as short as it is unambiguous: relative inside the checkout, absolute outside. */
const shown = (file: string) => (path.relative(REPO, file).startsWith('..') ? file : path.relative(REPO, file));
const BUCKET = 'bench';

interface Round {
  lifeboat: Measured & { phases: BackupPhases | undefined; cpu: Record<string, number>; stored: number };
  shell: {
    snapshot: Measured & { cpu: Record<string, number> };
    zstd: Measured & { cpu: Record<string, number> };
    age: Measured & { cpu: Record<string, number> };
    upload: Measured & { cpu: Record<string, number> };
    seconds: number;
    sizes: { snapshot: number; zst: number; age: number };
  };
}

const teardown = new Teardown();
teardown.onSignals();
try {
  const loadBefore = loadavg();
  await teardown.freshDir(dir);
  const measure = { teardown, scratch: dir };
  const entry = await chooseLifeboat(args.from!, args.cli, dir);
  const cli = entry.path;

  // Room for one round's two archives (at worst incompressible) plus RGW's own pools.
  const memstoreBytes = 2 * targetBytes + 512 * MiB;
  const rgw = await startRgw({ dir: path.join(dir, 'ceph'), memstoreBytes });
  teardown.add('stop the RGW', () => rgw.stop());
  const port = new URL(rgw.endpoint).port;
  const s3cfg = path.join(dir, 's3cfg');
  await writeFile(
    s3cfg,
    `[default]\naccess_key = ${rgw.accessKeyId}\nsecret_key = ${rgw.secretAccessKey}\nhost_base = 127.0.0.1:${port}\nhost_bucket = 127.0.0.1:${port}\nuse_https = False\nsignature_v2 = False\nbucket_location = ${rgw.region}\n`,
    { mode: 0o600 },
  );
  const s3cmd = (...argv: string[]) => run('s3cmd', ['-c', s3cfg, ...argv], { maxBuffer: 16 << 20 });
  const emptyBucket = async () => {
    await s3cmd('rm', '--recursive', '--force', `s3://${BUCKET}/`);
    // Frees the deleted objects' memstore memory now, not after RGW's gc period.
    await run('radosgw-admin', ['-c', path.join(rgw.dir, 'ceph.conf'), 'gc', 'process', '--include-all'], { timeout: 120_000 });
  };
  await s3cmd('mb', `s3://${BUCKET}`);
  // RGW makes its pools lazily: a small put and a multipart one, so no round pays for that.
  const warm = path.join(dir, 'warm-up');
  await writeFile(warm, Buffer.alloc(20 * MiB, 'lifeboat'));
  await s3cmd('put', warm, `s3://${BUCKET}/warm-up/multipart`);
  await s3cmd('put', path.join(dir, 's3cfg'), `s3://${BUCKET}/warm-up/small`);
  await rm(warm);
  await emptyBucket();

  const { etcd, hostRoot, dbSize, etcdctlFlags } = await startFilledEtcd(dir, targetBytes, teardown);
  const etcdPid = etcd.members[0]!.pid!;
  const pids = { etcd: etcdPid, radosgw: rgw.pids.rgw, osd: rgw.pids.osd, mon: rgw.pids.mon, bench: process.pid };

  const { recipient } = await generateIdentity();
  const config = path.join(dir, 'lifeboat.yaml');
  await writeFile(
    config,
    stringify({
      cluster: 'bench',
      etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
      kit: { hostRoot },
      store: {
        s3: {
          endpoint: rgw.endpoint,
          region: rgw.region,
          bucket: BUCKET,
          prefix: 'lifeboat/',
          accessKeyId: rgw.accessKeyId,
          secretAccessKey: rgw.secretAccessKey,
          ...(partSizeMiB === undefined ? {} : { partSizeMiB }),
          ...(queueSize === undefined ? {} : { queueSize }),
        },
      },
      compression: { algorithm: 'zstd', level: 1 },
      encryption: { recipients: [recipient] },
      log: { level: 'info' },
    }),
    { mode: 0o600 },
  );

  const results: Round[] = [];
  for (let r = 1; r <= rounds; r++) {
    // (a) Lifeboat, end to end.
    const a = await cpuDuring(pids, () => lifeboatBackup(config, { ...measure, cli }));
    const listing = (await s3cmd('ls', '--recursive', `s3://${BUCKET}/lifeboat/`)).stdout;
    const stored = Number(/\s(\d+)\s+s3:\/\/\S+\.age$/m.exec(listing)?.[1] ?? Number.NaN);

    // (b) The shell pipeline, one step after the other.
    const file = path.join(dir, 'snapshot.db');
    const key = `s3://${BUCKET}/shell/round-${r}/snapshot.db.zst.age`;
    const snapshot = await cpuDuring(pids, () => timed(etcd.bins.etcdctl, [...etcdctlFlags, 'snapshot', 'save', file], measure));
    const zstd = await cpuDuring(pids, () => timed('zstd', [...zstdArgs, file], measure));
    const age = await cpuDuring(pids, () => timed('age', ['-r', recipient, '-o', `${file}.zst.age`, `${file}.zst`], measure));
    const upload = await cpuDuring(pids, () => timed('s3cmd', ['-c', s3cfg, 'put', `${file}.zst.age`, key], measure));
    const sizes = { snapshot: (await stat(file)).size, zst: (await stat(`${file}.zst`)).size, age: (await stat(`${file}.zst.age`)).size };
    for (const f of [file, `${file}.zst`, `${file}.zst.age`]) await rm(f, { force: true });
    await emptyBucket();

    const step = <T extends Measured>(x: { result: T; cpu: Record<string, number> }) => ({ ...x.result, cpu: x.cpu });
    const round: Round = {
      lifeboat: { ...a.result, cpu: a.cpu, stored },
      shell: {
        snapshot: step(snapshot),
        zstd: step(zstd),
        age: step(age),
        upload: step(upload),
        seconds: snapshot.result.seconds + zstd.result.seconds + age.result.seconds + upload.result.seconds,
        sizes,
      },
    };
    results.push(round);
    console.error(`round ${r}: lifeboat ${round.lifeboat.seconds.toFixed(2)} s (peak RSS ${round.lifeboat.peakRssMiB.toFixed(0)} MiB), shell ${round.shell.seconds.toFixed(2)} s`);
  }
  report(results, dbSize, loadBefore, entry);
} finally {
  await teardown.run();
}

function report(results: Round[], dbSize: number, loadBefore: number[], entry: LifeboatCli): void {
  const dbMiB = dbSize / MiB;
  const rate = (seconds: number) => dbMiB / seconds;
  const f1 = (n: number) => n.toFixed(1);
  const f2 = (n: number) => n.toFixed(2);
  const mib = (bytes: number) => (bytes / MiB).toFixed(0);
  const med = (pick: (r: Round) => number) => median(results.map(pick));

  const lifeboat = med((r) => r.lifeboat.seconds);
  const shell = med((r) => r.shell.seconds);
  const ratio = rate(lifeboat) / rate(shell);
  const peakRss = Math.max(...results.map((r) => r.lifeboat.peakRssMiB));
  const s3 = { partSizeMiB: partSizeMiB ?? 8, queueSize: queueSize ?? 4 };

  console.log(`database:        ${f1(dbMiB)} MiB, single-member TLS etcd ${etcdBinaries().version}, Kubernetes-shaped keys`);
  console.log(`store:           Ceph RGW 16.2 (single node, memstore OSD) on 127.0.0.1, plain HTTP`);
  console.log(`lifeboat:        node --max-semi-space-size=1 ${shown(entry.path)} backup (process start included): zstd 1, 1 age recipient, store.s3 partSizeMiB ${s3.partSizeMiB}, queueSize ${s3.queueSize}`);
  console.log(`                 ${entry.what}`);
  console.log(`shell pipeline:  etcdctl snapshot save FILE; zstd ${zstdArgs.join(' ')} FILE; age -r RECIPIENT -o FILE.zst.age FILE.zst; s3cmd put FILE.zst.age s3://${BUCKET}/KEY`);
  console.log(`load average:    ${loadBefore.map(f2).join(' ')} before, ${loadavg().map(f2).join(' ')} after`);
  console.log('');
  const rows = [['round', 'lifeboat s', 'MiB/s', 'peak RSS MiB', 'stored MiB', 'shell s', 'MiB/s', 'snapshot s', 'zstd s', 'age s', 'upload s', '.zst.age MiB', 'ratio']];
  results.forEach((r, i) => {
    rows.push([
      String(i + 1),
      f2(r.lifeboat.seconds),
      f1(rate(r.lifeboat.seconds)),
      r.lifeboat.peakRssMiB.toFixed(0),
      mib(r.lifeboat.stored),
      f2(r.shell.seconds),
      f1(rate(r.shell.seconds)),
      f2(r.shell.snapshot.seconds),
      f2(r.shell.zstd.seconds),
      f2(r.shell.age.seconds),
      f2(r.shell.upload.seconds),
      mib(r.shell.sizes.age),
      f2(rate(r.lifeboat.seconds) / rate(r.shell.seconds)),
    ]);
  });
  rows.push([
    'median',
    f2(lifeboat),
    f1(rate(lifeboat)),
    med((r) => r.lifeboat.peakRssMiB).toFixed(0),
    mib(med((r) => r.lifeboat.stored)),
    f2(shell),
    f1(rate(shell)),
    f2(med((r) => r.shell.snapshot.seconds)),
    f2(med((r) => r.shell.zstd.seconds)),
    f2(med((r) => r.shell.age.seconds)),
    f2(med((r) => r.shell.upload.seconds)),
    mib(med((r) => r.shell.sizes.age)),
    f2(ratio),
  ]);
  printTable(rows);

  console.log('');
  console.log('where the time goes (medians; CPU seconds used while each step ran: by the command itself, etcd, radosgw, the OSD, and anything else on the machine)');
  type Step = Measured & { cpu: Record<string, number> };
  // Machine CPU not spent by the command, etcd, Ceph or this script: the kernel and other users of the machine.
  const others = (x: Step) => Math.max(0, x.cpu.machine! - x.cpuSeconds - x.cpu.etcd! - x.cpu.radosgw! - x.cpu.osd! - x.cpu.mon! - x.cpu.bench!);
  const stepRow = (name: string, pick: (r: Round) => Step) => [
    name,
    f2(med((r) => pick(r).seconds)),
    f1(dbMiB / med((r) => pick(r).seconds)),
    med((r) => pick(r).peakRssMiB).toFixed(0),
    f2(med((r) => pick(r).cpuSeconds)),
    f2(med((r) => pick(r).cpu.etcd!)),
    f2(med((r) => pick(r).cpu.radosgw!)),
    f2(med((r) => pick(r).cpu.osd!)),
    f2(med((r) => others(pick(r)))),
  ];
  printTable([
    ['step', 'wall s', 'db MiB/s', 'peak RSS MiB', 'own CPU s', 'etcd CPU s', 'radosgw CPU s', 'OSD CPU s', 'other CPU s'],
    stepRow('lifeboat backup', (r) => r.lifeboat),
    stepRow(`etcdctl snapshot save`, (r) => r.shell.snapshot),
    stepRow(`zstd ${zstdArgs.join(' ')}`, (r) => r.shell.zstd),
    stepRow('age -r', (r) => r.shell.age),
    stepRow('s3cmd put', (r) => r.shell.upload),
  ]);
  const phases = results.map((r) => r.lifeboat.phases).filter((p): p is BackupPhases => p !== undefined);
  if (phases.length === results.length) {
    const p = (pick: (x: BackupPhases) => number) => f2(median(phases.map(pick)));
    console.log(`lifeboat phases: start-up and exit ${p((x) => x.startSeconds)} s, member and kit ${p((x) => x.setupSeconds)} s, stream to RGW ${p((x) => x.streamSeconds)} s, check and commit ${p((x) => x.commitSeconds)} s`);
  }
  const threads = busiestThreads(results.map((r) => r.lifeboat), { MainThread: 'JavaScript', 'libuv-worker': 'thread pool, mostly zstd', V8Worker: 'V8 helpers, mostly GC' });
  if (threads) console.log(`lifeboat threads (CPU s): ${threads}`);
  const sizes = results.at(-1)!.shell.sizes;
  console.log(`archives:        lifeboat ${mib(med((r) => r.lifeboat.stored))} MiB (tar.zst.age with the kit); shell ${mib(sizes.snapshot)} MiB snapshot, ${mib(sizes.zst)} MiB .zst, ${mib(sizes.age)} MiB .zst.age`);
  console.log('');
  console.log(`lifeboat backup:       ${f1(rate(lifeboat))} MiB/s (median of ${results.length})`);
  console.log(`shell pipeline:        ${f1(rate(shell))} MiB/s (median of ${results.length})`);
  console.log(`ratio lifeboat/shell:  ${f2(ratio)}  (target >= 1.5: ${ratio >= 1.5 ? 'met' : 'NOT met'})`);
  console.log(`lifeboat peak RSS:     ${peakRss.toFixed(0)} MiB, highest of ${results.length} round${results.length === 1 ? '' : 's'}  (target <= 200: ${peakRss <= 200 ? 'met' : 'NOT met'})`);
}
