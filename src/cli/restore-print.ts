import type { Job } from '../jobs/job.ts';
import type { RestoreView } from '../restore/engine.ts';
import { stepStarted } from '../restore/journal.ts';
import type { RestorePlan } from '../restore/plan.ts';
import { formatBytes, type Output } from './output.ts';

/** How `lifeboat restore` shows a plan, a restore's progress and a dry run's findings to a person. */

/** One line per change, for a person following one job. */
export function jobLine(job: Job): string {
  const what = job.state === 'running' ? job.phase : job.state === 'failed' ? `failed${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}` : job.state;
  return `${new Date().toISOString()}  ${what}`;
}

export function quote(arg: string): string {
  return /^[-\w./:=,@+]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

export function printPlan(out: Output, plan: RestorePlan, url: string, options: { next?: boolean } = {}): void {
  const b = plan.backup;
  out.line(`restore    ${plan.id}: ${plan.mode}${plan.dryRun ? ' DRY RUN' : ''} of member ${plan.node} (daemon ${url}, cluster ${plan.cluster})`);
  out.line(`backup     ${plan.backupId}: made ${b.createdAt}, revision ${b.revision}, ${formatBytes(b.dbSize)} database${b.keyCount === undefined ? '' : `, ${b.keyCount} keys`}, ${formatBytes(b.archiveSize)} stored`);
  out.line(`members    ${plan.members.map((m) => `${m.name}=${m.peerURL}`).join(', ')}`);
  out.line(`           new cluster token ${plan.clusterToken}; stale master leases removed by ${plan.leaseCleanupBy} (kept: ${plan.keepLeaseAddresses.join(', ')})`);
  out.line(`revision   +${plan.bumpRevision}${plan.bump.pinned ? ' (pinned)' : ''}: the restored cluster starts at revision >= ${plan.targetRevision}, above every revision a client has seen; revisions before it are compacted`);
  out.line(`           ${plan.bump.formula}; estimated ${plan.bump.estimatedRevisionsSinceBackup} revisions since the backup${plan.bump.revisionsPerSecond === undefined ? '' : ` at ${plan.bump.revisionsPerSecond}/s`}${plan.bump.liveRevision === undefined ? '' : `; live revision ${plan.bump.liveRevision}`}`);
  out.line(`etcdutl    ${[plan.self.etcdutl.command, ...plan.self.etcdutl.args].map(quote).join(' ')}`);
  out.line(`data dir   ${plan.self.dataDir} (swapped: ${plan.self.swap === 'dir' ? 'the directory itself' : 'its member/ directory, the data dir is a mount point'}); restored first into ${plan.self.restoreDir}`);
  for (const s of plan.setAside) out.line(`set aside  ${s.from} -> ${s.to} (${s.what}; never deleted)`);
  for (const f of plan.files) out.line(`file       ${f.path} (${f.role}, ${f.size} bytes, mode ${f.mode.toString(8)}): ${f.existing === 'absent' ? 'placed' : f.existing === 'identical' ? 'already identical' : 'differs: set aside, then placed'}`);
  for (const m of plan.manifests) out.line(`manifest   ${m.action.padEnd(8)} ${m.path}: ${m.detail}`);
  if (plan.kubeadm) {
    out.line(`kubeadm    ${[plan.kubeadm.command, ...plan.kubeadm.initArgs].map(quote).join(' ')} (advertise ${plan.kubeadm.advertiseAddress}; config ${plan.kubeadm.configPath})`);
    if (plan.kubeadm.joinLater.length) out.line(`           join later: ${plan.kubeadm.joinLater.join(', ')} (the join command is in the result once it is done)`);
  }
  out.line(`steps      ${plan.steps.join(' -> ')}`);
  out.line(`downtime   about ${plan.expectedDowntimeSeconds} s expected, ${plan.worstCaseDowntimeSeconds} s if every wait runs to its limit:`);
  for (const d of plan.downtime) out.line(`           ${String(d.seconds).padStart(5)} s  ${d.what} (${d.basis})`);
  for (const w of plan.warnings) out.line(`warning    ${w}`);
  out.line(`token      ${plan.confirmationToken}   (the confirmation token: apply needs it)`);
  if (options.next === false || plan.dryRun) return;
  out.line('');
  out.line('Next: review the plan, then apply it on this node:');
  out.line(`  lifeboat restore apply ${plan.id} --token ${plan.confirmationToken} --wait`);
  if (plan.mode === 'in-place' && plan.members.length > 1) {
    out.line(`This plan restores ${plan.node} only. To restore all ${plan.members.length} members in the safe order (it plans the others itself):`);
    out.line(`  lifeboat restore apply --all --backup ${plan.backupId} --mode in-place`);
  }
}

export function lastStep(view: RestoreView): string {
  const step = view.plan.steps.findLast((s) => stepStarted(view.journal, s));
  return step === undefined ? '' : `${step} (${view.journal.steps[step]?.state})`;
}

export function printProgress(out: Output, view: RestoreView): void {
  out.line('');
  out.line(`state      ${view.state} (updated ${view.journal.updatedAt})`);
  for (const s of view.plan.steps) {
    const r = view.journal.steps[s] ?? { state: 'pending', attempts: 0 };
    const detail = r.error ? `${r.error.code}: ${r.error.message}${r.error.hint ? ` (${r.error.hint})` : ''}` : (r.note ?? '');
    out.line(`  ${s.padEnd(18)} ${r.state.padEnd(8)}${r.attempts > 1 ? ` x${r.attempts}` : '   '}  ${detail}`);
  }
  const result = view.journal.result;
  const { quorum } = result;
  if (quorum) out.line(`quorum     ${quorum.members?.length ?? '?'} members, leader ${quorum.leader}, revision ${quorum.revision}`);
  const { join } = result;
  if (join) {
    out.line(`join       on ${join.hosts.length ? join.hosts.join(', ') : 'each other control-plane host'}, before ${join.certificateKeyExpiresAt} (it holds secrets):`);
    for (const step of join.before) out.line(`           - ${step}`);
    out.line(`           ${join.command}`);
  }
  if (view.journal.rollback) {
    out.line(`rollback   ${view.journal.rollback.state}${view.journal.rollback.error ? `: ${view.journal.rollback.error.message}` : ''}`);
    for (const a of view.journal.rollback.actions) out.line(`           - ${a}`);
  }
  if (view.plan.dryRun && result.dryRun) printDryRun(out, view);
}

export function printDryRun(out: Output, view: RestoreView): void {
  const dry = view.journal.result.dryRun;
  out.line('');
  out.line(`dry run    ${view.state}`);
  if (!dry) return;
  if (dry.etcd) out.line(`restored   the snapshot served ${dry.etcd.keyCount} keys at revision ${dry.etcd.revision} (target ${dry.etcd.targetRevision}) from a throwaway etcd`);
  for (const w of dry.wouldWait ?? []) out.line(`would wait for ${w}`);
  for (const r of dry.wouldRun ?? []) out.line(`would run  ${r}`);
  if (dry.etcdManifestDiff) {
    out.line('etcd manifest change:');
    for (const line of dry.etcdManifestDiff.split('\n')) out.line(`  ${line}`);
  }
}
