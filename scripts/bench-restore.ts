/**
 * Recovery time: how long `lifeboat restore apply --all` takes to bring back a healthy
 * 3-member etcd from a backup of a database of at least --size-mib.
 *
 *   npm run bench:restore -- [--size-mib 1100] [--dir DIR]
 *
 * Starts a kubeadm-shaped control plane of three nodes on this machine (scripts/rig/
 * cluster-roots.ts: one host root per node, a 3-member TLS etcd 3.6 and stand-in apiservers run
 * by the stand-in kubelet from static pod manifests), fills etcd with Kubernetes-shaped keys,
 * starts one `lifeboat serve` per node (a shared directory store, an age identity configured),
 * takes one backup through the API (zstd 1, age), then runs the real CLI:
 *
 *   lifeboat restore apply --all --backup <id> --mode in-place --daemon cp-1=... (x3)
 *
 * and, from the moment it starts, asks every member for its Status every 100 ms. The RTO is
 * the time from the start of that command until all three members answer with the same leader
 * at a revision at or above the plan's target (the backup's plus the bump): a healthy etcd on
 * the restored data. Also printed: each phase's time (its slowest node), the time until the
 * command ended (apiservers ready, report), the CLI's peak RSS, and the load average. Everything
 * started is stopped by PID and the directory removed, also on failure and Ctrl-C.
 * Needs scripts/install-deps.sh first and GNU time; about 12 GB of disk for 1.1 GiB.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { ApiClient } from '../src/api/client.ts';
import { generateToken, tokenLine } from '../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../src/crypto/age.ts';
import type { Job } from '../src/jobs/job.ts';
import type { ApplyAllReport } from '../src/restore/orchestrate.ts';
import { spawnDaemon, type DaemonProcess } from '../test/support/daemon.ts';
import { fillTo } from './bench/etcd.ts';
import { SOURCE_CLI } from './bench/lifeboat.ts';
import { MiB, timed } from './bench/measure.ts';
import { Teardown } from './bench/teardown.ts';
import { etcdBinaries } from './rig/binaries.ts';
import { startClusterRoots, type ClusterRoots } from './rig/cluster-roots.ts';
import { memberStatus } from './rig/etcd.ts';
import { freePorts } from './rig/ports.ts';

const USAGE = `usage: npm run bench:restore -- [options]

  --size-mib N   etcd database size to reach (default 1100)
  --dir DIR      working directory, removed before and after (default /var/tmp/lifeboat-bench-restore)

Needs bash scripts/install-deps.sh first. Takes several minutes (filling a 3-member etcd is
most of it) and about 12 GB of disk with 1.1 GiB.`;

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1100' },
    dir: { type: 'string', default: '/var/tmp/lifeboat-bench-restore' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const sizeMiB = Number(args['size-mib']);
if (!Number.isInteger(sizeMiB) || sizeMiB < 1) {
  console.error(`--size-mib: expected a positive whole number\n\n${USAGE}`);
  process.exit(2);
}
const dir = path.resolve(args.dir!);
const NAMES = ['cp-1', 'cp-2', 'cp-3'];
const seconds = (ms: number) => (ms / 1000).toFixed(1);

/** Until every member answers Status with one leader at a revision at or above `revision`; ms since `since`, or undefined once `stop` is set. */
async function healthyAfter(cluster: ClusterRoots, revision: () => bigint | undefined, since: number, stop: { done: boolean }): Promise<number | undefined> {
  while (!stop.done) {
    const target = revision();
    if (target !== undefined) {
      const answers = await Promise.all(cluster.nodes.map((node) => memberStatus(node.clientUrl, node.tls, 1000)));
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

  const cluster = await startClusterRoots({ base: path.join(dir, 'cluster'), names: NAMES });
  teardown.add('stop the kubelets and what they run', () => cluster.stop());
  const dbSize = await fillTo(cluster, sizeMiB * MiB);

  // One daemon per node; the API serves with each node's kube-apiserver certificate (the cluster CA, 127.0.0.1).
  const { identity, recipient } = await generateIdentity();
  const identityFile = path.join(dir, 'identity.txt');
  await writeFile(identityFile, identityFileText(identity, recipient, new Date()), { mode: 0o600 });
  const token = generateToken();
  const tokensFile = path.join(dir, 'tokens');
  await writeFile(tokensFile, `${tokenLine(token, 'restorer', 'bench')}\n`, { mode: 0o600 });
  const apiPorts = await freePorts(3);
  const storeDir = path.join(dir, 'store');
  const daemons: DaemonProcess[] = [];
  teardown.add('stop the daemons', async () => {
    for (const d of daemons) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
  });
  for (const [i, node] of cluster.nodes.entries()) {
    const config = path.join(dir, `lifeboat-${node.name}.yaml`);
    await writeFile(config, stringify({
      cluster: 'bench',
      node: node.name,
      etcd: { endpoints: [node.clientUrl], tls: node.tls },
      kit: { hostRoot: node.root },
      store: { fs: { dir: storeDir } },
      compression: { algorithm: 'zstd', level: 1 },
      encryption: { recipients: [recipient], identityFile },
      tools: { etcdutl: etcdBinaries().etcdutl, etcd: cluster.etcd },
      daemon: { stateDir: path.join(dir, 'state', node.name), schedules: { backup: 'off', prune: 'off', drill: 'off' } },
      api: { listen: { host: '127.0.0.1', port: apiPorts[i] }, tls: { certFile: path.join(node.tree.pki, 'apiserver.crt'), keyFile: path.join(node.tree.pki, 'apiserver.key') }, tokensFile },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
      log: { level: 'info' },
    }), { mode: 0o600 });
    daemons.push(await spawnDaemon(node.name, config));
  }
  const caFile = path.join(cluster.nodes[0]!.tree.pki, 'ca.crt');
  const ca = await readFile(caFile);
  const apis = apiPorts.map((port) => new ApiClient({ url: `https://127.0.0.1:${port}`, ca, token }));

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

  // The restore, timed from the command's start; etcd's health watched meanwhile.
  let target: bigint | undefined;
  const stop = { done: false };
  const started = performance.now();
  const watchTarget = (async () => {
    while (target === undefined && !stop.done) {
      const views = await apis[0]!.restores().catch(() => []);
      const plan = views.find((v) => v.plan.backupId === backupId && !v.plan.dryRun)?.plan;
      if (plan) target = BigInt(plan.targetRevision);
      else await sleep(100);
    }
  })();
  const healthy = healthyAfter(cluster, () => target, started, stop);
  const argv = ['--max-semi-space-size=1', SOURCE_CLI, 'restore', 'apply', '--all', '--backup', backupId, '--mode', 'in-place', '--json', ...NAMES.flatMap((n, i) => ['--daemon', `${n}=https://127.0.0.1:${apiPorts[i]}`])];
  const env = { LIFEBOAT_CLIENT__CA_FILE: caFile, LIFEBOAT_CLIENT__TOKEN: token, LIFEBOAT_CLIENT__URL: `https://127.0.0.1:${apiPorts[0]}` };
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

  console.log(`database:        ${(dbSize / MiB).toFixed(0)} MiB in a 3-member TLS etcd ${etcdBinaries().version} (static pods, stand-in kubelet), backup ${(backup.archive.size / MiB).toFixed(0)} MiB stored (zstd 1, age)`);
  console.log('restore apply --all, phase by phase (its slowest node):');
  for (const phase of report.phases) {
    const slowest = Math.max(...phase.nodes.map((n) => n.durationMs));
    console.log(`  ${phase.phase.padEnd(17)} ${seconds(slowest).padStart(6)} s`);
  }
  console.log(`RTO:             ${seconds(rtoMs)} s from \`lifeboat restore apply --all\` to a healthy 3-member etcd (every member answers Status with one leader at revision >= ${target})`);
  console.log(`whole command:   ${cli.seconds.toFixed(1)} s (until the apiservers were ready and the report printed); CLI peak RSS ${cli.peakRssMiB.toFixed(0)} MiB`);
  console.log(`members:         ${report.nodes.map((n) => `${n.node} ${n.state} at revision ${n.revision}`).join(', ')}`);
  console.log(`load average:    ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after (2 cores; others may share the machine)`);
} finally {
  await teardown.run();
}
