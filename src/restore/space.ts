import { statfs } from 'node:fs/promises';
import { ConfigError } from '../errors/errors.ts';

/**
 * Fails early, naming the setting (`field`), when `dir`'s file system has less than `needed`
 * bytes free for `what`. A path that cannot be stat'ed yet is left to the write that follows.
 */
export async function checkSpace(dir: string, needed: number, field: string, what: string, hint = 'free some space, then apply again'): Promise<void> {
  const fs = await statfs(dir).catch(() => undefined);
  if (!fs) return;
  const free = fs.bavail * fs.bsize;
  if (free < needed) {
    throw new ConfigError(field, `${dir} has ${Math.floor(free / 2 ** 20)} MiB free, but ${what} needs about ${Math.ceil(needed / 2 ** 20)} MiB`, { hint });
  }
}
