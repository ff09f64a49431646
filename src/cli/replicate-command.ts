import type { Command } from 'commander';
import { ConfigError, LifeboatError } from '../errors/errors.ts';
import { replicate } from '../replicate/replicate.ts';
import { Catalog } from '../store/catalog.ts';
import { createStore } from '../store/create-store.ts';
import { createContext, type GlobalOptions } from './context.ts';
import { addOutputOption, formatBytes, output } from './output.ts';

const HELP = `
The copy goes to secondaryStore in the config: s3 (another bucket, zone or endpoint, with the
same settings as store.s3) or fs. Each backup is copied like a backup is written: the archive is
streamed (never held whole in memory), its size and sha256 are checked against the manifest, and
only then is the manifest written, which commits the copy. A failed or interrupted copy never
shows in the secondary store; what an interrupted one left there (an archive without a manifest,
an unfinished multipart upload older than backup.orphanMinAgeSeconds) is removed first.

Backups the secondary store already has are skipped, so running it again copies only what is
new. A backup that cannot be copied does not stop the others; the command then exits 1 and names
it. Progress is logged as JSON lines on stderr.

To verify or restore from the copy, use a config whose store is the secondary store:
  lifeboat --config secondary.yaml verify latest

Examples:
  lifeboat replicate --config /etc/lifeboat/config.yaml
  lifeboat replicate 20261124T033000.123Z-r12345 -o json`;

export function registerReplicateCommand(program: Command): void {
  const command = program
    .command('replicate')
    .argument('[ids...]', 'backup ids to copy (default: every committed backup the secondary store lacks)')
    .description('Copy the committed backups that the secondary store (secondaryStore) lacks: archive first, checked against its manifest, manifest last.')
;
  addOutputOption(command, 'the report: source, target, copied, present, failed')
    .addHelpText('after', HELP)
    .action(async (ids: string[], _options: unknown, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const { config, log } = ctx;
      if (!config.secondaryStore) {
        throw new ConfigError('/secondaryStore', 'no secondary store is configured, so there is nowhere to copy the backups to', {
          hint: 'add a secondaryStore section to the config: s3 for another bucket, zone or endpoint, or fs for a directory',
        });
      }
      const target = createStore(config.secondaryStore);
      const olderThan = new Date(Date.now() - config.backup.orphanMinAgeSeconds * 1000);
      const leftovers = await new Catalog(target, config.cluster, { trust: ctx.signing.trust }).cleanup(olderThan);
      log.info({ phase: 'cleanup', store: target.description, orphans: leftovers.orphans, incomplete: leftovers.incomplete }, 'removed what interrupted copies left in the secondary store');

      const report = await replicate({ source: ctx.store, target, trust: ctx.signing.trust, log }, config.cluster, ids.length > 0 ? { ids } : {});
      const bytes = report.copied.reduce((n, c) => n + c.bytes, 0);
      out.data({ source: ctx.store.description, target: target.description, ...report }, () => {
        for (const c of report.copied) out.line(`copied  ${c.id}  ${formatBytes(c.bytes)} in ${c.seconds} s`);
        for (const f of report.failed) out.line(`FAILED  ${f.id}  ${f.message}`);
        out.line(`${report.copied.length} copied (${formatBytes(bytes)}), ${report.present.length} already there, ${report.failed.length} failed: ${ctx.store.description} -> ${target.description}`);
      });
      const [first] = report.failed;
      if (first) {
        const total = report.copied.length + report.present.length + report.failed.length;
        throw new LifeboatError(first.code, `${report.failed.length} of ${total} backups could not be copied to ${target.description}; first ${first.id}: ${first.message}`, {
          hint: 'fix the cause and run `lifeboat replicate` again; it copies only what is missing',
        });
      }
    });
}
