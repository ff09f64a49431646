/**
 * At etcd's limits: backups of 1, 4 and 8 GiB databases in one run, and a drill of the largest.
 *
 *   node scripts/bench-limits.ts [--sizes-mib 1024,4096,8192] [--dir DIR]
 *
 * For each size: a single-member TLS etcd 3.6 filled with Kubernetes-shaped keys (values 1–100
 * KiB, about 3.3:1 compressible) until its database is at least that size, then one `lifeboat
 * backup` (zstd 1, age, local directory store with fsync) timed from process start to exit with
 * its peak RSS from GNU time. Printed against the first size: the peak RSS (target: flat, within
 * 10 %) and the seconds per GiB (target: linear, the ratio near 1). Then `lifeboat drill latest`
 * of the largest backup: its scratch-space check, etcdutl restore, a throwaway etcd, the key
 * counts; timed, with its peak RSS. Each size's etcd and data are removed before the next. Needs
 * about 4 times the largest size free in DIR, GNU time and scripts/install-deps.sh first.
 */
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { generateIdentity, identityFileText } from '../src/crypto/age.ts';
import { startFilledEtcd } from './bench/etcd.ts';
import { lifeboatBackup, SOURCE_CLI } from './bench/lifeboat.ts';
import { MiB, timed, type Measured } from './bench/measure.ts';
import { printTable } from './bench/report.ts';
import { Teardown } from './bench/teardown.ts';
import { etcdBinaries } from './rig/binaries.ts';

const { values: args } = parseArgs({
  options: {
    'sizes-mib': { type: 'string', default: '1024,4096,8192' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench-limits' },
  },
});
const sizes = args['sizes-mib']!.split(',').map(Number);
const dir = path.resolve(args.dir!);
const teardown = new Teardown();
teardown.onSignals();
const rows: { size: number; dbMiB: number; storedMiB: number; backup: Measured }[] = [];
let drill: Measured | undefined;
try {
  const key = await generateIdentity();
  for (const [i, size] of sizes.entries()) {
    await teardown.freshDir(dir);
    const sizeTeardown = new Teardown();
    try {
      const { etcd, hostRoot, dbSize } = await startFilledEtcd(dir, size * MiB, sizeTeardown);
      const identityFile = path.join(dir, 'identity.txt');
      await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
      const config = path.join(dir, 'lifeboat.yaml');
      const bins = etcdBinaries('3.6');
      await writeFile(config, stringify({
        cluster: 'bench',
        etcd: { endpoints: etcd.endpoints, tls: etcd.tls },
        kit: { hostRoot },
        store: { fs: { dir: path.join(dir, 'store') } },
        compression: { algorithm: 'zstd', level: 1 },
        encryption: { recipients: [key.recipient], identityFile },
        signing: { allowUnsigned: true },
        tools: { etcdutl: bins.etcdutl, etcd: bins.etcd },
        drill: { scratchDir: dir, startTimeoutSeconds: 300 },
        log: { level: 'info' },
      }));
      const measure = { teardown: sizeTeardown, scratch: dir };
      const backup = await lifeboatBackup(config, measure); // rejects with its output if it fails
      const files = await readdir(path.join(dir, 'store'), { recursive: true });
      const archive = files.find((f) => f.endsWith('.age'));
      const storedMiB = archive ? (await stat(path.join(dir, 'store', archive))).size / MiB : 0;
      rows.push({ size, dbMiB: dbSize / MiB, storedMiB, backup });
      console.error(`${size} MiB: backup ${backup.seconds.toFixed(1)} s, peak RSS ${backup.peakRssMiB.toFixed(0)} MiB`);
      if (i === sizes.length - 1) {
        // The drill restores into the scratch dir: etcd and its data go first, as on a restore host.
        await sizeTeardown.run();
        await rm(path.join(dir, 'host'), { recursive: true, force: true });
        drill = await timed(process.execPath, ['--max-semi-space-size=1', SOURCE_CLI, '--config', config, 'drill', 'latest'], measure);
        console.error(`drill: ${drill.stdout.trim()}`);
      }
    } finally {
      await sizeTeardown.run();
    }
  }
  const base = rows[0]!;
  const perGiB = (r: (typeof rows)[number]) => r.backup.seconds / (r.dbMiB / 1024);
  const table = [['database MiB', 'stored MiB', 'backup s', 'MiB/s', 's per GiB', 'vs first', 'peak RSS MiB', 'vs first']];
  for (const r of rows) {
    table.push([r.dbMiB.toFixed(0), r.storedMiB.toFixed(0), r.backup.seconds.toFixed(1), (r.dbMiB / r.backup.seconds).toFixed(1), perGiB(r).toFixed(1), (perGiB(r) / perGiB(base)).toFixed(2), r.backup.peakRssMiB.toFixed(0), (r.backup.peakRssMiB / base.backup.peakRssMiB).toFixed(2)]);
  }
  printTable(table);
  const rssSpread = Math.max(...rows.map((r) => r.backup.peakRssMiB)) / Math.min(...rows.map((r) => r.backup.peakRssMiB)) - 1;
  console.log(`peak RSS spread: ${(100 * rssSpread).toFixed(1)} % (target: within 10 %)`);
  if (drill) console.log(`drill of the ${rows.at(-1)!.dbMiB.toFixed(0)} MiB backup: ${drill.seconds.toFixed(1)} s, peak RSS ${drill.peakRssMiB.toFixed(0)} MiB: ${drill.stdout.trim()}`);
} finally {
  await teardown.run();
}
