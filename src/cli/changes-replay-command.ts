import type { Command } from 'commander';
import { compareKeys, runReplay, type ReplayReport } from '../changes/replay-run.ts';
import type { ReplayTarget } from '../changes/replay-plan.ts';
import { etcdClient } from '../etcd/client.ts';
import { BadRequestError, ConfigError, IntegrityError } from '../errors/errors.ts';
import { createContext, loadIdentities, requireIdentities, untilInterrupted, type GlobalOptions } from './context.ts';
import { addOutputOption, output } from './output.ts';

interface ReplayOptions {
  toRevision?: string;
  toTime?: string;
  beforeDeletionOf?: string;
  snapshot?: string;
  compareLive?: boolean;
  leaseTtl?: string;
  identity?: string;
  scratchDir?: string;
}

const HELP = `
Builds the etcd database of one moment from a full backup and the change log:
  1. the newest full backup at or before the target is drilled (downloaded, every hash checked,
     restored with etcdutl into a throwaway etcd on unix sockets in a private scratch dir);
  2. the change log's events after the backup, up to the target revision, are applied to it in
     transactions (the chain of segments and their signatures are checked first);
  3. with --snapshot, its snapshot is written (as etcdctl snapshot save writes one), for
     \`etcdutl snapshot restore\` or the manual restore of the runbook;
  4. with --compare-live, every key and value is compared with the live cluster at the target
     revision (while etcd has not compacted it), as a drill of the change log.
Keys that the change log shows put with a lease keep that lease, granted again with a TTL of
--lease-ttl seconds, so they expire after a restore instead of living forever.

Examples:
  lifeboat changes log --deleted --prefix /registry/namespaces/          # find the moment
  lifeboat changes replay --before-deletion-of /registry/namespaces/shop --snapshot shop.db
  lifeboat changes replay --to-time 2026-11-24T14:31:00Z --snapshot before.db
  lifeboat changes replay --to-revision 123456 --compare-live`;

export function registerChangesReplayCommand(changes: Command): void {
  const command = changes
    .command('replay')
    .description('Rebuild etcd as it was at a revision, a time, or just before a key was deleted: a full backup plus the change log.')
    .option('--to-revision <rev>', 'the etcd revision to rebuild')
    .option('--to-time <time>', 'the moment to rebuild (RFC 3339): the last revision received at or before it')
    .option('--before-deletion-of <key>', 'just before the newest delete of this etcd key, e.g. /registry/namespaces/shop')
    .option('--snapshot <file>', 'write the rebuilt snapshot here (it must not exist)')
    .option('--compare-live', 'compare every key and value with the live cluster (etcd.endpoints) at the target revision')
    .option('--lease-ttl <seconds>', 'the TTL the leases named by the change log are granted with; their keys keep them (default: changes.replayLeaseTtlSeconds, 3600)')
    .option('-i, --identity <file>', 'age identity file (default: encryption.identityFile)')
    .option('--scratch-dir <dir>', 'where the scratch dir is made (default: drill.scratchDir, else the OS temp dir)');
  addOutputOption(command, 'the plan, the replay figures, the drill report and the comparison')
    .addHelpText('after', HELP)
    .action(async (options: ReplayOptions, cmd: Command) => {
      const out = output(cmd);
      const target = targetOf(options);
      if (!options.snapshot && !options.compareLive) throw new ConfigError('--snapshot', 'give --snapshot FILE (the rebuilt snapshot), --compare-live, or both');
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const leaseTtlSeconds = options.leaseTtl === undefined ? ctx.config.changes.replayLeaseTtlSeconds : Number(options.leaseTtl);
      if (!Number.isInteger(leaseTtlSeconds) || leaseTtlSeconds < 5 || leaseTtlSeconds > 86_400) throw new ConfigError('--lease-ttl', `${options.leaseTtl}: give whole seconds from 5 to 86400`);
      const identities = requireIdentities(await loadIdentities(ctx, options.identity), 'a replay');
      const live = options.compareLive ? etcdClient({ endpoints: ctx.config.etcd.endpoints, tls: ctx.config.etcd.tls, dialTimeoutMs: 5000 }) : undefined;
      const scratchDir = options.scratchDir ?? ctx.config.drill.scratchDir;
      try {
        const report = await untilInterrupted((signal) =>
          runReplay(
            { store: ctx.store, decrypt: ctx.decrypt, exec: ctx.exec, log: ctx.log, trust: ctx.signing.trust, catalog: ctx.catalog },
            {
              cluster: ctx.config.cluster,
              target,
              identities,
              etcdutl: ctx.config.tools.etcdutl,
              etcd: ctx.config.tools.etcd,
              startTimeoutSeconds: ctx.config.drill.startTimeoutSeconds,
              signal,
              leaseTtlSeconds,
              ...(scratchDir === undefined ? {} : { scratchDir }),
              ...(options.snapshot ? { output: options.snapshot } : {}),
              ...(live ? { compare: (replayed, revision) => compareKeys(replayed, live, revision) } : {}),
            },
          ),
        ).catch((err: unknown) => {
          // A target the log cannot reach is a usage error that names the flag.
          if (err instanceof BadRequestError && err.field in FLAGS) throw new ConfigError(FLAGS[err.field]!, err.message, { cause: err, ...(err.hint ? { hint: err.hint } : {}) });
          throw err;
        });
        out.data(report, () => out.line(replaySummary(report, options.snapshot)));
        const diff = report.comparison?.difference;
        if (diff) throw new IntegrityError(`the replay does not rebuild the live cluster at revision ${report.plan.targetRevision}: ${diff.key} differs`, { hint: 'check that every segment of the change log is there (lifeboat changes log) and that the live cluster has not compacted that revision' });
      } finally {
        live?.close();
      }
    });
}

/** The flag of each target field. */
const FLAGS: Record<string, string> = { '/target/revision': '--to-revision', '/target/time': '--to-time', '/target/beforeDeletionOf': '--before-deletion-of' };

function targetOf(o: ReplayOptions): ReplayTarget {
  const given = [o.toRevision !== undefined, o.toTime !== undefined, o.beforeDeletionOf !== undefined].filter(Boolean).length;
  if (given !== 1) throw new ConfigError('--to-revision', 'give exactly one target: --to-revision, --to-time or --before-deletion-of');
  if (o.toRevision !== undefined) return { revision: o.toRevision };
  if (o.toTime !== undefined) return { time: o.toTime };
  return { beforeDeletionOf: o.beforeDeletionOf! };
}

/** What was rebuilt, from what, how fast, and how it compared. */
export function replaySummary(r: ReplayReport, file: string | undefined): string {
  const p = r.plan;
  const s = r.stats;
  const lines = [
    `target: revision ${p.targetRevision} (received ${p.targetTime})`,
    `from backup ${p.backupId} (revision ${p.backupRevision}) and ${p.segments.length} segment(s) of the change log`,
    `replayed ${s.events} event(s) of ${s.revisions} revision(s) in ${s.transactions} transaction(s), ${s.leases} lease(s), ${s.seconds.toFixed(2)} s (${s.eventsPerSecond} events/s)`,
  ];
  if (file) lines.push(`snapshot: ${file} (${r.snapshotBytes} bytes); restore it with etcdutl snapshot restore, or as the runbook's manual restore says`);
  if (r.comparison) {
    const c = r.comparison;
    lines.push(c.difference
      ? `DIFFERS from the live cluster at revision ${p.targetRevision}: key ${c.difference.key} is ${c.difference.replayed} here and ${c.difference.live} there (after ${c.keys} equal keys)`
      : `equal to the live cluster at revision ${p.targetRevision}: ${c.keys} keys, every value`);
  }
  return lines.join('\n');
}
