import { readFile, readdir, rm, stat, writeFile, mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { stopLeftover } from '../etcd/throwaway.ts';

/**
 * A drill's scratch dir holds a decrypted snapshot (every Secret of the cluster) and the data of
 * a throwaway etcd. A drill removes it, and stops that etcd, however it ends, unless its process
 * is killed outright (SIGKILL, the OOM killer): then both outlive it. So every scratch dir
 * records its owner (PID and start time of the Lifeboat process) and, once started, the etcd's
 * PID; the next drill in the same scratch root removes the dirs whose owner is gone, and stops
 * their etcd, identified by its PID *and* its command line naming that dir's data dir (stopLeftover).
 */
const SCRATCH_PREFIX = 'lifeboat-drill-';
const OWNER_FILE = 'owner.json';
/** A dir without an owner file (its process died right after making it) is stale after this. */
const UNOWNED_STALE_MS = 3600_000;

interface Owner {
  pid: number;
  /** This process's start, epoch ms: with the PID, tells this process from a later one with its PID. */
  since: number;
  etcdPid?: number;
}

const me = (): Owner => ({ pid: process.pid, since: Math.round(performance.timeOrigin) });

/** What a drill keeps in its scratch dir; `sockets` is the throwaway etcd's socket dir. */
export function scratchFiles(dir: string): { snapshot: string; data: string; log: string; sockets: string } {
  return { snapshot: path.join(dir, 'snapshot.db'), data: path.join(dir, 'data'), log: path.join(dir, 'etcd.log'), sockets: path.join(dir, 'sock') };
}

/** A new private (0700) scratch dir under `root`, recorded as this process's. */
export async function makeScratch(root: string): Promise<string> {
  const dir = await mkdtemp(path.join(root, SCRATCH_PREFIX));
  await writeOwner(dir, me());
  return dir;
}

/** Records the throwaway etcd's PID, so that a later drill can stop it if this process dies. */
export async function recordEtcd(dir: string, etcdPid: number): Promise<void> {
  await writeOwner(dir, { ...me(), etcdPid });
}

async function writeOwner(dir: string, owner: Owner): Promise<void> {
  await writeFile(path.join(dir, OWNER_FILE), `${JSON.stringify(owner)}\n`, { mode: 0o600 });
}

/** Removes the scratch dirs under `root` left by drills whose process is gone, and stops their etcd. */
export async function sweepScratch(root: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(root)).filter((n) => n.startsWith(SCRATCH_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = path.join(root, name);
    const owner = await readOwner(dir);
    if (owner === undefined) continue;
    if (owner === 'none') {
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory() || Date.now() - info.mtimeMs < UNOWNED_STALE_MS) continue;
    } else if (ownerAlive(owner)) {
      continue;
    }
    const etcdPid = owner === 'none' ? undefined : owner.etcdPid;
    const killed = await stopLeftover(etcdPid, scratchFiles(dir).data);
    await rm(dir, { recursive: true, force: true });
    log.warn({ phase: 'drill-leftover', scratch: dir, ...(killed ? { killedEtcdPid: etcdPid } : {}) }, killed ? 'removed the scratch dir of a drill whose process died, and stopped its etcd' : 'removed the scratch dir of a drill whose process died');
  }
}

/** The owner, `none` when the dir has no owner file, undefined when it is not ours to judge. */
async function readOwner(dir: string): Promise<Owner | 'none' | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dir, OWNER_FILE), 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'none' : undefined;
  }
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    if (!Number.isInteger(o.pid) || !Number.isFinite(o.since)) return undefined;
    return { pid: o.pid!, since: o.since!, ...(Number.isInteger(o.etcdPid) ? { etcdPid: o.etcdPid! } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * Whether the owning process may still run. This process is judged by its start time too (a
 * container's Lifeboat often has the same PID after a restart); another live PID is assumed to
 * be the owner.
 */
function ownerAlive(owner: Owner): boolean {
  if (owner.pid === process.pid) return Math.abs(owner.since - me().since) < 2000;
  return running(owner.pid);
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
