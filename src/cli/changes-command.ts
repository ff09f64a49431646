import type { Command } from 'commander';
import { readChangeLog, formatChangeLog, type ChangeLogFilter } from '../changes/log.ts';
import { ConfigError } from '../errors/errors.ts';
import { createContext, loadIdentities, requireIdentities, type GlobalOptions } from './context.ts';
import { registerChangesReplayCommand } from './changes-replay-command.ts';
import { addOutputOption, output } from './output.ts';

interface LogOptions {
  prefix?: string;
  since?: string;
  until?: string;
  deleted?: boolean;
  identity?: string;
}

export function registerChangesCommand(program: Command): void {
  const changes = program.command('changes').description('The change log: every etcd change between full backups, as the leader captured it (config changes).');
  const log = changes
    .command('log')
    .description('Print the timeline of captured changes: time, revision, put/delete, key.')
    .option('--prefix <key>', 'only keys that start with this, e.g. /registry/namespaces/')
    .option('--since <time>', 'only changes received at or after this time (RFC 3339, e.g. 2026-11-24T03:00:00Z)')
    .option('--until <time>', 'only changes received before this time')
    .option('--deleted', 'only deletes')
    .option('--identity <file>', 'age identity file to decrypt the segments (default: encryption.identityFile)');
  addOutputOption(log, 'the events and the gaps, as {events, gaps}')
    .addHelpText('after', `
Every segment manifest's signature and the chain of segments are checked first; a missing or
replaced segment is an error. Revisions etcd compacted before they were captured are named as
gaps (a full backup was taken at once). A segment decrypts with the stock tools too:
  age -d -i key.txt segment.jsonl.zst.age | zstd -d

Examples:
  lifeboat changes log --prefix /registry/namespaces/ --deleted
  lifeboat changes log --since 2026-11-24T03:00:00Z --until 2026-11-24T04:00:00Z -o json`)
    .action(async (options: LogOptions, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const identities = requireIdentities(await loadIdentities(ctx, options.identity), 'reading the change log');
      const filter: ChangeLogFilter = {
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
        ...(options.since === undefined ? {} : { since: timeOption(options.since, '--since') }),
        ...(options.until === undefined ? {} : { until: timeOption(options.until, '--until') }),
        ...(options.deleted ? { deletedOnly: true } : {}),
      };
      const read = await readChangeLog({ store: ctx.store, trust: ctx.signing.trust, decrypt: ctx.decrypt }, ctx.config.cluster, identities, filter);
      out.data({ events: read.entries, gaps: read.gaps }, () => out.line(formatChangeLog(read).trimEnd()));
    });
  registerChangesReplayCommand(changes);
}

function timeOption(value: string, flag: string): Date {
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(at.getTime())) throw new ConfigError(flag, `"${value}" is not an RFC 3339 time (e.g. 2026-11-24T03:00:00Z)`);
  return at;
}
