import { Command, Option, type OutputConfiguration } from 'commander';
import { BUILD_INFO } from '../build-info.ts';
import { registerBackupCommands } from './commands.ts';
import { registerServeCommand } from './serve-command.ts';
import { registerPruneCommand } from './prune-command.ts';
import { registerDrillCommand } from './drill-command.ts';
import { registerReplicateCommand } from './replicate-command.ts';
import { registerClientCommands } from './client-commands.ts';
import { registerTokenCommand } from './token-command.ts';
import { registerRestoreCommand } from './restore-command.ts';
import { registerVersionCommand } from './version-command.ts';
import { registerCompletionCommand } from './completion-command.ts';
import { registerChangesCommand } from './changes-command.ts';

const EXAMPLES = `
Examples:
  # one-time: make a key pair; keep key.txt offline, put the age1... recipient in the config
  lifeboat keygen --output /root/lifeboat-key.txt
  # and the key that signs each manifest (signing.keyFile); its .pub verifies them elsewhere
  lifeboat keygen --signing --output /etc/lifeboat/signing/signing.key

  # back up this control plane's etcd and recovery kit
  lifeboat backup --config /etc/lifeboat/config.yaml

  # what is there, and is the newest one good?
  lifeboat list
  lifeboat verify latest                                  # integrity, no key needed
  lifeboat verify latest --identity /root/lifeboat-key.txt   # decrypt and check everything

  # unpack a backup for a restore
  lifeboat extract latest --to /root/restore --identity /root/lifeboat-key.txt

Config: YAML, see README.md; every setting can be overridden with LIFEBOAT_<SECTION>__<KEY>,
e.g. LIFEBOAT_STORE__FS__DIR=/backups or LIFEBOAT_ETCD__ENDPOINTS=https://10.0.0.1:2379.
Output: commands that print data take -o table (the default, for people), -o json or -o yaml
(the same data for scripts), e.g. lifeboat list -o json.
Exit codes: 0 ok, 1 the operation failed, 2 bad config or usage.`;

/**
 * The whole CLI, every command registered. `output` replaces where help and data go (stdout and
 * stderr); commands inherit it, so it is set before they are added.
 */
export function buildProgram(output?: OutputConfiguration): Command {
  const program = new Command()
    .name('lifeboat')
    .description('Verified, encrypted, streaming backups of a kubeadm cluster\'s etcd and recovery kit.')
    .version(BUILD_INFO.version)
    .option('-c, --config <file>', 'config file (default: $LIFEBOAT_CONFIG, else /etc/lifeboat/config.yaml if present, else built-in defaults)')
    .addOption(new Option('--log-level <level>', 'log level for the JSON logs on stderr').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText('after', EXAMPLES);
  if (output) program.configureOutput(output);
  registerBackupCommands(program);
  registerServeCommand(program);
  registerPruneCommand(program);
  registerDrillCommand(program);
  registerReplicateCommand(program);
  registerClientCommands(program);
  registerTokenCommand(program);
  registerRestoreCommand(program);
  registerVersionCommand(program);
  registerCompletionCommand(program);
  registerChangesCommand(program);
  return program;
}
