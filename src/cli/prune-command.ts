import type { Command } from 'commander';
import { StoreError } from '../errors/errors.ts';
import { prune, type PruneReport } from '../retention/prune.ts';
import { createContext, type GlobalOptions } from './context.ts';
import { addOutputOption, output } from './output.ts';

export function registerPruneCommand(program: Command): void {
  const command = program
    .command('prune')
    .description('Apply the retention policy: delete the backups it does not keep. Backups still under S3 Object Lock are skipped and reported.')
    .option('--dry-run', 'decide and report what would be deleted, delete nothing');
  addOutputOption(command, 'the report: kept (with reasons), deleted, locked, failed')
    .addHelpText('after', `
The policy (config retention) works like restic's forget: keep the newest keepLast backups, plus
the newest backup of each of the last 'hourly' hours, 'daily' days, 'weekly' ISO weeks and
'monthly' months that have one, on the wall clock of daemon.schedules.timezone. The newest backup
and the newest verified one (its last 'lifeboat verify' passed) are always kept. A backup goes
manifest first, so it stops being listed at once. An object still under Object Lock retention or
legal hold is never deleted: it is reported as locked and goes in a later prune. Change-log
segments that end below the revision of the oldest backup left go too, oldest first. Exit code 1
only if a delete failed; the others are still pruned.

Examples:
  lifeboat prune --dry-run
  lifeboat prune --dry-run -o yaml
  lifeboat prune --config /etc/lifeboat/config.yaml`)
    .action(async (options: { dryRun?: boolean }, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const changes = { store: ctx.store, cluster: ctx.config.cluster, now: () => new Date() };
      const report = await prune({ catalog: ctx.catalog, log: ctx.log, changes }, ctx.config.retention, {
        dryRun: options.dryRun ?? false,
        timeZone: ctx.config.daemon.schedules.timezone,
      });
      out.data(report, () => out.line(summary(report)));
      if (report.failed.length > 0) {
        const [first] = report.failed;
        throw new StoreError(`prune could not delete ${report.failed.length} backup(s), first ${first!.id}: ${first!.message}`, {
          hint: 'the other backups were pruned; fix the store and run `lifeboat prune` again',
        });
      }
    });
}

/** One line: what was (or would be) deleted, what is locked, what is kept. */
export function summary(report: PruneReport): string {
  const total = report.kept.length + report.deleted.length + report.locked.length + report.failed.length;
  const ids = (list: string[]) => (list.length > 0 ? ` (${list.join(', ')})` : '');
  const parts = [`${report.dryRun ? 'dry run: would delete' : 'deleted'} ${report.deleted.length} of ${total} backups${ids(report.deleted)}`];
  if (report.locked.length > 0) {
    const locked = report.locked.map((l) => `${l.id} ${l.retainUntil ? `until ${l.retainUntil}` : ''}${l.legalHold ? `${l.retainUntil ? ', ' : ''}legal hold` : ''}`.trimEnd());
    parts.push(`${report.locked.length} skipped, still under Object Lock${ids(locked)}`);
  }
  if (report.failed.length > 0) parts.push(`${report.failed.length} failed${ids(report.failed.map((f) => f.id))}`);
  parts.push(`kept ${report.kept.length}`);
  const segments = report.segments;
  if (segments && (segments.deleted.length > 0 || segments.locked || segments.failed)) {
    const stopped = segments.locked ? `; stopped at ${segments.locked.id}, still under Object Lock` : segments.failed ? `; stopped at ${segments.failed.id}: ${segments.failed.message}` : '';
    parts.push(`${report.dryRun ? 'would delete' : 'deleted'} ${segments.deleted.length} change segment(s) below revision ${segments.belowRevision}${stopped}`);
  }
  return parts.join('; ');
}
