import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { contentBytes } from '../archive/manifest.ts';
import { ConflictError, IntegrityError } from '../errors/errors.ts';
import { snapshotStatus } from '../verify/verify.ts';
import { writeFileAtomic } from '../store/durable-file.ts';
import { exists, identity, moveOut, removeIfEmpty, renameDurable, swapIn, waitUntilUnused } from './durable.ts';
import {
  cleanupLeases,
  describeMember,
  liveRevision,
  startThrowaway,
  stopLeftover,
  tlsClient,
  waitClosed,
  waitOpen,
  waitQuorum,
  waitReady,
  type Throwaway,
} from './etcd.ts';
import { extractBackup } from './extract.ts';
import { replayFetched } from './point-in-time.ts';
import { checkSpace } from './space.ts';
import { APISERVER_MANIFEST, apiserverAddress, ETCD_MANIFEST, etcdFacts, etcdListenAddresses, lineDiff, localClientURL, probeAddress, StaticPod } from './manifests.ts';
import { initialCluster, type StepName } from './plan.ts';
import { dryResult, layoutOf, local, MANIFESTS, manifestPath, RESTORED_ETCD, staged, WAL_AND_SLACK, waitFor, type Step, type StepContext } from './step-context.ts';
import { joinInstructionsStep, kubeadmInit, placeFiles, waitApiserver, writeKubeadmConfig } from './steps-fresh.ts';

/**
 * Each step of a restore. A step is idempotent: it looks at the host and finishes whatever an
 * interrupted attempt left, so running it again (after a crash or a failure) is always safe.
 * It returns one line on what it did, journaled with its state.
 *
 * In a dry run the same code runs with the host root mapped to the restore's dry-run root (a
 * copy of the manifests dir and of the kit targets, with a placeholder for the live data dir):
 * the snapshot is restored for real, the restored member is started as a throwaway etcd on a
 * private unix socket, and each wait on the live node, and each kubeadm run, is recorded
 * instead of done.
 */

export type { EngineDeps, StepContext } from './step-context.ts';

/** Download, decrypt, check every hash (readArchive, through extract), then etcdutl snapshot status. */
const fetch: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const stored = await deps.catalog.get(plan.backupId);
  const dir = staged(ctx, 'archive');
  if (await exists(dir)) {
    const size = (await stat(path.join(dir, 'etcd', 'snapshot.db')).catch(() => undefined))?.size;
    // A point-in-time restore's snapshot is the replayed one: its size is in the journal.
    const expected = plan.pointInTime ? ctx.journal.facts.snapshot?.bytes : stored.snapshot.size;
    if (size === expected && ctx.journal.facts.fetched === true) return 'already fetched and checked';
    await rm(dir, { recursive: true, force: true });
  }
  const partial = staged(ctx, 'archive.partial');
  await rm(partial, { recursive: true, force: true });
  await checkSpace(plan.staging, contentBytes(stored) + (8 << 20), '/daemon/stateDir', 'the decrypted archive (snapshot and kit)');
  const report = await extractBackup({ store: deps.store, decrypt: deps.decrypt, log: ctx.log }, stored, ctx.identities, partial);
  const snapshotFile = path.join(partial, 'etcd', 'snapshot.db');
  let status = await snapshotStatus(deps.exec, deps.config.tools.etcdutl, snapshotFile);
  if (BigInt(status.revision) < BigInt(stored.etcd.revision)) {
    throw new IntegrityError(`etcdutl reports revision ${status.revision} for the snapshot of ${plan.backupId}, older than its manifest's ${stored.etcd.revision}`);
  }
  let replayed = '';
  if (plan.pointInTime) {
    const facts = await replayFetched(ctx, stored, snapshotFile);
    ctx.journal.facts.replayed = facts;
    status = await snapshotStatus(deps.exec, deps.config.tools.etcdutl, snapshotFile);
    replayed = `; the change log replayed onto it up to revision ${facts.targetRevision} (${facts.events} events in ${facts.transactions} transactions, ${facts.seconds} s)`;
  }
  await renameDurable(partial, dir);
  ctx.journal.facts.fetched = true;
  const bytes = plan.pointInTime ? (await stat(path.join(dir, 'etcd', 'snapshot.db'))).size : report.snapshot.size;
  ctx.journal.facts.snapshot = { revision: status.revision, totalKey: status.totalKey, bytes };
  return `fetched ${plan.backupId}: ${report.ciphertext.size} bytes, every hash checked; ${report.kitFiles} kit files${replayed}; snapshot at revision ${status.revision} with ${status.totalKey} keys`;
};


/** Moves a static pod manifest out of the manifests dir into the restore's state dir (the kubelet then stops its pod); resumable. */
async function setAsideManifest(ctx: StepContext, name: string): Promise<{ pod: StaticPod; moved: string }> {
  const dest = staged(ctx, MANIFESTS, name);
  await mkdir(staged(ctx, MANIFESTS), { recursive: true, mode: 0o700 });
  const moved = await moveOut(manifestPath(ctx, name), dest);
  return { pod: await StaticPod.read(dest), moved: `${name} ${moved === 'moved' ? 'moved' : 'was already moved'} to ${dest}` };
}

const stopApiserver: Step = async (ctx) => {
  const src = manifestPath(ctx, APISERVER_MANIFEST);
  if (!(await exists(src)) && !(await exists(staged(ctx, MANIFESTS, APISERVER_MANIFEST)))) {
    if (!ctx.plan.manifests.some((m) => m.path.endsWith(`/${APISERVER_MANIFEST}`))) return 'no kube-apiserver manifest on this node';
    throw new ConflictError(`${src} is gone and was not set aside by this restore`, { hint: 'put the kube-apiserver manifest back, then apply again' });
  }
  const { pod, moved } = await setAsideManifest(ctx, APISERVER_MANIFEST);
  const address = apiserverAddress(pod);
  const waited = await waitFor(ctx, `kube-apiserver to stop (${address.host}:${address.port} closed)`, () =>
    waitClosed([address], 'kube-apiserver', ctx.deps.config.restore.apiserverWaitSeconds, ctx.signal),
  );
  return `${moved}; ${waited}`;
};

const stopEtcd: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const src = manifestPath(ctx, ETCD_MANIFEST);
  if (await exists(src)) {
    // The last moment the old cluster can answer: its revision must still be below the target.
    const endpoints = [...new Set([plan.self.clientURL!, ...deps.config.etcd.endpoints])];
    const live = await liveRevision({ ...deps.config.etcd, endpoints });
    if (live !== undefined && BigInt(live) >= BigInt(plan.targetRevision)) {
      throw new ConflictError(`the cluster is at revision ${live}, at or above this plan's target ${plan.targetRevision}: the restore would move the revision backwards`, {
        hint: 'make a new plan: its bump is computed from the live revision',
      });
    }
    if (live !== undefined) ctx.journal.facts.revisionBeforeStop = live;
  }
  const { pod, moved } = await setAsideManifest(ctx, ETCD_MANIFEST);
  const addresses = etcdListenAddresses(etcdFacts(pod));
  const waited = await waitFor(ctx, `etcd to stop (${addresses.map((a) => `${a.host}:${a.port}`).join(', ')} closed)`, () =>
    waitClosed(addresses, 'etcd', deps.config.restore.etcdWaitSeconds, ctx.signal),
  );
  return `${moved}; ${waited}`;
};

/** etcdutl with the plan's exact arguments, into a dir of this restore (a leftover of an interrupted attempt is removed first). */
const restoreSnapshot: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const layout = layoutOf(plan);
  const target = local(ctx, layout.restoreDir);
  const args = plan.self.etcdutl.args;
  if (args[args.indexOf('--data-dir') + 1] !== target) {
    throw new ConflictError(`the plan restores into ${args[args.indexOf('--data-dir') + 1]}, but this run would use ${target}`, { hint: 'kit.hostRoot or daemon.stateDir changed since the plan was made: make a new plan' });
  }
  if (await exists(target)) {
    await waitUntilUnused(target, deps.config.restore.etcdWaitSeconds * 1000, ctx.signal);
    await rm(target, { recursive: true, force: true });
    ctx.log.warn({ phase: 'restore-snapshot', removed: target }, 'removed what an interrupted restore left (this restore\'s own dir)');
  }
  await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
  await checkSpace(path.dirname(target), plan.backup.dbSize + WAL_AND_SLACK, '/restore/etcdDataDir', 'the restored data dir');
  const started = performance.now();
  await deps.exec.run(plan.self.etcdutl.command, args, { timeoutMs: Math.max(600_000, Math.ceil(plan.backup.dbSize / 1e9) * 120_000), ...(ctx.signal ? { signal: ctx.signal } : {}) });
  ctx.journal.facts.restored = await identity(local(ctx, layout.incoming));
  return `etcdutl restored the snapshot into ${layout.restoreDir} in ${Math.round(performance.now() - started)} ms (bump ${plan.bumpRevision}, compacted)`;
};

const swapDataDir: Step = async (ctx) => {
  const { plan } = ctx;
  const layout = layoutOf(plan);
  const { restored } = ctx.journal.facts;
  const hadLive = await exists(local(ctx, layout.live));
  const result = await swapIn({ live: local(ctx, layout.live), incoming: local(ctx, layout.incoming), aside: local(ctx, layout.aside) }, restored);
  if (layout.swap === 'member') await removeIfEmpty(local(ctx, layout.restoreDir));
  const aside = await exists(local(ctx, layout.aside));
  if (result === 'already') return `already swapped: ${layout.live} is the restored data`;
  return `${aside ? `old data set aside at ${layout.aside}; ` : hadLive ? '' : 'there was no old data; '}restored data now at ${layout.live}`;
};

/** The etcd manifest of the restored member, from the original that stop-etcd set aside. */
async function restoredEtcdManifest(ctx: StepContext): Promise<{ text: string; mode: number }> {
  const { plan } = ctx;
  const original = staged(ctx, MANIFESTS, ETCD_MANIFEST);
  const pod = await StaticPod.read(original);
  pod.setFlag('name', plan.self.name);
  pod.setFlag('initial-cluster', initialCluster(plan.members));
  pod.setFlag('initial-cluster-token', plan.clusterToken);
  pod.setFlag('initial-cluster-state', 'new');
  pod.setFlag('initial-advertise-peer-urls', plan.self.peerURL);
  const dataDir = pod.flag('data-dir');
  if (dataDir === undefined) throw new ConflictError(`${original} has no --data-dir`);
  if (pod.hostPathOf(dataDir) !== plan.self.dataDir) pod.setHostPathOf(dataDir, plan.self.dataDir);
  if (pod.hostPathOf(dataDir) !== plan.self.dataDir) {
    throw new ConflictError(`the edited etcd manifest maps --data-dir=${dataDir} to ${pod.hostPathOf(dataDir)}, not ${plan.self.dataDir}`);
  }
  return { text: pod.toString(), mode: (await stat(original)).mode & 0o7777 };
}

const startEtcd: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const { text, mode } = await restoredEtcdManifest(ctx);
  await writeFileAtomic(staged(ctx, MANIFESTS, RESTORED_ETCD), text, 0o600);
  const dest = manifestPath(ctx, ETCD_MANIFEST);
  const current = await readFile(dest, 'utf8').catch(() => undefined);
  if (current !== text) await writeFileAtomic(dest, text, mode);
  ctx.journal.facts.etcdManifestSha256 = createHash('sha256').update(text).digest('hex');
  const client = localClientURL(etcdFacts(StaticPod.parse(text, dest)))!;
  if (ctx.dry) ctx.throwaway = await startRestoredMember(ctx, 'dry-run-etcd.log', plan.members.length > 1);
  const waited = await waitFor(ctx, `etcd to listen on ${client.host}`, () => waitOpen(probeAddress(client), 'the restored etcd', deps.config.restore.etcdWaitSeconds, ctx.signal));
  return `${ETCD_MANIFEST} put back with the new token ${plan.clusterToken} and the full initial cluster; ${waited}${ctx.dry ? `; the restored member serves at revision ${dryResult(ctx).etcd?.revision} (throwaway etcd on a private socket)` : ''}`;
};

/**
 * A throwaway etcd on the restored data dir (on unix sockets in the restore's state dir), once
 * it serves at least the target revision; stopped again if it does not. A dry run records what
 * it serves.
 */
async function startRestoredMember(ctx: StepContext, logName: string, forceNewCluster: boolean): Promise<Throwaway> {
  const { plan, deps } = ctx;
  const dataDir = local(ctx, plan.self.dataDir);
  await stopLeftover(ctx.journal.facts.throwawayPid, dataDir);
  await mkdir(staged(ctx, 'logs'), { recursive: true, mode: 0o700 });
  const throwaway = await startThrowaway({
    exec: deps.exec,
    etcd: deps.config.tools.etcd,
    name: plan.self.name,
    dataDir,
    socketDir: staged(ctx, 'sock'),
    forceNewCluster,
    logFile: staged(ctx, 'logs', logName),
    timeoutSeconds: deps.config.restore.etcdWaitSeconds,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    started: async (pid) => {
      ctx.journal.facts.throwawayPid = pid;
      await ctx.save();
    },
  });
  try {
    const member = await describeMember(throwaway.client);
    if (BigInt(member.revision) < BigInt(plan.targetRevision)) {
      throw new IntegrityError(`the restored member serves revision ${member.revision}, below the target ${plan.targetRevision}`);
    }
    if (ctx.dry) dryResult(ctx).etcd = { ...member, targetRevision: plan.targetRevision, serves: true };
  } catch (err) {
    await throwaway.stop();
    throw err;
  }
  return throwaway;
}

const waitQuorumStep: Step = async (ctx) => {
  const { plan, deps } = ctx;
  if (ctx.dry) return waitFor(ctx, `a healthy quorum of ${plan.members.map((m) => m.name).join(', ')} at revision ≥ ${plan.targetRevision}`, async () => undefined);
  const report = await waitQuorum({ clientURL: plan.self.clientURL!, names: plan.members.map((m) => m.name), targetRevision: plan.targetRevision, tls: deps.config.etcd.tls, timeoutSeconds: deps.config.restore.etcdWaitSeconds, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  ctx.journal.result.quorum = report;
  return `quorum of ${report.members.length}: leader ${report.leader}, revision ${report.revision}`;
};

const cleanupLeasesStep: Step = async (ctx) => {
  const { plan, deps } = ctx;
  if (plan.leaseCleanupBy !== plan.node) return `runs on ${plan.leaseCleanupBy}`;
  const options = { keepAddresses: plan.keepLeaseAddresses, memberNames: plan.members.map((m) => m.name), deleteNodes: deps.config.restore.deleteStaleNodes, dryRun: ctx.dry };
  let report;
  if (plan.mode === 'in-place' && !ctx.dry) {
    const client = tlsClient(plan.self.clientURL!, deps.config.etcd.tls);
    try {
      report = await cleanupLeases(client, options);
    } finally {
      client.close();
    }
  } else if (plan.mode === 'in-place') {
    report = await cleanupLeases(ctx.throwaway!.client, options);
  } else {
    // A fresh control plane: on the restored data dir, before kubeadm starts anything on it.
    const throwaway = await startRestoredMember(ctx, 'cleanup-etcd.log', false);
    try {
      report = await cleanupLeases(throwaway.client, options);
    } finally {
      await throwaway.stop();
    }
    delete ctx.journal.facts.throwawayPid;
  }
  ctx.journal.result.cleanup = report;
  const verb = ctx.dry ? 'would remove' : 'removed';
  return `${verb} ${report.removed.length} stale master lease(s)${report.removed.length ? ` (${report.removed.join(', ')})` : ''}, kept ${report.kept.length}; ${report.staleNodes.length} stale control-plane Node object(s)${report.staleNodes.length ? ` (${report.staleNodes.join(', ')})` : ''}${report.nodesDeleted.length ? ', deleted' : report.staleNodes.length ? ', reported only' : ''}`;
};

const startApiserver: Step = async (ctx) => {
  const original = staged(ctx, MANIFESTS, APISERVER_MANIFEST);
  if (!(await exists(original))) {
    if (!ctx.plan.manifests.some((m) => m.path.endsWith(`/${APISERVER_MANIFEST}`))) return 'no kube-apiserver manifest on this node';
    throw new ConflictError(`the set-aside ${original} is missing`, { hint: 'put the kube-apiserver manifest back by hand' });
  }
  const bytes = await readFile(original);
  const dest = manifestPath(ctx, APISERVER_MANIFEST);
  const current = await readFile(dest).catch(() => undefined);
  if (!current?.equals(bytes)) await writeFileAtomic(dest, bytes, (await stat(original)).mode & 0o7777);
  const address = apiserverAddress(StaticPod.parse(bytes.toString('utf8'), dest));
  const ca = local(ctx, path.posix.join(ctx.deps.config.kit.kubernetesDir, 'pki', 'ca.crt'));
  const waited = await waitFor(ctx, `kube-apiserver /readyz on ${address.host}:${address.port}`, () => waitReady(address, ca, ctx.deps.config.restore.apiserverWaitSeconds, ctx.signal));
  return `${APISERVER_MANIFEST} put back; ${waited}`;
};

const done: Step = async (ctx) => {
  const { plan } = ctx;
  if (ctx.dry) {
    if (plan.mode === 'in-place') {
      const live = await readFile(path.join(ctx.deps.config.kit.hostRoot, ctx.deps.config.restore.manifestsDir, ETCD_MANIFEST), 'utf8').catch(() => '');
      const restored = await readFile(staged(ctx, MANIFESTS, RESTORED_ETCD), 'utf8');
      dryResult(ctx).etcdManifestDiff = lineDiff(live, restored, [`${ctx.deps.config.restore.manifestsDir}/${ETCD_MANIFEST} (now)`, `${ctx.deps.config.restore.manifestsDir}/${ETCD_MANIFEST} (restored)`]);
    }
    return 'dry run complete: nothing live was touched';
  }
  await rm(staged(ctx, 'archive'), { recursive: true, force: true });
  return `restore of ${plan.backupId} complete on ${plan.node}; the decrypted backup was removed from ${plan.staging}`;
};

export const STEPS: Record<StepName, Step> = {
  fetch,
  'stop-apiserver': stopApiserver,
  'stop-etcd': stopEtcd,
  'restore-snapshot': restoreSnapshot,
  'swap-data-dir': swapDataDir,
  'start-etcd': startEtcd,
  'wait-quorum': waitQuorumStep,
  'cleanup-leases': cleanupLeasesStep,
  'start-apiserver': startApiserver,
  'place-files': placeFiles,
  'kubeadm-config': writeKubeadmConfig,
  'kubeadm-init': kubeadmInit,
  'wait-apiserver': waitApiserver,
  'join-instructions': joinInstructionsStep,
  done,
};
