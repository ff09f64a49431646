import type { Command } from 'commander';
import { runDrill, type DrillReport } from '../verify/drill.ts';
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
  6. stop that etcd and remove the scratch dir, whatever happened.
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
    .option('--scratch-dir <dir>', 'where the scratch dir is made (default: drill.scratchDir, else the OS temp dir)');
  addOutputOption(command, 'the drill report, with the recorded check as "verification"')
    .addHelpText('after', HELP)
    .action(async (id: string, options: { identity?: string; scratchDir?: string }, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(cmd.optsWithGlobals<GlobalOptions>());
      const identities = requireIdentities(await loadIdentities(ctx, options.identity), 'a drill');
      const stored = await ctx.catalog.resolve(id);
      const scratchDir = options.scratchDir ?? ctx.config.drill.scratchDir;
      const { report, record } = await untilInterrupted((signal) =>
        checkAndRecord(ctx.catalog, stored.backupId, 'drill', () =>
          runDrill(
            { store: ctx.store, decrypt: ctx.decrypt, exec: ctx.exec, log: ctx.log },
            stored,
            {
              identities,
              etcdutl: ctx.config.tools.etcdutl,
              etcd: ctx.config.tools.etcd,
              startTimeoutSeconds: ctx.config.drill.startTimeoutSeconds,
              signal,
              ...(scratchDir === undefined ? {} : { scratchDir }),
            },
          ),
        ctx.log),
      );
      out.data({ ...report, verification: record }, () => out.line(drillSummary(report)));
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
