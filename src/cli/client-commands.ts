import { InvalidArgumentError, Option, type Command } from 'commander';
import { ApiClient, clientOptions, followJob, jobError } from '../api/client.ts';
import type { BackupEntry } from '../api/deps.ts';
import { DaemonUnreachableError, describeError, LifeboatError } from '../errors/errors.ts';
import { loadClientConfig } from '../config/load.ts';
import { JOB_KINDS, type Job, type JobKind, type JobState, type Submitted } from '../jobs/job.ts';
import type { GlobalOptions } from './context.ts';
import { addOutputOption, formatBytes, output, type Output } from './output.ts';

const CONNECT_HELP = `
Where and how: the config file's client section, or the environment:
  LIFEBOAT_CLIENT__URL=https://cp-1:8443   the daemon's API (default https://127.0.0.1:8443)
  LIFEBOAT_CLIENT__CA_FILE=ca.crt          the CA of the daemon's certificate
  LIFEBOAT_CLIENT__TOKEN_FILE=token.txt    a bearer token (from 'lifeboat token create'), or
  LIFEBOAT_CLIENT__CERT_FILE=me.crt LIFEBOAT_CLIENT__KEY_FILE=me.key   a client certificate`;

function client(cmd: Command): ApiClient {
  const globals = cmd.optsWithGlobals<GlobalOptions>();
  return new ApiClient(clientOptions(loadClientConfig({ file: globals.config })));
}

function positiveInt(max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
    return n;
  };
}

/** `lifeboat status`, `trigger` and `jobs`: they talk to a running daemon over its API. */
export function registerClientCommands(program: Command): void {
  addOutputOption(
    program
      .command('status')
      .description("Ask a running daemon how it is: who it is, who leads, whether it is ready, the newest backup and the running job."),
    'the status, with the newest backup as "newestBackup" (null if none)',
  )
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat status
  LIFEBOAT_CLIENT__URL=https://cp-2:8443 lifeboat status -o json`)
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const api = client(cmd);
      const status = await api.status();
      // The daemon can be up while its store is not: say so rather than fail the whole status.
      let newest: BackupEntry | undefined;
      let failure: LifeboatError | undefined;
      try {
        [newest] = await api.backups({ limit: 1 });
      } catch (err) {
        if (!(err instanceof LifeboatError) || err instanceof DaemonUnreachableError) throw err;
        failure = err;
      }
      const catalogueError = failure && describeError(failure);
      out.data({ ...status, newestBackup: newest ?? null, ...(catalogueError ? { catalogueError } : {}) }, () => {
        const leader = status.leader.self ? 'this instance' : (status.leader.identity ?? 'none elected right now');
        out.line(`daemon    ${status.node} (cluster ${status.cluster}, lifeboat ${status.version}) at ${api.url}`);
        out.line(`leader    ${leader}`);
        out.line(`ready     ${status.ready ? 'yes' : `no: ${status.reasons.join('; ')}`}`);
        out.line(`running   ${status.running ? describeJob(status.running) : 'nothing'}${status.queued > 0 ? ` (${status.queued} queued)` : ''}`);
        if (catalogueError !== undefined) {
          out.line(`newest    unknown: ${catalogueError}`);
        } else if (!newest) {
          out.line('newest    no backups yet');
        } else {
          const m = newest.manifest;
          const v = newest.verification;
          const check = v === undefined ? 'never checked' : v.result === 'passed' ? `${v.level} check passed ${v.at}` : `last ${v.level} check FAILED ${v.at}: ${v.error?.message ?? ''}`;
          out.line(`newest    ${m.backupId} at ${m.completedAt}: revision ${m.etcd.revision}, ${formatBytes(m.etcd.dbSize)} database, ${formatBytes(m.archive.size)} stored; ${check}`);
        }
      });
      // Exit 1 when the catalogue could not be read, after showing what is known.
      if (failure) throw failure;
    });

  const trigger = program
    .command('trigger')
    .description('Ask the daemon (its leader) to start a job now: a backup, or a verification of a backup.')
    .addHelpText('after', `
Examples:
  lifeboat trigger backup --wait
  lifeboat trigger verify latest --deep --wait`);

  const triggerBackup = trigger
    .command('backup')
    .description('Start a backup on the leader. Prints the job id; with --wait, follows the job until it ends.')
    .option('--wait', 'follow the job, printing its phases; exit 1 if it fails')
    .option('--idempotency-key <key>', 'a retried trigger with the same key gets the same job instead of a second backup')
    .addOption(new Option('--poll-interval <ms>', 'how often --wait asks for the job').default(1000).argParser(positiveInt(60_000)));
  addOutputOption(triggerBackup, JOB_DATA)
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat trigger backup
  lifeboat trigger backup --wait --idempotency-key "pre-upgrade-$(date +%F)"
  lifeboat trigger backup --wait -o json`)
    .action(async (options: TriggerOptions, cmd: Command) => {
      const api = client(cmd);
      const submitted = await api.triggerBackup({ idempotencyKey: options.idempotencyKey });
      await follow(output(cmd), api, submitted, options);
    });

  const triggerVerify = trigger
    .command('verify')
    .argument('<id>', 'a backup id, or "latest"')
    .description('Start a verification of a backup on the leader: the stored archive against its manifest, or with --deep a restore drill into a throwaway etcd.')
    .option('--deep', 'a restore drill: restore the backup into a throwaway etcd and check it')
    .option('--wait', 'follow the job, printing its phases; exit 1 if it fails')
    .option('--idempotency-key <key>', 'a retried trigger with the same key gets the same job')
    .addOption(new Option('--poll-interval <ms>', 'how often --wait asks for the job').default(1000).argParser(positiveInt(60_000)));
  addOutputOption(triggerVerify, JOB_DATA)
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat trigger verify latest --wait
  lifeboat trigger verify 20261124T033000.123Z-r12345 --deep --wait`)
    .action(async (id: string, options: TriggerOptions & { deep?: boolean }, cmd: Command) => {
      const api = client(cmd);
      const submitted = await api.triggerVerify(id, { deep: options.deep === true, idempotencyKey: options.idempotencyKey });
      await follow(output(cmd), api, submitted, options);
    });

  const jobs = program
    .command('jobs')
    .argument('[id]', 'one job to show in full')
    .description("List a daemon's jobs, newest first (each instance keeps its own; the leader runs them), or show one.")
    .addOption(new Option('--limit <n>', 'at most this many').default(20).argParser(positiveInt(1000)))
    .addOption(new Option('--kind <kind>', 'only jobs of this kind').choices([...JOB_KINDS]))
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(['queued', 'running', 'succeeded', 'failed']));
  addOutputOption(jobs, 'the job records (with an id: that job)')
    .addHelpText('after', `${CONNECT_HELP}

Examples:
  lifeboat jobs
  lifeboat jobs --state failed --limit 5
  lifeboat jobs job-20261124T033000.123Z-a1b2c3 -o yaml`)
    .action(async (id: string | undefined, options: { limit: number; kind?: JobKind; state?: JobState }, cmd: Command) => {
      const out = output(cmd);
      const api = client(cmd);
      if (id !== undefined) {
        const job = await api.job(id);
        return out.data(job, () => printJob(out, job));
      }
      const list = await api.jobs({ limit: options.limit, ...(options.kind ? { kind: options.kind } : {}), ...(options.state ? { state: options.state } : {}) });
      out.data(list, () => {
        if (list.length === 0) return out.line('no jobs');
        const rows = list.map((j) => [j.id, j.kind, j.state, j.phase, j.backupId ?? '', j.requestedBy, j.createdAt, j.durationSeconds === undefined ? '' : `${j.durationSeconds.toFixed(1)}s`, j.error ? `${j.error.code}: ${j.error.message}` : '']);
        out.table(['ID', 'KIND', 'STATE', 'PHASE', 'BACKUP', 'BY', 'CREATED', 'TOOK', 'ERROR'], rows);
      });
    });
}

interface TriggerOptions {
  wait?: boolean;
  idempotencyKey?: string;
  pollInterval: number;
}

const JOB_DATA = '{job, created} as submitted; with --wait, the job record once it ended';

/** Prints the submitted job; with --wait, polls it and prints every change of phase until it ends. */
async function follow(out: Output, api: ApiClient, submitted: Submitted, options: TriggerOptions): Promise<void> {
  if (!options.wait) return out.data(submitted, () => out.line(startedLine(submitted)));
  out.line(startedLine(submitted));
  const job = await followJob(api, submitted.job, options.pollInterval, (j) => out.line(`${new Date().toISOString()}  ${describeJob(j)}`));
  out.data(job, () => {
    if (job.state === 'succeeded') out.line(`job ${job.id} succeeded${job.backupId ? ` (backup ${job.backupId})` : ''} in ${(job.durationSeconds ?? 0).toFixed(1)} s`);
  });
  if (job.state === 'failed') throw jobError(job);
}

function startedLine({ job, created }: Submitted): string {
  return created ? `started ${job.kind} job ${job.id}` : `${job.kind} job ${job.id} was already ${job.state === 'queued' || job.state === 'running' ? job.state : 'made for this request'}; following it`;
}

function describeJob(job: Job): string {
  const bytes = job.progress.bytesDone > 0 ? `, ${formatBytes(job.progress.bytesDone)}${job.progress.bytesTotal ? ` of ${formatBytes(job.progress.bytesTotal)}` : ''}` : '';
  const backup = job.backupId ? ` backup ${job.backupId}` : '';
  return `${job.kind} ${job.id}: ${job.state}, phase ${job.phase}${bytes}${backup}`;
}

function printJob(out: Output, job: Job): void {
  out.line(`job       ${job.id}`);
  out.line(`kind      ${job.kind} (${job.trigger}, by ${job.requestedBy})`);
  out.line(`state     ${job.state}, phase ${job.phase}`);
  if (job.backupId) out.line(`backup    ${job.backupId}`);
  if (Object.keys(job.params).length > 0) out.line(`params    ${JSON.stringify(job.params)}`);
  out.line(`progress  ${formatBytes(job.progress.bytesDone)}${job.progress.bytesTotal ? ` of ${formatBytes(job.progress.bytesTotal)}` : ''}`);
  out.line(`created   ${job.createdAt}`);
  if (job.startedAt) out.line(`started   ${job.startedAt}`);
  if (job.finishedAt) out.line(`finished  ${job.finishedAt} (${(job.durationSeconds ?? 0).toFixed(1)} s)`);
  if (job.error) out.line(`error     ${job.error.code}: ${job.error.message}${job.error.hint ? ` (${job.error.hint})` : ''}`);
}
