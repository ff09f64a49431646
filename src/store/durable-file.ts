import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/**
 * Local files written so that a crash or a power cut leaves either the old content or the new,
 * never half of it: a temp file beside the target, written and fsynced, renamed into place, then
 * the directory fsynced so that the rename itself survives.
 *
 * Temp files are hidden (`.name.lifeboat-tmp-*`): the kubelet ignores dot files in its static
 * pod directory, so a half-written manifest is never run.
 */

const TEMP_INFIX = '.lifeboat-tmp-';

/** Whether a directory entry is a temp file of writeFileAtomic (left by a crash, safe to remove). */
export function isAtomicTemp(name: string): boolean {
  return name.startsWith('.') && name.includes(TEMP_INFIX);
}

export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `file` with exactly `mode` (not the umask's), atomically. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}${TEMP_INFIX}${randomBytes(4).toString('hex')}`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.chmod(mode);
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await syncDir(dir);
}
