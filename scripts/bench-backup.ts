/**
 * Backup throughput and memory, against `etcdctl snapshot save` in the same run.
 *
 *   npm run bench -- [--size-mib 1100] [--rounds 3] [--compression zstd:1] [--dir DIR]
 *
 * Starts a single-member TLS etcd 3.5, fills it with Kubernetes-shaped keys until the database
 * is at least --size-mib, then alternates `etcdctl snapshot save FILE` and `lifeboat backup`
 * (local directory store on the same disk) and prints both throughputs (database MiB per
 * wall-clock second, median round of each), their ratio, and Lifeboat's peak RSS (VmHWM).
 * Targets: ratio >= 0.8, peak RSS <= 160 MiB. Needs scripts/install-deps.sh first.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { generateIdentity } from '../src/crypto/age.ts';
import { makeKubeadmTree } from './rig/pki.ts';
import { startEtcd } from './rig/etcd.ts';
import { populate } from './rig/populate.ts';

const MiB = 1024 * 1024;
const REPO = path.resolve(import.meta.dirname, '..');
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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

interface Run {
  seconds: number;
  peakRssMiB?: number;
}

/** Runs a command, timing it and (when asked) polling its peak RSS from /proc. */
function timed(command: string, argv: string[], env: NodeJS.ProcessEnv, trackRss: boolean): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    let peakKiB = 0;
    const poll = trackRss
      ? setInterval(() => {
          readFile(`/proc/${child.pid}/status`, 'utf8')
            .then((s) => {
              const hwm = /VmHWM:\s+(\d+) kB/.exec(s);
              if (hwm) peakKiB = Math.max(peakKiB, Number(hwm[1]));
            })
            .catch(() => undefined);
        }, 20)
      : undefined;
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(poll);
      const seconds = (performance.now() - started) / 1000;
      if (code !== 0) return reject(new Error(`${command} exited ${code}: ${stderr}`));
      resolve(trackRss ? { seconds, peakRssMiB: peakKiB / 1024 } : { seconds });
    });
  });
}

await rm(dir, { recursive: true, force: true });
await mkdir(dir, { recursive: true });
const hostRoot = path.join(dir, 'host');
const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'));
const etcd = await startEtcd({ tree, members: 1, dataRoot: path.join(dir, 'etcd'), extraArgs: ['--quota-backend-bytes=8589934592'] });
try {
  const client = etcd.client();
  let dbSize = 0;
  const t0 = performance.now();
  for (let batch = 0; dbSize < targetBytes; batch++) {
    const keys = Math.max(1000, Math.ceil((targetBytes - dbSize) / (51 * 1024)));
    await populate(client, { keys, valueBytes: [1024, 100 * 1024], seed: 1000 + batch, prefix: `/registry/b${batch}`, concurrency: 64 });
    dbSize = Number((await client.maintenance.status()).dbSize);
    console.error(`populated: database ${(dbSize / MiB).toFixed(0)} MiB after ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  client.close();

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
  const etcdctlArgs = [`--endpoints=${etcd.endpoints[0]}`, `--cacert=${etcd.tls.caFile}`, `--cert=${etcd.tls.certFile}`, `--key=${etcd.tls.keyFile}`];
  const times = { etcdctl: [] as number[], lifeboat: [] as number[] };
  const best = { rss: 0, stored: 0 };
  for (let r = 1; r <= rounds; r++) {
    const file = path.join(dir, 'etcdctl-snapshot.db');
    const a = await timed(etcd.bins.etcdctl, [...etcdctlArgs, 'snapshot', 'save', file], { ETCDCTL_API: '3' }, false);
    await rm(file, { force: true });
    await rm(path.join(dir, 'store'), { recursive: true, force: true });
    const b = await timed(process.execPath, ['--max-semi-space-size=1', path.join(REPO, 'src/cli/main.ts'), '--config', config, 'backup'], {}, true);
    times.etcdctl.push(a.seconds);
    times.lifeboat.push(b.seconds);
    best.rss = Math.max(best.rss, b.peakRssMiB ?? 0);
    const files = await readdir(path.join(dir, 'store'), { recursive: true });
    const archive = files.find((f) => f.endsWith('.age'));
    best.stored = archive ? (await stat(path.join(dir, 'store', archive))).size : 0;
    console.error(`round ${r}: etcdctl ${a.seconds.toFixed(2)} s, lifeboat ${b.seconds.toFixed(2)} s, lifeboat peak RSS ${b.peakRssMiB?.toFixed(0)} MiB`);
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
  await etcd.stop();
  await rm(dir, { recursive: true, force: true });
}
