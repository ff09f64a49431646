import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Transform } from 'node:stream';
import type { Logger } from 'pino';
import { contentBytes } from '../archive/manifest.ts';
import { ConflictError, IntegrityError } from '../errors/errors.ts';
import type { Executor } from '../exec/executor.ts';
import type { BackupStore } from '../store/store.ts';
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
import { checkKitTarget } from './kit-policy.ts';
import { checkSpace } from './space.ts';
import { joinInstructions, kubeadmConfig, parseCertificateKey, parseJoinCommand } from './kubeadm.ts';
import { APISERVER_MANIFEST, apiserverAddress, ETCD_MANIFEST, etcdFacts, etcdListenAddresses, lineDiff, localClientURL, probeAddress, StaticPod } from './manifests.ts';
import { dataDirLayout, initialCluster, type PlanContext, type RestoreConfig, type RestorePlan, type StepName } from './plan.ts';
import type { RestoreJournal, StepState } from './journal.ts';
import type { DryRunResult } from './journal-model.ts';

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

export interface EngineDeps {
  store: BackupStore;
  catalog: PlanContext['catalog'];
  /** An age decryptor for these identities. */
  decrypt: (identities: readonly string[]) => Transform;
  exec: Executor;
  log: Logger;
  config: RestoreConfig;
  now: () => Date;
}

export interface StepContext {
  deps: EngineDeps;
  plan: RestorePlan;
  journal: RestoreJournal;
  dry: boolean;
  /** The local path playing `/`: kit.hostRoot, or the dry-run root. */
  root: string;
  identities: readonly string[];
  signal: AbortSignal | undefined;
  log: Logger;
  /** The step's state before this attempt: `running` means a crash or a cancellation cut it off. */
  previous: StepState;
  /** A dry run's throwaway etcd on the restored data, from start-etcd until the end. */
  throwaway: Throwaway | undefined;
  save(): Promise<void>;
}

type Step = (ctx: StepContext) => Promise<string>;

const MANIFESTS = 'manifests';
const RESTORED_ETCD = 'etcd.restored.yaml';
const WAL_AND_SLACK = 128 << 20;

const local = (ctx: StepContext, hostPath: string) => path.join(ctx.root, hostPath);
const staged = (ctx: StepContext, ...parts: string[]) => path.join(ctx.plan.staging, ...parts);
const manifestPath = (ctx: StepContext, name: string) => local(ctx, path.posix.join(ctx.deps.config.restore.manifestsDir, name));
const layoutOf = (plan: RestorePlan) => dataDirLayout(plan.self.dataDir, plan.id, plan.self.swap);
const dryResult = (ctx: StepContext): DryRunResult => (ctx.journal.result.dryRun ??= { wouldWait: [], wouldRun: [] });

/** Live: wait. Dry run: record what would be waited for. */
async function waitFor(ctx: StepContext, what: string, work: () => Promise<void>): Promise<string> {
  if (ctx.dry) {
    dryResult(ctx).wouldWait.push(what);
    ctx.log.info({ phase: 'dry-run', would: `wait for ${what}` }, `dry run: would wait for ${what}`);
    return `would wait for ${what}`;
  }
  await work();
  return `waited for ${what}`;
}

/** Download, decrypt, check every hash (readArchive, through extract), then etcdutl snapshot status. */
const fetch: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const stored = await deps.catalog.get(plan.backupId);
  const dir = staged(ctx, 'archive');
  if (await exists(dir)) {
    const size = (await stat(path.join(dir, 'etcd', 'snapshot.db')).catch(() => undefined))?.size;
    if (size === stored.snapshot.size && ctx.journal.facts.fetched === true) return 'already fetched and checked';
    await rm(dir, { recursive: true, force: true });
  }
  const partial = staged(ctx, 'archive.partial');
  await rm(partial, { recursive: true, force: true });
  await checkSpace(plan.staging, contentBytes(stored) + (8 << 20), '/daemon/stateDir', 'the decrypted archive (snapshot and kit)');
  const report = await extractBackup({ store: deps.store, decrypt: deps.decrypt, log: ctx.log }, stored, ctx.identities, partial);
  const status = await snapshotStatus(deps.exec, deps.config.tools.etcdutl, path.join(partial, 'etcd', 'snapshot.db'));
  if (BigInt(status.revision) < BigInt(stored.etcd.revision)) {
    throw new IntegrityError(`etcdutl reports revision ${status.revision} for the snapshot of ${plan.backupId}, older than its manifest's ${stored.etcd.revision}`);
  }
  await renameDurable(partial, dir);
  ctx.journal.facts.fetched = true;
  ctx.journal.facts.snapshot = { revision: status.revision, totalKey: status.totalKey, bytes: report.snapshot.size };
  return `fetched ${plan.backupId}: ${report.ciphertext.size} bytes, every hash checked; ${report.kitFiles} kit files; snapshot at revision ${status.revision} with ${status.totalKey} keys`;
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

/**
 * Kit files byte-identical with their original modes; a different file already there is set
 * aside, never overwritten. Each file placed where there was none is journaled first
 * (`placedFiles`), so that a rollback removes it.
 */
const placeFiles: Step = async (ctx) => {
  const { plan } = ctx;
  const stored = await ctx.deps.catalog.get(plan.backupId);
  const placed: string[] = [];
  const setAside = (ctx.journal.facts.setAsideFiles ??= []);
  const placedNew = (ctx.journal.facts.placedFiles ??= []);
  for (const f of plan.files) {
    checkKitTarget(ctx.deps.config.kit, f);
    const kit = stored.kit.files.find((k) => k.path === f.path);
    if (!kit) throw new ConflictError(`kit file ${f.path} is not in backup ${plan.backupId}`);
    const content = await readFile(staged(ctx, 'archive', ...kit.entry.split('/')));
    if (createHash('sha256').update(content).digest('hex') !== f.sha256) throw new IntegrityError(`the staged kit file ${kit.entry} no longer matches its sha256`);
    const dest = local(ctx, f.path);
    const existing = await readFile(dest).catch(() => undefined);
    if (existing?.equals(content)) {
      if (((await stat(dest)).mode & 0o7777) !== f.mode) await chmod(dest, f.mode);
      continue;
    }
    if (existing) {
      const aside = `${dest}.lifeboat-aside-${plan.id}`;
      if (await exists(aside)) throw new ConflictError(`${f.path} differs from the kit and ${aside} exists too`, { hint: 'sort them out by hand, then apply again' });
      await renameDurable(dest, aside);
      setAside.push({ path: f.path, aside: `${f.path}.lifeboat-aside-${plan.id}` });
      await ctx.save();
    } else if (!setAside.some((s) => s.path === f.path) && !placedNew.includes(f.path)) {
      placedNew.push(f.path);
      await ctx.save();
    }
    await mkdir(path.dirname(dest), { recursive: true, mode: 0o755 });
    await writeFileAtomic(dest, content, f.mode);
    placed.push(f.path);
  }
  return `placed ${placed.length} of ${plan.files.length} kit files (the rest were already identical)${setAside.length ? `; set aside ${setAside.map((s) => s.path).join(', ')}` : ''}`;
};

const writeKubeadmConfig: Step = async (ctx) => {
  const { plan } = ctx;
  const stored = await ctx.deps.catalog.get(plan.backupId);
  const kit = stored.kit.files.find((f) => f.role === 'cluster-configuration')!;
  const text = await readFile(staged(ctx, 'archive', ...kit.entry.split('/')), 'utf8');
  const config = kubeadmConfig(text, { name: plan.self.name, advertiseAddress: plan.kubeadm!.advertiseAddress, dataDir: plan.self.dataDir, criSocket: plan.kubeadm!.criSocket, source: kit.path });
  const dest = local(ctx, plan.kubeadm!.configPath);
  await mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
  await writeFileAtomic(dest, config.text, 0o600);
  ctx.journal.result.kubeadmConfig = { path: plan.kubeadm!.configPath, text: config.text, notes: config.notes };
  for (const note of config.notes) ctx.log.info({ phase: 'kubeadm-config' }, note);
  return `wrote ${plan.kubeadm!.configPath}${config.notes.length ? ` (${config.notes.join('; ')})` : ''}`;
};

const kubeadmInit: Step = async (ctx) => {
  const { plan, deps } = ctx;
  let args = plan.kubeadm!.initArgs;
  if (ctx.previous === 'running') {
    // Interrupted during kubeadm init: it left certificates, kubeconfigs and manifests (and
    // maybe running static pods) that its preflight now refuses; its phases reuse them.
    args = [...args.filter((a) => !a.startsWith('--ignore-preflight-errors')), '--ignore-preflight-errors=all'];
  }
  if (ctx.dry) {
    dryResult(ctx).wouldRun.push([plan.kubeadm!.command, ...args].join(' '));
    return `would run ${[plan.kubeadm!.command, ...args].join(' ')}`;
  }
  const { stdout } = await deps.exec.run(plan.kubeadm!.command, args, { timeoutMs: (3 * deps.config.restore.apiserverWaitSeconds + 300) * 1000, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  // kubeadm prints a join command: its bootstrap token (and certificate key) are secrets.
  const output = stdout.split('\n').slice(-20).join('\n').replace(/(--token|--certificate-key)(\s+)\S+/g, '$1$2<redacted>');
  ctx.journal.result.kubeadmInit = { args, output };
  return `ran ${[plan.kubeadm!.command, ...args].join(' ')}`;
};

const waitApiserver: Step = async (ctx) => {
  const { plan, deps } = ctx;
  if (ctx.dry) return waitFor(ctx, 'etcd (started by the kubelet from kubeadm\'s manifest) and kube-apiserver /readyz', async () => undefined);
  const etcdManifest = manifestPath(ctx, ETCD_MANIFEST);
  const client = localClientURL(etcdFacts(await StaticPod.read(etcdManifest)));
  if (!client) throw new ConflictError(`${etcdManifest} (written by kubeadm) has no client URL`);
  const quorum = await waitQuorum({ clientURL: client.toString().replace(/\/$/, ''), names: [plan.self.name], targetRevision: plan.targetRevision, tls: deps.config.etcd.tls, timeoutSeconds: deps.config.restore.etcdWaitSeconds, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  ctx.journal.result.quorum = quorum;
  const address = apiserverAddress(await StaticPod.read(manifestPath(ctx, APISERVER_MANIFEST)));
  await waitReady(address, local(ctx, path.posix.join(deps.config.kit.kubernetesDir, 'pki', 'ca.crt')), deps.config.restore.apiserverWaitSeconds, ctx.signal);
  return `etcd serves the restored data at revision ${quorum.revision}; kube-apiserver on ${address.host}:${address.port} is ready`;
};

const joinInstructionsStep: Step = async (ctx) => {
  const { plan, deps } = ctx;
  const k = plan.kubeadm!;
  const uploadArgs = ['init', 'phase', 'upload-certs', '--upload-certs', '--config', k.configPath];
  const tokenArgs = ['token', 'create', '--print-join-command'];
  if (ctx.dry) {
    dryResult(ctx).wouldRun.push([k.command, ...uploadArgs].join(' '), [k.command, ...tokenArgs].join(' '));
    return 'would create a certificate key and a join token for the other control-plane hosts';
  }
  const run = (args: string[]) => deps.exec.run(k.command, args, { timeoutMs: 300_000, ...(ctx.signal ? { signal: ctx.signal } : {}) });
  const key = parseCertificateKey((await run(uploadArgs)).stdout);
  const join = parseJoinCommand((await run(tokenArgs)).stdout);
  ctx.journal.result.join = joinInstructions(join, key, {
    now: deps.now(),
    hosts: k.joinLater,
    dataDir: plan.self.dataDir,
    copyFiles: plan.files.filter((f) => f.role === 'encryption-provider-config').map((f) => f.path),
    criSocket: k.criSocket,
    ignorePreflightErrors: k.initArgs.find((a) => a.startsWith('--ignore-preflight-errors='))?.slice('--ignore-preflight-errors='.length).split(',').filter((c) => !c.startsWith('DirAvailable-')) ?? [],
  });
  return `join instructions ready for ${k.joinLater.length ? k.joinLater.join(', ') : 'further control-plane hosts'} (in the result; they hold a secret)`;
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
