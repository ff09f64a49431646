import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { ConflictError, IntegrityError } from '../errors/errors.ts';
import { writeFileAtomic } from '../store/durable-file.ts';
import { exists, renameDurable } from './durable.ts';
import { waitQuorum, waitReady } from './etcd.ts';
import { checkKitTarget } from './kit-policy.ts';
import { joinInstructions, kubeadmConfig, parseCertificateKey, parseJoinCommand } from './kubeadm.ts';
import { APISERVER_MANIFEST, apiserverAddress, ETCD_MANIFEST, etcdFacts, localClientURL, StaticPod } from './manifests.ts';
import { dryResult, local, manifestPath, staged, waitFor, type Step } from './step-context.ts';

/** The steps only a fresh control plane runs: the kit placed, kubeadm init, and what the other hosts need to join. */

/**
 * Kit files byte-identical with their original modes; a different file already there is set
 * aside, never overwritten. Each file placed where there was none is journaled first
 * (`placedFiles`), so that a rollback removes it.
 */
export const placeFiles: Step = async (ctx) => {
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

export const writeKubeadmConfig: Step = async (ctx) => {
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

export const kubeadmInit: Step = async (ctx) => {
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

export const waitApiserver: Step = async (ctx) => {
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

export const joinInstructionsStep: Step = async (ctx) => {
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
