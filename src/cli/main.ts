#!/usr/bin/env -S node --max-semi-space-size=1
import { CommanderError } from 'commander';
import { describeError, ConfigError, LifeboatError, UnsafePathError } from '../errors/errors.ts';
import { buildProgram } from './program.ts';

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
