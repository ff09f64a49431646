import { readFile } from 'node:fs/promises';
import { ConfigError, KeyError } from '../errors/errors.ts';
import { parseIdentityFile } from './age.ts';

/**
 * The age identities of an identity file (`AGE-SECRET-KEY-1...` lines, as `lifeboat keygen` and
 * `age-keygen` write them). An unreadable file is a ConfigError naming `field` (the setting or
 * flag that named the file); a file without identities is a KeyError.
 */
export async function readIdentityFile(file: string, field: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(field, `cannot read identity file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const identities = parseIdentityFile(text, file);
  if (identities.length === 0) throw new KeyError(`identity file ${file} holds no AGE-SECRET-KEY-1 line`);
  return identities;
}
