/**
 * Recovery time: how long `lifeboat restore apply --all` takes to bring a 3-host kubeadm
 * control plane back from a backup, its database filled to about --mib.
 *
 *   npm run bench:restore -- [--mib 256] [--net 32] [--dir DIR]
 *
 * Starts the lab (scripts/lab/: three hosts in their own namespaces, real `kubeadm init` and
 * `kubeadm join --control-plane`, Kubernetes and etcd 3.6 built from source), fills it through
 * kubectl (namespaces of objects, then bulk ConfigMaps of about 900 KiB up to --mib), starts one
 * `lifeboat serve` on each host (its API on the host's address with the host's kube-apiserver
 * certificate, a shared directory store, an age identity configured), takes one backup through
 * the API (zstd 1, age), then runs the real CLI:
 *
 *   lifeboat restore apply --all --backup <id> --mode in-place --daemon cp-1=... (x3)
 *
 * and, from the moment it starts, asks every member for its Status every 100 ms. The RTO is the
 * time from the start of that command until all three members answer with the same leader at a
 * revision at or above the plan's target (the backup's plus the bump): a healthy etcd on the
 * restored data. Also printed: each phase's time (its slowest node), the time until the command
 * ended (the real apiservers ready, report), the CLI's peak RSS, and the load average; then
 * kubectl counts the bulk ConfigMaps back. Everything started is stopped by PID and the lab and
 * directory removed, also on failure and Ctrl-C. Needs root, scripts/install-deps.sh first and
 * GNU time.
 */
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { ApiClient } from '../src/api/client.ts';
import { generateToken, tokenLine } from '../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../src/crypto/age.ts';
import type { Job } from '../src/jobs/job.ts';
import type { ApplyAllReport } from '../src/restore/orchestrate.ts';
import type { DaemonProcess } from '../test/support/daemon.ts';
import { daemonOn, writeSecret } from '../test/support/lab.ts';
import { etcdTlsOf } from '../test/support/restore-nodes.ts';
import { SOURCE_CLI } from './bench/lifeboat.ts';
import { MiB, timed } from './bench/measure.ts';
import { Teardown } from './bench/teardown.ts';
import { startKubeCluster, type KubeCluster } from './lab/cluster.ts';
import { fillCluster } from './lab/fill.ts';
import { etcdBinaries } from './rig/binaries.ts';
import { memberStatus } from './rig/etcd.ts';

const USAGE = `usage: npm run bench:restore -- [options]

  --mib N    bulk data to put in through kubectl, in MiB (default 256; at 1024 three hosts outgrow a 24 GiB machine, see README)
  --net N    the lab's network number, 10.249.N.0/24 (default 32; one lab per number at a time)
  --dir DIR  working directory, removed before and after (default /var/tmp/lifeboat-bench-restore)

Needs root and bash scripts/install-deps.sh first. Takes a few minutes (filling through kubectl
is most of it) and about 10 times --mib of disk.`;

const { values: args } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    net: { type: 'string', default: '32' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench-restore' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const mib = Number(args.mib);
const net = Number(args.net);
if (!Number.isInteger(mib) || mib < 0) {
  console.error(`--mib: expected a whole number of MiB, 0 or more\n\n${USAGE}`);
  process.exit(2);
}
if (!Number.isInteger(net) || net < 1 || net > 250) {
  console.error(`--net: expected a whole number 1..250\n\n${USAGE}`);
  process.exit(2);
}
const dir = path.resolve(args.dir!);
const NAMES = ['cp-1', 'cp-2', 'cp-3'];
const seconds = (ms: number) => (ms / 1000).toFixed(1);

/** Until every member answers Status with one leader at a revision at or above `revision`; ms since `since`, or undefined once `stop` is set. */
async function healthyAfter(cluster: KubeCluster, revision: () => bigint | undefined, since: number, stop: { done: boolean }): Promise<number | undefined> {
  while (!stop.done) {
    const target = revision();
    if (target !== undefined) {
      const answers = await Promise.all(cluster.hosts.map((h) => memberStatus(`https://${h.address}:2379`, etcdTlsOf(h), 1000)));
      const leaders = new Set(answers.map((a) => a?.leader));
      if (answers.every((a) => a !== undefined && a.leader !== '0' && BigInt(a.header.revision) >= target) && leaders.size === 1) return performance.now() - since;
    }
    await sleep(100);
  }
  return undefined;
}

const teardown = new Teardown();
teardown.onSignals();
try {
  const loadBefore = loadavg();
  await teardown.freshDir(dir);

  const start = performance.now();
  const cluster = await startKubeCluster({ net, dir: path.join(dir, 'lab'), names: NAMES });
  teardown.add('stop the lab', () => cluster.stop());
  const started = performance.now();
  const filled = await fillCluster(cluster, { namespaces: 3, targetMiB: mib });
  const dbSize = Number((await memberStatus(`https://${cluster.hosts[0]!.address}:2379`, etcdTlsOf(cluster.hosts[0]!), 5000))?.dbSize ?? 0);
  console.error(`lab up in ${seconds(started - start)} s; filled ${filled.namespaces.length} namespaces and ${filled.bulk} bulk ConfigMaps in ${seconds(performance.now() - started)} s: database ${(dbSize / MiB).toFixed(0)} MiB`);

  // One daemon per host; the API serves with the host's kube-apiserver certificate (the cluster CA, the host's address).
  const { identity, recipient } = await generateIdentity();
  const identityFile = await writeSecret(path.join(dir, 'identity.txt'), identityFileText(identity, recipient, new Date()));
  const token = generateToken();
  const tokensFile = await writeSecret(path.join(dir, 'tokens'), `${tokenLine(token, 'restorer', 'bench')}\n`);
  const lb = { work: dir, storeDir: path.join(dir, 'store'), recipient, identityFile };
  const daemons: DaemonProcess[] = [];
  teardown.add('stop the daemons', async () => {
    for (const d of daemons) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
  });
  for (const host of cluster.hosts) {
    daemons.push(await daemonOn(host, lb, {
      compression: { algorithm: 'zstd', level: 1 },
      daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' } },
      api: { listen: { host: host.address, port: 8443 }, tls: { certFile: '/etc/kubernetes/pki/apiserver.crt', keyFile: '/etc/kubernetes/pki/apiserver.key' }, tokensFile },
      metrics: { listen: { host: '127.0.0.1', port: 9464 } },
    }));
  }
  const caFile = path.join(cluster.hosts[0]!.dir, 'etc/kubernetes/pki/ca.crt');
  const ca = await readFile(caFile);
  const urls = cluster.hosts.map((h) => `https://${h.address}:8443`);
  const apis = urls.map((url) => new ApiClient({ url, ca, token }));

  // One backup through the API, on whichever daemon leads (restorer includes operator).
  let made: { api: ApiClient; job: Job } | undefined;
  for (let attempt = 0; !made; attempt++) {
    for (const api of apis) {
      const submitted = await api.triggerBackup().catch(() => undefined);
      if (submitted) {
        made = { api, job: submitted.job };
        break;
      }
    }
    if (!made && attempt > 300) throw new Error('no daemon became the leader within 30 s');
    if (!made) await sleep(100);
  }
  let job = made.job;
  while (job.state !== 'succeeded' && job.state !== 'failed') {
    await sleep(500);
    job = await made.api.job(job.id);
  }
  if (job.state === 'failed') throw new Error(`the backup failed: ${job.error?.message}`);
  const backupId = job.backupId!;
  const backup = (await apis[0]!.backup(backupId)).manifest;
  console.error(`backup ${backupId}: ${(backup.etcd.dbSize / MiB).toFixed(0)} MiB database, ${(backup.archive.size / MiB).toFixed(0)} MiB stored, ${job.durationSeconds?.toFixed(1)} s`);
  // Made after the backup: the restore takes it back.
  await cluster.kubectl(['create', 'configmap', 'made-after-backup', '-n', filled.namespaces[0]!]);

  // The restore, timed from the command's start; etcd's health watched meanwhile.
  let target: bigint | undefined;
  const stop = { done: false };
  const begun = performance.now();
  const watchTarget = (async () => {
    while (target === undefined && !stop.done) {
      const views = await apis[0]!.restores().catch(() => []);
      const plan = views.find((v) => v.plan.backupId === backupId && !v.plan.dryRun)?.plan;
      if (plan) target = BigInt(plan.targetRevision);
      else await sleep(100);
    }
  })();
  const healthy = healthyAfter(cluster, () => target, begun, stop);
  const argv = ['--max-semi-space-size=1', SOURCE_CLI, 'restore', 'apply', '--all', '--backup', backupId, '--mode', 'in-place', '--json', ...NAMES.flatMap((n, i) => ['--daemon', `${n}=${urls[i]}`])];
  const env = { LIFEBOAT_CLIENT__CA_FILE: caFile, LIFEBOAT_CLIENT__TOKEN: token, LIFEBOAT_CLIENT__URL: urls[0] };
  const cli = await timed(process.execPath, argv, { env, teardown, scratch: dir }).finally(() => {
    // The command is over: etcd is healthy by now, or it never will be in this run.
    setTimeout(() => (stop.done = true), 10_000).unref();
  });
  const rtoMs = await healthy;
  stop.done = true;
  await watchTarget;
  const report = JSON.parse(cli.stdout) as ApplyAllReport & { elapsedSeconds: number; healthyQuorumAfterSeconds?: number; nodes: { node: string; state: string; revision?: string }[] };
  if (!report.ok || rtoMs === undefined) throw new Error(`the restore did not finish: ${cli.stdout.slice(-2000)}`);
  const loadAfter = loadavg();
  const back = (await cluster.kubectl(['get', 'configmaps', '-n', 'bulk', '-o', 'name'], { allowFailure: true })).stdout.split('\n').filter(Boolean).length;
  if (back !== filled.bulk) throw new Error(`kubectl reads back ${back} ConfigMaps in namespace bulk, ${filled.bulk} were backed up`);
  const late = await cluster.kubectl(['get', 'configmap', 'made-after-backup', '-n', filled.namespaces[0]!], { allowFailure: true });
  if (late.code === 0) throw new Error('the ConfigMap made after the backup is still there after the restore');

  console.log(`database:        ${(dbSize / MiB).toFixed(0)} MiB in a 3-member TLS etcd ${etcdBinaries().version} (a kubeadm control plane in the lab: real kube-apiserver, lab kubelet), backup ${(backup.archive.size / MiB).toFixed(0)} MiB stored (zstd 1, age)`);
  console.log('restore apply --all, phase by phase (its slowest node):');
  for (const phase of report.phases) {
    const slowest = Math.max(...phase.nodes.map((n) => n.durationMs));
    console.log(`  ${phase.phase.padEnd(17)} ${seconds(slowest).padStart(6)} s`);
  }
  console.log(`RTO:             ${seconds(rtoMs)} s from \`lifeboat restore apply --all\` to a healthy 3-member etcd (every member answers Status with one leader at revision >= ${target})`);
  console.log(`whole command:   ${cli.seconds.toFixed(1)} s (until the apiservers were ready and the report printed); CLI peak RSS ${cli.peakRssMiB.toFixed(0)} MiB`);
  console.log(`members:         ${report.nodes.map((n) => `${n.node} ${n.state} at revision ${n.revision}`).join(', ')}`);
  console.log(`read back:       kubectl lists the ${filled.bulk} bulk ConfigMaps of the backup, not the one made after it`);
  console.log(`load average:    ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after (2 cores; others may share the machine)`);
} finally {
  await teardown.run();
}
