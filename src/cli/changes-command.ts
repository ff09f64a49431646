import type { Command } from 'commander';
import { readChangeLog, formatChangeLog, type ChangeLogFilter } from '../changes/log.ts';
import { verifyChangeLog } from '../changes/verify.ts';
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

  const verify = changes
    .command('verify')
    .description('Check the whole change log without a key: each segment manifest\'s signature, the chain of segments, and each segment\'s size and sha256.');
  addOutputOption(verify, '{segments, events, bytes, firstRevision, lastRevision, lastTime, gaps}')
    .addHelpText('after', `
Needs no age identity: the manifests are signed (signing.keyFile's public key, or
signing.publicKeyFiles) and name the previous segment by the sha256 of its manifest, and each
names its data object's size and sha256. Exits 1 naming the first segment that is missing,
added, replaced or changed.

Examples:
  lifeboat changes verify
  lifeboat changes verify -o json`)
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const check = await verifyChangeLog(ctx.store, ctx.config.cluster, ctx.signing.trust);
      out.data(check, () => {
        out.line(check.segments === 0
          ? 'change log: no segment is committed'
          : `change log OK: ${check.segments} segment(s), ${check.events} event(s), revisions ${check.firstRevision}-${check.lastRevision} (last received ${check.lastTime}), ${check.bytes} bytes; every signature, link, size and sha256 checked`);
        for (const g of check.gaps) out.line(`note: revisions ${g.from}-${g.to} are not in the log (etcd had compacted them before they were captured); a full backup was taken instead`);
      });
    });
}

function timeOption(value: string, flag: string): Date {
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(at.getTime())) throw new ConfigError(flag, `"${value}" is not an RFC 3339 time (e.g. 2026-11-24T03:00:00Z)`);
  return at;
}
