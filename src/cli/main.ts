#!/usr/bin/env -S node --max-semi-space-size=1
import { Command, CommanderError, Option } from 'commander';
import { BUILD_INFO } from '../build-info.ts';
import { describeError, ConfigError, LifeboatError, UnsafePathError } from '../errors/errors.ts';
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
Exit codes: 0 ok, 1 the operation failed, 2 bad config or usage.`;

export function buildProgram(): Command {
  const program = new Command()
    .name('lifeboat')
    .description('Verified, encrypted, streaming backups of a kubeadm cluster\'s etcd and recovery kit.')
    .version(BUILD_INFO.version)
    .option('-c, --config <file>', 'config file (default: $LIFEBOAT_CONFIG, else /etc/lifeboat/config.yaml if present, else built-in defaults)')
    .addOption(new Option('--log-level <level>', 'log level for the JSON logs on stderr').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .addHelpText('after', EXAMPLES);
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

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`lifeboat: error: ${describeError(err)}\n`);
    if (!(err instanceof LifeboatError) && err instanceof Error && err.stack) {
      process.stderr.write('lifeboat: this is an unexpected error; the details follow for a bug report\n');
      process.stderr.write(`${err.stack}\n`);
    }
    return err instanceof ConfigError || err instanceof UnsafePathError ? 2 : 1;
  }
}

// `lifeboat list | head` closes stdout early; that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});
process.exitCode = await main(process.argv.slice(2));
