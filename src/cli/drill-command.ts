import type { Command } from 'commander';
import { drillWithChangeLog, type ChangeLogDrill } from '../changes/drill-replay.ts';
import { etcdClient } from '../etcd/client.ts';
import type { DrillReport } from '../verify/drill.ts';
import { checkAndRecord } from '../verify/record.ts';
import { createContext, loadIdentities, requireIdentities, untilInterrupted, type GlobalOptions } from './context.ts';
import { addOutputOption, output } from './output.ts';

const HELP = `
A drill proves that a backup restores, before anyone needs it:
  1. download and decrypt the archive, 2. checking every hash on the way;
  3. etcdutl snapshot restore into a private scratch dir (drill.scratchDir, default the OS temp
     dir; it needs about twice the database size);
  4. start a throwaway etcd (unix sockets in the scratch dir, no TCP port) until it has a leader;
  5. check its revision, its key count and its /registry/ key count against the manifest;
  6. when the store holds a change log after the backup: replay its events onto that etcd up
     to the newest revision it holds, as a restore to a point would, and compare every key
     and value with the live cluster (etcd.endpoints) at that revision; a difference fails the
     drill, a live cluster that has compacted that revision or cannot be reached only skips
     the comparison (--no-change-log, or drill.changeLog: false, leaves the log out);
  7. stop that etcd and remove the scratch dir, whatever happened.
The result, passed or failed, is recorded beside the backup (see \`lifeboat list\`).
It needs an age identity, the etcd binary (tools.etcd) and etcdutl 3.5+ (tools.etcdutl).
Ctrl-C stops the drill and still cleans up. Progress is logged as JSON lines on stderr.

Examples:
  lifeboat drill latest --identity /root/lifeboat-key.txt
  lifeboat drill 20261124T033000.123Z-r12345 -o json`;

export function registerDrillCommand(program: Command): void {
  const command = program
    .command('drill')
    .argument('<id>', 'a backup id, or "latest"')
    .description('Restore drill: restore a backup into a throwaway etcd and check its revision and key counts against the manifest.')
    .option('-i, --identity <file>', 'age identity file (default: encryption.identityFile)')
    .option('--scratch-dir <dir>', 'where the scratch dir is made (default: drill.scratchDir, else the OS temp dir)')
    .option('--no-change-log', 'drill the backup alone, without replaying the change log after it');
  addOutputOption(command, 'the drill report, with the recorded check as "verification" and the change log\'s replay as "changeLog"')
    .addHelpText('after', HELP)
    .action(async (id: string, options: { identity?: string; scratchDir?: string; changeLog: boolean }, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const identities = requireIdentities(await loadIdentities(ctx, options.identity), 'a drill');
      const stored = await ctx.catalog.resolve(id);
      const scratchDir = options.scratchDir ?? ctx.config.drill.scratchDir;
      const changeLog = options.changeLog && ctx.config.drill.changeLog;
      const { report, record } = await untilInterrupted((signal) =>
        checkAndRecord(ctx.catalog, stored.backupId, 'drill', () =>
          drillWithChangeLog(
            { store: ctx.store, decrypt: ctx.decrypt, exec: ctx.exec, log: ctx.log, trust: ctx.signing.trust },
            stored,
            {
              identities,
              etcdutl: ctx.config.tools.etcdutl,
              etcd: ctx.config.tools.etcd,
              startTimeoutSeconds: ctx.config.drill.startTimeoutSeconds,
              signal,
              cluster: ctx.config.cluster,
              changeLog,
              leaseTtlSeconds: ctx.config.changes.replayLeaseTtlSeconds,
              connectLive: () => etcdClient({ endpoints: ctx.config.etcd.endpoints, tls: ctx.config.etcd.tls, dialTimeoutMs: 5000 }),
              ...(scratchDir === undefined ? {} : { scratchDir }),
            },
          ),
        ctx.log),
      );
      out.data({ ...report, verification: record }, () => out.line(`${drillSummary(report)}\n${changeLogSummary(report.changeLog)}`));
    });
}

/** One line: what was restored and how it compares with the manifest. */
export function drillSummary(r: DrillReport): string {
  const counts = `${r.keyCount} keys, ${r.registryKeyCount} under /registry/`;
  const against = r.expected.keyCount === undefined
    ? 'the manifest has no key counts (an older backup), so only their presence was checked'
    : 'as the manifest says';
  return `backup ${r.backupId}: drill OK (restored into etcd at revision ${r.revision}; ${counts} at revision ${r.expected.revision}, ${against}; ${r.durationSeconds.toFixed(1)} s)`;
}

/** One line: what the drill did with the change log after the backup. */
export function changeLogSummary(c: ChangeLogDrill): string {
  if (!c.replayed) return `change log: not replayed: ${c.skipped}`;
  const s = c.stats;
  const replayed = `change log: replayed ${s.events} event(s) from ${c.segments} segment(s) to revision ${c.targetRevision} (received ${c.targetTime}) at ${s.eventsPerSecond} events/s`;
  const compared = 'skipped' in c.comparison ? `not compared with the live cluster: ${c.comparison.skipped}` : `equal to the live cluster at that revision: ${c.comparison.keys} keys, every value`;
  return `${replayed}; ${compared}`;
}
