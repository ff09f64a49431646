import { lstat, readdir, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError } from '../errors/errors.ts';
import { syncDir, writeFileAtomic } from '../store/durable-file.ts';

/**
 * File operations on the host that survive a crash or a power cut at any point: every change is
 * a rename of a fully written, fsynced file or directory, followed by an fsync of the directory
 * that holds it (writeFileAtomic and syncDir, src/store/durable-file.ts). Each one is
 * idempotent: it looks at what exists and finishes what an earlier, interrupted attempt started.
 */

/** rename(2), then fsync of both directories. */
export async function renameDurable(from: string, to: string): Promise<void> {
  await rename(from, to);
  await syncDir(path.dirname(to));
  if (path.dirname(from) !== path.dirname(to)) await syncDir(path.dirname(from));
}

export async function exists(p: string): Promise<boolean> {
  return lstat(p).then(() => true, () => false);
}

/** `dev:ino`, which a rename keeps: how a restored dir is recognised after it was moved. */
export async function identity(p: string): Promise<string | undefined> {
  return stat(p).then((s) => `${s.dev}:${s.ino}`, () => undefined);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)]);
  return x.equals(y);
}

/**
 * Moves `src` to `dest` (another directory, maybe another file system): copy with its mode,
 * fsync, rename into place, then unlink `src`. Resumable: `dest` present and `src` gone is done;
 * both present with the same bytes is a crash after the copy, so `src` is unlinked.
 */
export async function moveOut(src: string, dest: string): Promise<'moved' | 'already'> {
  const [hasSrc, hasDest] = await Promise.all([exists(src), exists(dest)]);
  if (!hasSrc && hasDest) return 'already';
  if (!hasSrc && !hasDest) throw new ConflictError(`${src} is gone and was not set aside to ${dest}`, { hint: 'put the file back by hand, or roll the restore back' });
  if (hasDest) {
    if (!(await sameBytes(src, dest))) {
      throw new ConflictError(`${src} and its set-aside copy ${dest} differ: something changed the manifest during the restore`, { hint: 'compare them, keep the right one in the manifests dir, and apply again' });
    }
  } else {
    await writeFileAtomic(dest, await readFile(src), (await stat(src)).mode & 0o7777);
  }
  await unlink(src);
  await syncDir(path.dirname(src));
  return 'moved';
}

export interface SwapPaths {
  /** The live data (the data dir, or its member/). */
  live: string;
  /** The restored counterpart. */
  incoming: string;
  /** Where the old data goes. */
  aside: string;
}

/**
 * Puts `incoming` in place of `live`, moving `live` to `aside`; never deletes. `restored` is the
 * identity of `incoming` recorded when it was made, which tells a finished swap (live is the
 * restored dir) from one not started. Every crash point resumes:
 *
 *   incoming  live  aside
 *   yes       yes   no     → live→aside, incoming→live
 *   yes       no    yes    → incoming→live                (crashed between the renames)
 *   yes       no    no     → incoming→live                (there was no old data)
 *   no        yes   any    → done, if live is the restored dir; else a conflict
 */
export async function swapIn(p: SwapPaths, restored: string | undefined): Promise<'swapped' | 'already'> {
  const [hasIncoming, hasLive, hasAside] = await Promise.all([exists(p.incoming), exists(p.live), exists(p.aside)]);
  if (!hasIncoming) {
    if (hasLive && restored !== undefined && (await identity(p.live)) === restored) return 'already';
    throw new ConflictError(`the restored data ${p.incoming} is missing and ${p.live} is not the restored data`, { hint: 'apply again to redo the restore-snapshot step (it is re-run when its output is gone), or roll back' });
  }
  if (hasLive) {
    if (hasAside) throw new ConflictError(`${p.live}, ${p.aside} and ${p.incoming} all exist: refusing to guess which data is which`, { hint: 'inspect them; move the wrong one away by hand; apply again' });
    await renameDurable(p.live, p.aside);
  }
  await renameDurable(p.incoming, p.live);
  return 'swapped';
}

/** Removes `dir` if it is an empty directory; anything else is left alone. */
export async function removeIfEmpty(dir: string): Promise<void> {
  try {
    await rmdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
  }
}

/**
 * PIDs of processes whose command line mentions `needle` (a path only this restore uses, like
 * its restore dir). Read from /proc; an empty list where there is no /proc.
 */
export async function processesMentioning(needle: string): Promise<number[]> {
  const entries = await readdir('/proc').catch(() => [] as string[]);
  const found: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`).catch(() => undefined);
    if (cmdline && cmdline.toString().split('\0').some((arg) => arg === needle || arg.includes(`=${needle}`) || arg.startsWith(`${needle}/`))) found.push(Number(entry));
  }
  return found;
}

/**
 * Waits until no process mentions `needle` (an etcdutl left running by a killed daemon is still
 * writing there). Returns at once when none does; a ConflictError naming them after `timeoutMs`.
 */
export async function waitUntilUnused(needle: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await processesMentioning(needle);
    if (pids.length === 0) return;
    if (Date.now() > deadline) {
      throw new ConflictError(`process ${pids.join(', ')} still uses ${needle}`, { hint: 'an earlier attempt is still running: wait for it to finish, or stop it, then apply again' });
    }
    await sleep(200, undefined, signal ? { signal } : {});
  }
}
