import { Option, type Command } from 'commander';
import { followJob, jobError, type ApiClient } from '../api/client.ts';
import { LifeboatError } from '../errors/errors.ts';
import type { Job } from '../jobs/job.ts';
import { RESTORE_MODES, STEP_NAMES, type RestoreRequest } from '../restore/plan.ts';
import { applyAllCommand, rollbackAllCommand } from './restore-all.ts';
import { addPointOptions, backupRef, client, collect, members, positiveInt, refOnlyWithAll, usage, type ApplyOptions, type PlanOptions, type RollbackOptions } from './restore-args.ts';
import { APPLY_HELP, LIST_HELP, PLAN_HELP, RESTORE_HELP, ROLLBACK_HELP, SHOW_HELP } from './restore-help.ts';
import { addOutputOption, output, type Output } from './output.ts';
import { jobLine, lastStep, printDryRun, printPlan, printProgress } from './restore-print.ts';

/**
 * `lifeboat restore ...`: restores through the daemons' API (role restorer). A plan is per
 * node; `apply --all` plans on every member's daemon and drives them in the safe order
 * (restore-all.ts). The help texts are in restore-help.ts, what a person sees in restore-print.ts.
 */

export function registerRestoreCommand(program: Command): void {
  const restore = program
    .command('restore')
    .description('Restore etcd (and the recovery kit) from a backup, through the daemons\' API: plan, dry-run, apply, roll back. Needs role restorer.')
    .addHelpText('after', RESTORE_HELP);

  const plan = restore
    .command('plan')
    .description('Plan a restore of the daemon\'s node and print it: the exact etcdutl command, files, manifests, data dirs set aside, revision bump, expected downtime, and the confirmation token that apply needs. Changes nothing; --dry-run also runs every step into temp dirs on the node (the snapshot is restored for real) and touches nothing live.')
    .option('--backup <id>', 'a backup id, or latest')
    .option('--before <time>', 'the newest backup made at or before this RFC 3339 time, e.g. 2026-11-24T03:00:00Z');
  addPointOptions(plan)
    .addOption(new Option('--mode <mode>', 'in-place: this node of the existing control plane; fresh-control-plane: a new host with kubeadm').choices([...RESTORE_MODES]).makeOptionMandatory())
    .option('--member <name=peerURL>', 'a member of the restored cluster (repeat for each); default: the backup\'s members', collect, [])
    .option('--dry-run', 'also start the dry run (a job on the daemon)')
    .option('--wait', 'with --dry-run: follow the dry run until it ends and print what it found')
    .addOption(new Option('--poll-interval <ms>', 'how often --wait asks for the job').default(500).argParser(positiveInt(60_000)));
  addOutputOption(plan, '{plan, job?}; with --wait, {plan, job, restore} once the dry run ended')
    .addHelpText('after', PLAN_HELP)
    .action(async (options: PlanOptions, cmd: Command) => {
      const out = output(cmd);
      if (options.wait && !options.dryRun) usage(cmd, '--wait follows a dry run: add --dry-run (apply --wait follows an apply)');
      const body: RestoreRequest = { backup: backupRef(cmd, options), mode: options.mode, ...(options.dryRun ? { dryRun: true } : {}) };
      const m = members(cmd, options.member);
      if (m) body.members = m;
      const api = client(cmd);
      const planned = await api.planRestore(body);
      const dryRun = planned.job;
      if (!options.wait || !dryRun) {
        return out.data(planned, () => {
          printPlan(out, planned.plan, api.url);
          if (dryRun) out.line(`\ndry run started: job ${dryRun.id} (follow it: lifeboat jobs ${dryRun.id}, or lifeboat restore show ${planned.plan.id})`);
        });
      }
      printPlan(out, planned.plan, api.url);
      out.line(`\ndry run started: job ${dryRun.id}`);
      const job = await followJob(api, dryRun, options.pollInterval, (j) => out.line(jobLine(j)));
      const view = await api.restore(planned.plan.id);
      out.data({ plan: planned.plan, job, restore: view }, () => printDryRun(out, view));
      if (job.state === 'failed') throw jobError(job);
    });

  addOutputOption(
    restore.command('list').description('List the restores of the daemon\'s node, oldest first: state, backup, mode.'),
    'the restores: plan (with its confirmation token), journal, state',
  )
    .addHelpText('after', LIST_HELP)
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const views = await client(cmd).restores();
      out.data(views, () => {
        if (views.length === 0) return out.line('no restores on this node');
        const rows = views.map((v) => [v.plan.id, v.state, v.plan.mode + (v.plan.dryRun ? ' (dry run)' : ''), v.plan.backupId, v.plan.node, lastStep(v)]);
        out.table(['ID', 'STATE', 'MODE', 'BACKUP', 'NODE', 'LAST STEP'], rows);
      });
    });

  const show = restore
    .command('show')
    .argument('<id>', 'a restore id, like restore-20261124T033000.123Z-1a2b3c')
    .description('Show one restore of the daemon\'s node: its plan (with the confirmation token), each step\'s state and what it did, and the result (quorum, lease cleanup, dry-run findings, join command of a fresh control plane).')
;
  addOutputOption(show, 'the plan, journal and state')
    .addHelpText('after', SHOW_HELP)
    .action(async (id: string, _options: unknown, cmd: Command) => {
      const out = output(cmd);
      const api = client(cmd);
      const view = await api.restore(id);
      out.data(view, () => {
        printPlan(out, view.plan, api.url, { next: view.state !== 'done' && view.state !== 'rolled-back' });
        printProgress(out, view);
      });
    });

  const apply = restore
    .command('apply')
    .argument('[id]', 'the restore to apply (from restore plan); not with --all')
    .description('Apply a plan on the daemon\'s node with its confirmation token (applying again resumes it), or with --all restore every member in place in the safe order: stop the apiservers everywhere, stop etcd everywhere, restore every member, start etcd and wait for a healthy quorum, start the apiservers, report.')
    .option('--token <token>', 'the plan\'s confirmation token (printed by restore plan and restore show)')
    .addOption(new Option('--through <step>', 'stop after this step').choices([...STEP_NAMES]))
    .option('--wait', 'follow the job, printing each step; exit 1 if it fails')
    .option('--all', 'every member, in the safe order: plans on every member\'s daemon (or resumes the restore an earlier run left unfinished), then applies')
    .option('--again', 'with --all: plan and apply a new restore even if this backup was already restored on every member')
    .option('--backup <id>', 'with --all: a backup id, or latest')
    .option('--before <time>', 'with --all: the newest backup made at or before this RFC 3339 time');
  addPointOptions(apply, 'with --all: ')
    .addOption(new Option('--mode <mode>', 'with --all: only in-place').choices([...RESTORE_MODES]).default('in-place'))
    .option('--member <name=peerURL>', 'with --all: a member of the restored cluster (repeat); default: the backup\'s members', collect, [])
    .option('--daemon <name=url>', 'with --all: the API of a member\'s daemon (repeat); the first one is asked first; default: https://<host of its peer URL>:<port of client.url>', collect, [])
    .addOption(new Option('--poll-interval <ms>', 'how often to ask for the jobs').default(250).argParser(positiveInt(60_000)));
  addOutputOption(apply, '{job, created} as submitted; with --wait, {job, restore}; with --all, the report: ok, phases, nodes')
    .addHelpText('after', APPLY_HELP)
    .action(async (id: string | undefined, options: ApplyOptions, cmd: Command) => {
      if (options.all) {
        if (id !== undefined) usage(cmd, '--all finds or makes the plans itself: give --backup (or --before), not a restore id');
        if (options.token !== undefined || options.through !== undefined) usage(cmd, '--all takes no --token or --through: it plans every member and drives each step itself');
        if (options.mode !== 'in-place') usage(cmd, '--all restores in place; a fresh control plane is one host: plan it there and apply it by id');
        return applyAllCommand(cmd, output(cmd), options);
      }
      if (id === undefined) usage(cmd, 'which restore? give its id (from lifeboat restore plan), or --all');
      if (options.token === undefined) usage(cmd, 'give the plan\'s confirmation token: --token (lifeboat restore show ID prints it)');
      refOnlyWithAll(cmd, options);
      if (options.again !== undefined) usage(cmd, '--again goes with --all');
      if (options.daemon.length > 0 || options.member.length > 0) usage(cmd, '--daemon and --member go with --all');
      const api = client(cmd);
      const submitted = await api.applyRestore(id, { confirmationToken: options.token, ...(options.through ? { through: options.through } : {}) });
      await followSubmitted(output(cmd), api, id, submitted, options);
    });

  const rollback = restore
    .command('rollback')
    .argument('[id]', 'the restore to roll back; not with --all')
    .description('Roll a restore back on the daemon\'s node: stop what runs on the restored data, set it aside, put the old data dir and manifests back. Never deletes a data dir. With --all, every member of the unfinished (or finished) restore of a backup, at once.')
    .option('--token <token>', 'the plan\'s confirmation token')
    .option('--wait', 'follow the job; exit 1 if it fails')
    .option('--all', 'every member\'s daemon: the restore of --backup (or of the point in time) that apply --all made')
    .option('--backup <id>', 'with --all: a backup id, or latest')
    .option('--before <time>', 'with --all: the newest backup made at or before this RFC 3339 time')
    .option('--daemon <name=url>', 'with --all: the API of a member\'s daemon (repeat), as for apply --all', collect, [])
    .addOption(new Option('--poll-interval <ms>', 'how often to ask for the jobs').default(500).argParser(positiveInt(60_000)));
  addPointOptions(rollback, 'with --all: ');
  addOutputOption(rollback, '{job, created} as submitted; with --wait, {job, restore}; with --all, every node\'s outcome and restore')
    .addHelpText('after', ROLLBACK_HELP)
    .action(async (id: string | undefined, options: RollbackOptions, cmd: Command) => {
      if (options.all) {
        if (id !== undefined || options.token !== undefined) usage(cmd, '--all finds the restores itself: give --backup (or --before), not an id or a token');
        return rollbackAllCommand(cmd, output(cmd), options);
      }
      if (id === undefined) usage(cmd, 'which restore? give its id, or --all');
      if (options.token === undefined) usage(cmd, 'give the plan\'s confirmation token: --token');
      refOnlyWithAll(cmd, options);
      if (options.daemon.length > 0) usage(cmd, '--daemon goes with --all');
      const api = client(cmd);
      const submitted = await api.rollbackRestore(id, { confirmationToken: options.token });
      await followSubmitted(output(cmd), api, id, submitted, options);
    });
}

// ---- one node ---------------------------------------------------------------------------------

async function followSubmitted(out: Output, api: ApiClient, id: string, submitted: { job: Job; created: boolean }, options: { wait?: boolean; pollInterval: number }): Promise<void> {
  if (!options.wait) {
    return out.data(submitted, () => {
      out.line(`${submitted.created ? 'started' : 'already running:'} restore job ${submitted.job.id} on ${api.url}`);
      out.line(`follow it: lifeboat restore show ${id}   (or lifeboat jobs ${submitted.job.id})`);
    });
  }
  const job = await followJob(api, submitted.job, options.pollInterval, (j) => out.line(jobLine(j)));
  const view = await api.restore(id);
  out.data({ job, restore: view }, () => printProgress(out, view));
  if (job.state === 'failed') {
    const err = jobError(job);
    throw new LifeboatError(err.code, err.message, { hint: `${err.hint ? `${err.hint}; ` : ''}apply it again to resume (every step is idempotent), or roll it back: lifeboat restore rollback ${id} --token <token>` });
  }
}

