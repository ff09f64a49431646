import { InvalidArgumentError, Option, type Command } from 'commander';
import { ApiClient, clientOptions, followJob, jobError } from '../api/client.ts';
import { loadClientConfig } from '../config/load.ts';
import { describeError, LifeboatError, type ErrorCode } from '../errors/errors.ts';
import type { Job } from '../jobs/job.ts';
import type { RestoreView } from '../restore/engine.ts';
import { stepStarted } from '../restore/journal.ts';
import { findStarted, memberUrl, planMembers, planOn, resolveBackupId, rollbackTargets, type FleetNode } from '../restore/fleet.ts';
import { APPLY_ALL_PHASES, applyAll, checkPlans, rollbackAll, type ApplyAllReport, type NodeDriver } from '../restore/orchestrate.ts';
import { RESTORE_MODES, STEP_NAMES, type InPlaceStep, type MemberRef, type RestoreMode, type RestorePlan, type RestoreRequest, type StepName } from '../restore/plan.ts';
import { formatBytes, printTable } from './commands.ts';
import type { GlobalOptions } from './context.ts';

/**
 * `lifeboat restore ...`: restores through the daemons' API (role restorer). A plan is per
 * node; `apply --all` plans on every member's daemon and drives them in the safe order
 * (src/restore/orchestrate.ts), each node step by step through POST .../apply with `through`.
 */

const CONNECT_HELP = `
Where and how: the config file's client section, or the environment:
  LIFEBOAT_CLIENT__URL=https://cp-1:8443   the daemon's API (default https://127.0.0.1:8443)
  LIFEBOAT_CLIENT__CA_FILE=ca.crt          the CA of the daemon's certificate
  LIFEBOAT_CLIENT__TOKEN_FILE=token.txt    a restorer token (lifeboat token create --role restorer), or
  LIFEBOAT_CLIENT__CERT_FILE=me.crt LIFEBOAT_CLIENT__KEY_FILE=me.key   a client certificate mapped to restorer`;

const CURL = 'curl --cacert ca.crt -H "Authorization: Bearer $(cat restorer-token.txt)" -H "Content-Type: application/json"';

function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

function client(cmd: Command): ApiClient {
  const globals = cmd.optsWithGlobals<GlobalOptions>();
  return new ApiClient(clientOptions(loadClientConfig({ file: globals.config })));
}

function usage(cmd: Command, message: string): never {
  cmd.error(`error: ${message}`, { exitCode: 2, code: 'lifeboat.usage' });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInt(max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
    return n;
  };
}

/** `NAME=VALUE` pairs, in order; a usage error names the bad one. */
function pairs(cmd: Command, flag: string, values: readonly string[]): [string, string][] {
  return values.map((v) => {
    const at = v.indexOf('=');
    if (at <= 0 || at === v.length - 1) usage(cmd, `${flag} ${v}: expected NAME=URL`);
    return [v.slice(0, at), v.slice(at + 1)];
  });
}

function backupRef(cmd: Command, options: { backup?: string; before?: string }): RestoreRequest['backup'] {
  if (options.backup !== undefined && options.before !== undefined) usage(cmd, 'give --backup or --before, not both');
  if (options.before !== undefined) return { before: options.before };
  if (options.backup !== undefined) return options.backup;
  return usage(cmd, 'which backup? give --backup ID (or latest), or --before TIME');
}

function members(cmd: Command, values: readonly string[]): MemberRef[] | undefined {
  if (values.length === 0) return undefined;
  return pairs(cmd, '--member', values).map(([name, peerURL]) => ({ name, peerURL }));
}

interface PlanOptions {
  backup?: string;
  before?: string;
  mode: RestoreMode;
  member: string[];
  dryRun?: boolean;
  wait?: boolean;
  pollInterval: number;
  json?: boolean;
}

interface ApplyOptions {
  token?: string;
  through?: StepName;
  wait?: boolean;
  all?: boolean;
  again?: boolean;
  backup?: string;
  before?: string;
  mode: RestoreMode;
  member: string[];
  daemon: string[];
  pollInterval: number;
  json?: boolean;
}

interface RollbackOptions {
  token?: string;
  wait?: boolean;
  all?: boolean;
  backup?: string;
  before?: string;
  daemon: string[];
  pollInterval: number;
  json?: boolean;
}

export function registerRestoreCommand(program: Command): void {
  const restore = program
    .command('restore')
    .description('Restore etcd (and the recovery kit) from a backup, through the daemons\' API: plan, dry-run, apply, roll back. Needs role restorer.')
    .addHelpText('after', `
The safe way to restore every control-plane node in place, from any machine that reaches the daemons:
  lifeboat restore apply --all --backup latest --mode in-place

Step by step, one node (the daemon at client.url):
  lifeboat restore plan --backup latest --mode in-place --dry-run --wait   # restore the snapshot into temp dirs, touch nothing live
  lifeboat restore plan --backup latest --mode in-place                    # prints the plan and its confirmation token
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore rollback restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
${CONNECT_HELP}`);

  restore
    .command('plan')
    .description('Plan a restore of the daemon\'s node and print it: the exact etcdutl command, files, manifests, data dirs set aside, revision bump, expected downtime, and the confirmation token that apply needs. Changes nothing; --dry-run also runs every step into temp dirs on the node (the snapshot is restored for real) and touches nothing live.')
    .option('--backup <id>', 'a backup id, or latest')
    .option('--before <time>', 'the newest backup made at or before this RFC 3339 time, e.g. 2026-11-24T03:00:00Z')
    .addOption(new Option('--mode <mode>', 'in-place: this node of the existing control plane; fresh-control-plane: a new host with kubeadm').choices([...RESTORE_MODES]).makeOptionMandatory())
    .option('--member <name=peerURL>', 'a member of the restored cluster (repeat for each); default: the backup\'s members', collect, [])
    .option('--dry-run', 'also start the dry run (a job on the daemon)')
    .option('--wait', 'with --dry-run: follow the dry run until it ends and print what it found')
    .addOption(new Option('--poll-interval <ms>', 'how often --wait asks for the job').default(500).argParser(positiveInt(60_000)))
    .option('--json', 'print the plan (and the job) as JSON')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat restore plan --backup latest --mode in-place
  lifeboat restore plan --before 2026-11-24T03:00:00Z --mode in-place --dry-run --wait
  lifeboat restore plan --backup 20261124T033000.123Z-r12345 --mode fresh-control-plane --member cp-new=https://10.0.0.9:2380

The same with curl (201, Location: /v1/restores/<id>):
  ${CURL} -X POST https://cp-1:8443/v1/restores -d '{"backup":"latest","mode":"in-place","dryRun":true}'
  ${CURL} https://cp-1:8443/v1/restores/<id>`)
    .action(async (options: PlanOptions, cmd: Command) => {
      if (options.wait && !options.dryRun) usage(cmd, '--wait follows a dry run: add --dry-run (apply --wait follows an apply)');
      const body: RestoreRequest = { backup: backupRef(cmd, options), mode: options.mode, ...(options.dryRun ? { dryRun: true } : {}) };
      const m = members(cmd, options.member);
      if (m) body.members = m;
      const api = client(cmd);
      const planned = await api.planRestore(body);
      if (options.json && !options.wait) return print(JSON.stringify(planned, null, 2));
      if (!options.json) printPlan(planned.plan, api.url);
      if (!planned.job) return;
      if (!options.json) print(`\ndry run started: job ${planned.job.id}${options.wait ? '' : ` (follow it: lifeboat jobs ${planned.job.id}, or lifeboat restore show ${planned.plan.id})`}`);
      if (!options.wait) return;
      const job = await followJob(api, planned.job, options.pollInterval, options.json ? () => undefined : (j) => print(jobLine(j)));
      const view = await api.restore(planned.plan.id);
      if (options.json) return print(JSON.stringify({ plan: planned.plan, job, restore: view }, null, 2));
      printDryRun(view);
      if (job.state === 'failed') throw jobError(job);
    });

  restore
    .command('list')
    .description('List the restores of the daemon\'s node, oldest first: state, backup, mode.')
    .option('--json', 'print JSON (plans include their confirmation tokens)')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat restore list
  ${CURL} https://cp-1:8443/v1/restores`)
    .action(async (options: { json?: boolean }, cmd: Command) => {
      const views = await client(cmd).restores();
      if (options.json) return print(JSON.stringify(views, null, 2));
      if (views.length === 0) return print('no restores on this node');
      const rows = views.map((v) => [v.plan.id, v.state, v.plan.mode + (v.plan.dryRun ? ' (dry run)' : ''), v.plan.backupId, v.plan.node, lastStep(v)]);
      printTable(['ID', 'STATE', 'MODE', 'BACKUP', 'NODE', 'LAST STEP'], rows);
    });

  restore
    .command('show')
    .argument('<id>', 'a restore id, like restore-20261124T033000.123Z-1a2b3c')
    .description('Show one restore of the daemon\'s node: its plan (with the confirmation token), each step\'s state and what it did, and the result (quorum, lease cleanup, dry-run findings, join command of a fresh control plane).')
    .option('--json', 'print the plan, journal and state as JSON')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat restore show restore-20261124T033000.123Z-1a2b3c
  ${CURL} https://cp-1:8443/v1/restores/restore-20261124T033000.123Z-1a2b3c`)
    .action(async (id: string, options: { json?: boolean }, cmd: Command) => {
      const api = client(cmd);
      const view = await api.restore(id);
      if (options.json) return print(JSON.stringify(view, null, 2));
      printPlan(view.plan, api.url, { next: view.state !== 'done' && view.state !== 'rolled-back' });
      printProgress(view);
    });

  restore
    .command('apply')
    .argument('[id]', 'the restore to apply (from restore plan); not with --all')
    .description('Apply a plan on the daemon\'s node with its confirmation token (applying again resumes it), or with --all restore every member in place in the safe order: stop the apiservers everywhere, stop etcd everywhere, restore every member, start etcd and wait for a healthy quorum, start the apiservers, report.')
    .option('--token <token>', 'the plan\'s confirmation token (printed by restore plan and restore show)')
    .addOption(new Option('--through <step>', 'stop after this step').choices([...STEP_NAMES]))
    .option('--wait', 'follow the job, printing each step; exit 1 if it fails')
    .option('--all', 'every member, in the safe order: plans on every member\'s daemon (or resumes the restore an earlier run left unfinished), then applies')
    .option('--again', 'with --all: plan and apply a new restore even if this backup was already restored on every member')
    .option('--backup <id>', 'with --all: a backup id, or latest')
    .option('--before <time>', 'with --all: the newest backup made at or before this RFC 3339 time')
    .addOption(new Option('--mode <mode>', 'with --all: only in-place').choices([...RESTORE_MODES]).default('in-place'))
    .option('--member <name=peerURL>', 'with --all: a member of the restored cluster (repeat); default: the backup\'s members', collect, [])
    .option('--daemon <name=url>', 'with --all: the API of a member\'s daemon (repeat); the first one is asked first; default: https://<host of its peer URL>:<port of client.url>', collect, [])
    .addOption(new Option('--poll-interval <ms>', 'how often to ask for the jobs').default(250).argParser(positiveInt(60_000)))
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat restore apply --all --backup latest --mode in-place
  lifeboat restore apply --all --backup 20261124T033000.123Z-r12345 --daemon cp-1=https://10.0.0.1:8443 --daemon cp-2=https://10.0.0.2:8443 --daemon cp-3=https://10.0.0.3:8443
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --through stop-etcd --wait

If --all fails (a daemon died, a wait timed out), run the same command again: it finds the
restore it started on every member and resumes each from the step that did not finish. Or roll
every member back: lifeboat restore rollback --all --backup <the same backup>.

The same with curl, one node (202, then poll the job; its phase is the running step):
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/apply -d '{"confirmationToken":"<token>"}'
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/apply -d '{"confirmationToken":"<token>","through":"stop-apiserver"}'
  ${CURL} https://cp-1:8443/v1/jobs/<job id>`)
    .action(async (id: string | undefined, options: ApplyOptions, cmd: Command) => {
      if (options.all) {
        if (id !== undefined) usage(cmd, '--all finds or makes the plans itself: give --backup (or --before), not a restore id');
        if (options.token !== undefined || options.through !== undefined) usage(cmd, '--all takes no --token or --through: it plans every member and drives each step itself');
        if (options.mode !== 'in-place') usage(cmd, '--all restores in place; a fresh control plane is one host: plan it there and apply it by id');
        return applyAllCommand(cmd, options);
      }
      if (id === undefined) usage(cmd, 'which restore? give its id (from lifeboat restore plan), or --all');
      if (options.token === undefined) usage(cmd, 'give the plan\'s confirmation token: --token (lifeboat restore show ID prints it)');
      for (const flag of ['backup', 'before', 'again'] as const) if (options[flag] !== undefined) usage(cmd, `--${flag} goes with --all`);
      if (options.daemon.length > 0 || options.member.length > 0) usage(cmd, '--daemon and --member go with --all');
      const api = client(cmd);
      const submitted = await api.applyRestore(id, { confirmationToken: options.token, ...(options.through ? { through: options.through } : {}) });
      await followSubmitted(api, id, submitted, options);
    });

  restore
    .command('rollback')
    .argument('[id]', 'the restore to roll back; not with --all')
    .description('Roll a restore back on the daemon\'s node: stop what runs on the restored data, set it aside, put the old data dir and manifests back. Never deletes a data dir. With --all, every member of the unfinished (or finished) restore of a backup, at once.')
    .option('--token <token>', 'the plan\'s confirmation token')
    .option('--wait', 'follow the job; exit 1 if it fails')
    .option('--all', 'every member\'s daemon: the restore of --backup that apply --all made')
    .option('--backup <id>', 'with --all: a backup id, or latest')
    .option('--before <time>', 'with --all: the newest backup made at or before this RFC 3339 time')
    .option('--daemon <name=url>', 'with --all: the API of a member\'s daemon (repeat), as for apply --all', collect, [])
    .addOption(new Option('--poll-interval <ms>', 'how often to ask for the jobs').default(500).argParser(positiveInt(60_000)))
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat restore rollback restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore rollback --all --backup 20261124T033000.123Z-r12345

The same with curl:
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/rollback -d '{"confirmationToken":"<token>"}'`)
    .action(async (id: string | undefined, options: RollbackOptions, cmd: Command) => {
      if (options.all) {
        if (id !== undefined || options.token !== undefined) usage(cmd, '--all finds the restores itself: give --backup (or --before), not an id or a token');
        return rollbackAllCommand(cmd, options);
      }
      if (id === undefined) usage(cmd, 'which restore? give its id, or --all');
      if (options.token === undefined) usage(cmd, 'give the plan\'s confirmation token: --token');
      if (options.backup !== undefined || options.before !== undefined || options.daemon.length > 0) usage(cmd, '--backup, --before and --daemon go with --all');
      const api = client(cmd);
      const submitted = await api.rollbackRestore(id, { confirmationToken: options.token });
      await followSubmitted(api, id, submitted, options);
    });
}

// ---- one node ---------------------------------------------------------------------------------

async function followSubmitted(api: ApiClient, id: string, submitted: { job: Job; created: boolean }, options: { wait?: boolean; json?: boolean; pollInterval: number }): Promise<void> {
  if (!options.wait) {
    if (options.json) return print(JSON.stringify(submitted, null, 2));
    print(`${submitted.created ? 'started' : 'already running:'} restore job ${submitted.job.id} on ${api.url}`);
    print(`follow it: lifeboat restore show ${id}   (or lifeboat jobs ${submitted.job.id})`);
    return;
  }
  const job = await followJob(api, submitted.job, options.pollInterval, options.json ? () => undefined : (j) => print(jobLine(j)));
  const view = await api.restore(id);
  if (options.json) print(JSON.stringify({ job, restore: view }, null, 2));
  else printProgress(view);
  if (job.state === 'failed') {
    const err = jobError(job);
    throw new LifeboatError(err.code, err.message, { hint: `${err.hint ? `${err.hint}; ` : ''}apply it again to resume (every step is idempotent), or roll it back: lifeboat restore rollback ${id} --token <token>` });
  }
}

/** One line per change, for a person following one job. */
function jobLine(job: Job): string {
  const what = job.state === 'running' ? job.phase : job.state === 'failed' ? `failed${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}` : job.state;
  return `${new Date().toISOString()}  ${what}`;
}

function quote(arg: string): string {
  return /^[-\w./:=,@+]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

function printPlan(plan: RestorePlan, url: string, options: { next?: boolean } = {}): void {
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

function lastStep(view: RestoreView): string {
  const step = view.plan.steps.findLast((s) => stepStarted(view.journal, s));
  return step === undefined ? '' : `${step} (${view.journal.steps[step]?.state})`;
}

function printProgress(view: RestoreView): void {
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

function printDryRun(view: RestoreView): void {
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

// ---- every member -----------------------------------------------------------------------------

type Node = FleetNode<ApiClient>;

/** Where each member's daemon answers: --daemon, else the host of its peer URL at client.url's port. */
function daemonUrls(cmd: Command, base: ApiClient, given: readonly string[]): { first: string; forMember(m: MemberRef): string; check(members: MemberRef[]): void } {
  const map = new Map(pairs(cmd, '--daemon', given));
  for (const url of map.values()) if (!/^https:\/\/[^\s/]+\/?$/.test(url)) usage(cmd, `--daemon ${url}: expected https://host:port`);
  return {
    first: map.values().next().value ?? base.url,
    forMember: memberUrl(map, new URL(base.url).port || '443'),
    check: (members) => {
      for (const name of map.keys()) {
        if (!members.some((m) => m.name === name)) usage(cmd, `--daemon ${name}: ${name} is not a member (${members.map((m) => m.name).join(', ')})`);
      }
    },
  };
}

/** What both --all commands start from: how to talk to each member's daemon, and which backup. */
async function allMembers(cmd: Command, options: ApplyOptions | RollbackOptions) {
  const ref = backupRef(cmd, options);
  const say = options.json ? () => undefined : (line: string) => print(line);
  const base = client(cmd);
  const urls = daemonUrls(cmd, base, options.daemon);
  const firstApi = base.withUrl(urls.first);
  return { say, urls, firstApi, backupId: await resolveBackupId(firstApi, ref) };
}

async function applyAllCommand(cmd: Command, options: ApplyOptions): Promise<void> {
  const started = performance.now();
  const { say, urls, firstApi, backupId } = await allMembers(cmd, options);

  let first: Node;
  const found = options.again ? undefined : await findStarted(firstApi, backupId);
  if (found) {
    first = { name: found.plan.node, api: firstApi, plan: found.plan };
    say(`${first.name}: resuming ${found.plan.id} (${found.state}) on ${firstApi.url}`);
  } else {
    const m = members(cmd, options.member);
    first = await planOn(firstApi, undefined, { backup: backupId, mode: 'in-place', ...(m ? { members: m } : {}) }, say);
  }
  urls.check(first.plan.members);
  const nodes = await planMembers(first, urls.forMember, say);
  checkPlans(nodes);
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id)));
  if (views.every((v) => v.state === 'done')) {
    say(`restore of ${backupId} is already done on every member (${nodes.map((n) => n.plan.id).join(', ')}); --again restores it once more`);
    await report(nodes, { ok: true, phases: [] }, performance.now() - started, undefined, options.json === true);
    return;
  }
  const p = first.plan;
  say('');
  say(`restoring ${p.backupId} (revision ${p.backup.revision}, ${formatBytes(p.backup.dbSize)}) in place on ${nodes.map((n) => n.name).join(', ')}`);
  say(`new cluster token ${p.clusterToken}; revision bump ${p.bumpRevision}: every member starts at revision >= ${p.targetRevision}; expected downtime about ${p.expectedDowntimeSeconds} s`);
  for (const [i, n] of nodes.entries()) {
    say(`  ${n.name}: ${[n.plan.self.etcdutl.command, ...n.plan.self.etcdutl.args].map(quote).join(' ')}`);
    say(`  ${' '.repeat(n.name.length)}  old data set aside at ${n.plan.setAside.map((s) => s.to).join(', ')}${views[i]!.state === 'planned' ? '' : ` (resuming: ${views[i]!.state})`}`);
  }

  // Each phase starts on every node once all finished the one before (orchestrate.ts).
  const announced = new Set<string>();
  let quorumAt: number | undefined;
  const announce = (through: InPlaceStep) => {
    if (announced.has(through)) return;
    announced.add(through);
    const index = APPLY_ALL_PHASES.findIndex((ph) => ph.through === through);
    const phase = APPLY_ALL_PHASES[index]!;
    say(`[${index + 1}/${APPLY_ALL_PHASES.length}] ${phase.phase}: ${phase.what}   (+${seconds(performance.now() - started)} s)`);
  };
  const drivers: NodeDriver[] = nodes.map((n) => ({
    name: n.name,
    plan: n.plan,
    applyThrough: async (through) => {
      announce(through);
      const view = await n.api.restore(n.plan.id);
      if (view.state === 'done' || view.journal.steps[through]?.state === 'done') return;
      const { job } = await n.api.applyRestore(n.plan.id, { confirmationToken: n.plan.confirmationToken, through });
      const done = await followJob(n.api, job, options.pollInterval, (j) => {
        if (j.state === 'running' && STEP_NAMES.includes(j.phase as StepName)) say(`      ${n.name}  ${j.phase}`);
      });
      if (done.state === 'failed') throw jobError(done);
    },
  }));
  const result = await applyAll(drivers, {
    onPhase: (outcome) => {
      if (outcome.through === 'wait-quorum' && outcome.nodes.every((o) => o.ok)) quorumAt = performance.now() - started;
      for (const o of outcome.nodes) say(`      ${o.node}  ${o.ok ? 'ok' : 'FAILED'} (${seconds(o.durationMs)} s)${o.error ? `: ${o.error.code}: ${o.error.message}${o.error.hint ? ` (${o.error.hint})` : ''}` : ''}`);
    },
  });
  await report(nodes, result, performance.now() - started, quorumAt, options.json === true);
  if (!result.ok) {
    const failed = result.phases.at(-1)?.nodes.filter((o) => !o.ok) ?? [];
    const what = failed.map((o) => `${o.node}: ${o.error?.message ?? 'failed'}`).join('; ');
    const nothingLive = result.failedPhase === 'fetch' ? ' Nothing live was touched.' : '';
    throw new LifeboatError((failed[0]?.error?.code ?? 'INTERNAL') as ErrorCode, `restore apply --all stopped in phase ${result.failedPhase}: ${what}.${nothingLive}`, {
      hint: `fix that, then run the same command again to resume (every step is idempotent and journaled), or roll every member back: lifeboat restore rollback --all --backup ${p.backupId}${options.daemon.map((d) => ` --daemon ${d}`).join('')}`,
    });
  }
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

async function report(nodes: Node[], result: ApplyAllReport, elapsedMs: number, quorumMs: number | undefined, json: boolean): Promise<void> {
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id).catch((err: unknown) => err as Error)));
  const rows = nodes.map((n, i) => {
    const v = views[i]!;
    if (v instanceof Error) return { node: n.name, restoreId: n.plan.id, state: 'unknown', error: describeError(v) };
    const { quorum } = v.journal.result;
    return { node: n.name, restoreId: n.plan.id, state: v.state, setAside: v.plan.setAside.map((s) => s.to), revision: quorum?.revision, leader: quorum?.leader };
  });
  if (json) {
    print(JSON.stringify({ ok: result.ok, ...(result.failedPhase ? { failedPhase: result.failedPhase } : {}), elapsedSeconds: elapsedMs / 1000, ...(quorumMs === undefined ? {} : { healthyQuorumAfterSeconds: quorumMs / 1000 }), phases: result.phases, nodes: rows }, null, 2));
    return;
  }
  print('');
  print(result.ok ? `restore done on every member in ${seconds(elapsedMs)} s${quorumMs === undefined ? '' : ` (a healthy quorum after ${seconds(quorumMs)} s)`}` : `restore stopped in phase ${result.failedPhase} after ${seconds(elapsedMs)} s`);
  printTable(['NODE', 'RESTORE', 'STATE', 'REVISION', 'OLD DATA SET ASIDE AT'], rows.map((r) => [r.node, r.restoreId, r.state, r.revision ?? '', 'setAside' in r ? (r.setAside ?? []).join(', ') : (r.error ?? '')]));
}

async function rollbackAllCommand(cmd: Command, options: RollbackOptions): Promise<void> {
  const { say, urls, firstApi, backupId } = await allMembers(cmd, options);
  const nodes = await rollbackTargets(firstApi, backupId, urls.forMember, say, urls.check);
  say(`rolling back ${nodes.map((n) => `${n.name} (${n.plan.id})`).join(', ')}`);
  const result = await rollbackAll(nodes.map((n) => ({
    name: n.name,
    rollback: async () => {
      const view = await n.api.restore(n.plan.id);
      if (view.journal.rollback?.state === 'done') return;
      const { job } = await n.api.rollbackRestore(n.plan.id, { confirmationToken: n.plan.confirmationToken });
      const done = await followJob(n.api, job, options.pollInterval, () => undefined);
      if (done.state === 'failed') throw jobError(done);
    },
  })));
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id).catch(() => undefined)));
  if (options.json) print(JSON.stringify({ ...result, restores: views }, null, 2));
  else {
    for (const [i, o] of result.nodes.entries()) {
      say(`${o.node}: ${o.ok ? 'rolled back' : `FAILED: ${o.error?.message ?? ''}`}`);
      for (const a of views[i]?.journal.rollback?.actions ?? []) say(`  - ${a}`);
    }
  }
  if (!result.ok) throw new LifeboatError('INTERNAL', `the rollback failed on ${result.nodes.filter((o) => !o.ok).map((o) => o.node).join(', ')}`, { hint: 'fix what it says, then run the same command again' });
}
