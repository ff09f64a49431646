import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * Whether `local` is a mount point, which cannot be renamed (EBUSY): etcd's data dir is often a
 * disk of its own, or a bind mount. A different device than its parent's shows a mount of another
 * filesystem; a bind mount from the same filesystem has the same device, so the mount table of
 * this process's mount namespace (/proc/self/mountinfo) is asked too.
 */
export async function isMountPoint(local: string): Promise<boolean> {
  let real: string;
  try {
    real = await realpath(local);
    const [self, parent] = await Promise.all([stat(real), stat(path.dirname(real))]);
    if (self.dev !== parent.dev) return true;
  } catch {
    return false;
  }
  const table = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return mountPoints(table).has(real);
}

/** The mount points in a /proc/self/mountinfo text (field 5, with its octal escapes undone). */
export function mountPoints(mountinfo: string): Set<string> {
  const points = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))));
  }
  return points;
}
