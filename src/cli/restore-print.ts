import type { Job } from '../jobs/job.ts';
import type { RestoreView } from '../restore/engine.ts';
import { stepStarted } from '../restore/journal.ts';
import type { RestorePlan } from '../restore/plan.ts';
import { formatBytes } from './commands.ts';

/** How `lifeboat restore` shows a plan, a restore's progress and a dry run's findings to a person. */

export function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** One line per change, for a person following one job. */
export function jobLine(job: Job): string {
  const what = job.state === 'running' ? job.phase : job.state === 'failed' ? `failed${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}` : job.state;
  return `${new Date().toISOString()}  ${what}`;
}

export function quote(arg: string): string {
  return /^[-\w./:=,@+]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

export function printPlan(plan: RestorePlan, url: string, options: { next?: boolean } = {}): void {
  const b = plan.backup;
  print(`restore    ${plan.id}: ${plan.mode}${plan.dryRun ? ' DRY RUN' : ''} of member ${plan.node} (daemon ${url}, cluster ${plan.cluster})`);
  print(`backup     ${plan.backupId}: made ${b.createdAt}, revision ${b.revision}, ${formatBytes(b.dbSize)} database${b.keyCount === undefined ? '' : `, ${b.keyCount} keys`}, ${formatBytes(b.archiveSize)} stored`);
  print(`members    ${plan.members.map((m) => `${m.name}=${m.peerURL}`).join(', ')}`);
  print(`           new cluster token ${plan.clusterToken}; stale master leases removed by ${plan.leaseCleanupBy} (kept: ${plan.keepLeaseAddresses.join(', ')})`);
  print(`revision   +${plan.bumpRevision}${plan.bump.pinned ? ' (pinned)' : ''}: the restored cluster starts at revision >= ${plan.targetRevision}, above every revision a client has seen; revisions before it are compacted`);
  print(`           ${plan.bump.formula}; estimated ${plan.bump.estimatedRevisionsSinceBackup} revisions since the backup${plan.bump.revisionsPerSecond === undefined ? '' : ` at ${plan.bump.revisionsPerSecond}/s`}${plan.bump.liveRevision === undefined ? '' : `; live revision ${plan.bump.liveRevision}`}`);
  print(`etcdutl    ${[plan.self.etcdutl.command, ...plan.self.etcdutl.args].map(quote).join(' ')}`);
  print(`data dir   ${plan.self.dataDir} (swapped: ${plan.self.swap === 'dir' ? 'the directory itself' : 'its member/ directory, the data dir is a mount point'}); restored first into ${plan.self.restoreDir}`);
  for (const s of plan.setAside) print(`set aside  ${s.from} -> ${s.to} (${s.what}; never deleted)`);
  for (const f of plan.files) print(`file       ${f.path} (${f.role}, ${f.size} bytes, mode ${f.mode.toString(8)}): ${f.existing === 'absent' ? 'placed' : f.existing === 'identical' ? 'already identical' : 'differs: set aside, then placed'}`);
  for (const m of plan.manifests) print(`manifest   ${m.action.padEnd(8)} ${m.path}: ${m.detail}`);
  if (plan.kubeadm) {
    print(`kubeadm    ${[plan.kubeadm.command, ...plan.kubeadm.initArgs].map(quote).join(' ')} (advertise ${plan.kubeadm.advertiseAddress}; config ${plan.kubeadm.configPath})`);
    if (plan.kubeadm.joinLater.length) print(`           join later: ${plan.kubeadm.joinLater.join(', ')} (the join command is in the result once it is done)`);
  }
  print(`steps      ${plan.steps.join(' -> ')}`);
  print(`downtime   about ${plan.expectedDowntimeSeconds} s expected, ${plan.worstCaseDowntimeSeconds} s if every wait runs to its limit:`);
  for (const d of plan.downtime) print(`           ${String(d.seconds).padStart(5)} s  ${d.what} (${d.basis})`);
  for (const w of plan.warnings) print(`warning    ${w}`);
  print(`token      ${plan.confirmationToken}   (the confirmation token: apply needs it)`);
  if (options.next === false || plan.dryRun) return;
  print('');
  print('Next: review the plan, then apply it on this node:');
  print(`  lifeboat restore apply ${plan.id} --token ${plan.confirmationToken} --wait`);
  if (plan.mode === 'in-place' && plan.members.length > 1) {
    print(`This plan restores ${plan.node} only. To restore all ${plan.members.length} members in the safe order (it plans the others itself):`);
    print(`  lifeboat restore apply --all --backup ${plan.backupId} --mode in-place`);
  }
}

export function lastStep(view: RestoreView): string {
  const step = view.plan.steps.findLast((s) => stepStarted(view.journal, s));
  return step === undefined ? '' : `${step} (${view.journal.steps[step]?.state})`;
}

export function printProgress(view: RestoreView): void {
  print('');
  print(`state      ${view.state} (updated ${view.journal.updatedAt})`);
  for (const s of view.plan.steps) {
    const r = view.journal.steps[s] ?? { state: 'pending', attempts: 0 };
    const detail = r.error ? `${r.error.code}: ${r.error.message}${r.error.hint ? ` (${r.error.hint})` : ''}` : (r.note ?? '');
    print(`  ${s.padEnd(18)} ${r.state.padEnd(8)}${r.attempts > 1 ? ` x${r.attempts}` : '   '}  ${detail}`);
  }
  const result = view.journal.result;
  const { quorum } = result;
  if (quorum) print(`quorum     ${quorum.members?.length ?? '?'} members, leader ${quorum.leader}, revision ${quorum.revision}`);
  const { join } = result;
  if (join) {
    print(`join       on ${join.hosts.length ? join.hosts.join(', ') : 'each other control-plane host'}, before ${join.certificateKeyExpiresAt} (it holds secrets):`);
    for (const step of join.before) print(`           - ${step}`);
    print(`           ${join.command}`);
  }
  if (view.journal.rollback) {
    print(`rollback   ${view.journal.rollback.state}${view.journal.rollback.error ? `: ${view.journal.rollback.error.message}` : ''}`);
    for (const a of view.journal.rollback.actions) print(`           - ${a}`);
  }
  if (view.plan.dryRun && result.dryRun) printDryRun(view);
}

export function printDryRun(view: RestoreView): void {
  const dry = view.journal.result.dryRun;
  print('');
  print(`dry run    ${view.state}`);
  if (!dry) return;
  if (dry.etcd) print(`restored   the snapshot served ${dry.etcd.keyCount} keys at revision ${dry.etcd.revision} (target ${dry.etcd.targetRevision}) from a throwaway etcd`);
  for (const w of dry.wouldWait ?? []) print(`would wait for ${w}`);
  for (const r of dry.wouldRun ?? []) print(`would run  ${r}`);
  if (dry.etcdManifestDiff) {
    print('etcd manifest change:');
    for (const line of dry.etcdManifestDiff.split('\n')) print(`  ${line}`);
  }
}
