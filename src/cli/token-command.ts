import { appendFile, readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { generateToken, parseTokens, ROLES, TOKEN_NAME_RE, tokenLine } from '../api/tokens.ts';
import { loadConfig } from '../config/load.ts';
import type { Role } from '../config/schema.ts';
import { ConfigError, ConflictError } from '../errors/errors.ts';
import type { GlobalOptions } from './context.ts';

/** `lifeboat token create`: a new API bearer token, shown once; only its hash is kept. */
export function registerTokenCommand(program: Command): void {
  const token = program
    .command('token')
    .description('Manage the API bearer tokens (api.tokensFile).');

  token
    .command('create')
    .description('Make a new random API token for a role, print it once on stdout, and append its sha256 line to the tokens file (created with mode 0600). The daemon picks it up without a restart.')
    .addOption(new Option('--role <role>', 'viewer (GET), operator (+ backup, verify, delete) or restorer (+ restore)').choices([...ROLES]).makeOptionMandatory())
    .requiredOption('--name <name>', 'who the token is for; shown in audit lines and as the requester of its jobs (letters, digits, . _ @ : + -)')
    .option('--tokens-file <file>', 'the tokens file (default: api.tokensFile of the config)')
    .addHelpText('after', `
The token is printed only now; keep it like a password. To revoke it, delete its line (the name
is the last field) from the tokens file.

Examples:
  lifeboat token create --role operator --name ci-pipeline > /root/lifeboat-ci.token
  curl --cacert ca.crt -H "Authorization: Bearer $(cat /root/lifeboat-ci.token)" https://cp-1:8443/v1/backups
  lifeboat token create --role viewer --name grafana --tokens-file /etc/lifeboat/tokens`)
    .action(async (options: { role: Role; name: string; tokensFile?: string }, cmd: Command) => {
      if (!TOKEN_NAME_RE.test(options.name)) {
        throw new ConfigError('--name', `"${options.name}" must be 1 to 100 letters, digits and . _ @ : + -, starting with a letter or digit`);
      }
      const file = options.tokensFile ?? loadConfig({ file: cmd.optsWithGlobals<GlobalOptions>().config }).api.tokensFile;
      if (file === undefined) {
        throw new ConfigError('--tokens-file', 'no tokens file: pass --tokens-file or set api.tokensFile in the config');
      }
      let existing = '';
      try {
        existing = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError('--tokens-file', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      // A file the daemon would refuse is not appended to.
      if (parseTokens(existing, file).some((entry) => entry.name === options.name)) {
        throw new ConflictError(`${file} already has a token named ${options.name}`, { hint: 'choose another --name, or delete that line first to replace it' });
      }
      const secret = generateToken();
      const prefix = existing === '' || existing.endsWith('\n') ? '' : '\n';
      try {
        await appendFile(file, `${prefix}${tokenLine(secret, options.role, options.name)}\n`, { mode: 0o600 });
      } catch (err) {
        throw new ConfigError('--tokens-file', `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      process.stderr.write(`lifeboat: added token "${options.name}" (role ${options.role}) to ${file}; it is shown only now:\n`);
      process.stdout.write(`${secret}\n`);
    });
}
