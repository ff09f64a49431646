import { createHash } from 'node:crypto';
import { readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { ConflictError } from '../errors/errors.ts';
import { writeFileAtomic } from '../store/durable-file.ts';
import { exists, identity, moveOut, removeIfEmpty, renameDurable } from './durable.ts';
import { stopLeftover, waitClosed } from './etcd.ts';
import { stepStarted, type RestoreJournal } from './journal.ts';
import { APISERVER_MANIFEST, apiserverAddress, ETCD_MANIFEST, etcdFacts, etcdListenAddresses, StaticPod } from './manifests.ts';
import { dataDirLayout, type RestorePlan, type StepName } from './plan.ts';
import type { EngineDeps } from './steps.ts';

/**
 * What RestoreEngine.rollback does on the host, in order: stop what runs on the restored data;
 * set the restored data aside as failed and put the old data back (or, when there was none,
 * only set the restored data aside); then the original manifests (in place), or, for a fresh
 * control plane, remove the kit files and the kubeadm config it placed and put the files it
 * replaced back. Each action is told to `act` (journaled) once done; every one is idempotent.
 */
export async function rollbackSteps(deps: Pick<EngineDeps, 'config'>, plan: RestorePlan, journal: RestoreJournal, act: (line: string) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const { config } = deps;
  const root = config.kit.hostRoot;
  const onHost = (p: string) => path.join(root, p);
  const manifestsDir = onHost(config.restore.manifestsDir);
  const stage = (n: string) => path.join(plan.staging, 'manifests', n);
  const started = (s: StepName) => stepStarted(journal, s);

  if (plan.mode === 'in-place') {
    // 1. Stop what runs on the restored data: the apiserver, then etcd.
    const apiserverLive = path.join(manifestsDir, APISERVER_MANIFEST);
    if (started('start-apiserver') && (await exists(apiserverLive)) && (await exists(stage(APISERVER_MANIFEST)))) {
      await moveOut(apiserverLive, stage(APISERVER_MANIFEST));
      const address = apiserverAddress(await StaticPod.read(stage(APISERVER_MANIFEST)));
      await waitClosed([address], 'kube-apiserver', config.restore.apiserverWaitSeconds, signal);
      await act('stopped kube-apiserver running on the restored data');
    }
    const etcdLive = path.join(manifestsDir, ETCD_MANIFEST);
    if (started('start-etcd') && (await exists(etcdLive))) {
      const original = await readFile(stage(ETCD_MANIFEST));
      if (!(await readFile(etcdLive)).equals(original)) {
        // The restored member's manifest: kept with the staged files, out of the manifests dir.
        await moveOut(etcdLive, stage('etcd.running-at-rollback.yaml'));
        const addresses = etcdListenAddresses(etcdFacts(StaticPod.parse(original.toString('utf8'), stage(ETCD_MANIFEST))));
        await waitClosed(addresses, 'etcd', config.restore.etcdWaitSeconds, signal);
        await act('stopped etcd running on the restored data');
      }
    }
  } else {
    await stopLeftover(journal.facts.throwawayPid, onHost(plan.self.dataDir));
  }

  // 2. The data: the restored data aside as failed, the old data back.
  const layout = dataDirLayout(plan.self.dataDir, plan.id, plan.self.swap);
  const live = onHost(layout.live);
  const aside = onHost(layout.aside);
  const failed = onHost(layout.failed);
  const incoming = onHost(layout.incoming);
  const { restored } = journal.facts;
  if (await exists(incoming)) {
    if (await exists(failed)) throw new ConflictError(`${failed} already exists; move it away by hand, then roll back again`);
    await renameDurable(incoming, failed);
    await act(`set the restored (not swapped in) data aside at ${layout.failed}`);
  }
  if (layout.swap === 'member') await removeIfEmpty(onHost(layout.restoreDir));
  if (await exists(aside)) {
    if (await exists(live)) {
      if (restored !== undefined && (await identity(live)) !== restored) {
        throw new ConflictError(`${layout.live} is neither the old data (set aside at ${layout.aside}) nor the restored data`, { hint: 'inspect them, then roll back again' });
      }
      if (await exists(failed)) throw new ConflictError(`${failed} already exists; move it away by hand, then roll back again`);
      await renameDurable(live, failed);
      await act(`set the restored data aside at ${layout.failed}`);
    }
    await renameDurable(aside, live);
    await act(`put the old data back at ${layout.live}`);
  } else if (restored !== undefined && (await exists(live)) && (await identity(live)) === restored) {
    // There was no old data: the restored data is all that is live.
    if (await exists(failed)) throw new ConflictError(`${failed} already exists; move it away by hand, then roll back again`);
    await renameDurable(live, failed);
    await act(`set the restored data aside at ${layout.failed}; there was no old data to put back`);
  }

  // 3. The original manifests (in place), or the files the kit replaced (fresh).
  if (plan.mode === 'in-place') {
    for (const name of [ETCD_MANIFEST, APISERVER_MANIFEST]) {
      const original = stage(name);
      const target = path.join(manifestsDir, name);
      if (!(await exists(original))) continue;
      const bytes = await readFile(original);
      const current = await readFile(target).catch(() => undefined);
      if (current?.equals(bytes)) continue;
      if (current) throw new ConflictError(`${target} exists and is not the original; move it away by hand, then roll back again`);
      await writeFileAtomic(target, bytes, (await stat(original)).mode & 0o7777);
      await act(`put the original ${name} back`);
    }
  } else {
    await removePlaced(root, plan, journal, act);
    for (const entry of journal.facts.setAsideFiles ?? []) {
      const target = onHost(entry.path);
      const kept = onHost(entry.aside);
      if (!(await exists(kept))) continue;
      if (await exists(target)) await renameDurable(target, `${target}.lifeboat-failed-${plan.id}`);
      await renameDurable(kept, target);
      await act(`put the original ${entry.path} back`);
    }
  }
}

/**
 * The kit files a fresh-control-plane restore placed where there were none, and its kubeadm
 * config: removed while they still hold what the restore wrote (a copy of the backup's file),
 * else set aside as `<path>.lifeboat-failed-<id>` (someone changed them since).
 */
async function removePlaced(root: string, plan: RestorePlan, journal: RestoreJournal, act: (line: string) => Promise<void>): Promise<void> {
  const onHost = (p: string) => path.join(root, p);
  const placed = (journal.facts.placedFiles ?? []).map((p) => ({ path: p, sha256: plan.files.find((f) => f.path === p)?.sha256 }));
  for (const file of placed) {
    const target = onHost(file.path);
    const content = await readFile(target).catch(() => undefined);
    if (!content) continue;
    if (file.sha256 !== undefined && createHash('sha256').update(content).digest('hex') === file.sha256) {
      await rm(target, { force: true });
      await act(`removed the placed ${file.path}`);
    } else {
      await renameDurable(target, `${target}.lifeboat-failed-${plan.id}`);
      await act(`set ${file.path} aside at ${file.path}.lifeboat-failed-${plan.id}: it changed since the restore placed it`);
    }
  }
  if (plan.kubeadm && stepStarted(journal, 'kubeadm-config') && (await exists(onHost(plan.kubeadm.configPath)))) {
    await rm(onHost(plan.kubeadm.configPath), { force: true });
    await act(`removed the kubeadm config ${plan.kubeadm.configPath}`);
  }
}
