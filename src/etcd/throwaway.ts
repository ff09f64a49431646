import { lstat, mkdir, readFile, rm, chmod } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3 } from 'etcd3';
import { CancelledError, ConfigError, ToolError, UnsafePathError } from '../errors/errors.ts';
import type { Executor, ProcessExit } from '../exec/executor.ts';
import { acceptsUnixConnections } from '../exec/ports.ts';
import { etcdClient } from './client.ts';

/**
 * A throwaway etcd: etcd on a data dir that `etcdutl snapshot restore` made (a restore drill's,
 * a restore's dry run, a fresh restore's lease cleanup). That data holds every Secret of the
 * cluster, so it answers Lifeboat alone: it listens on no TCP port, only on two unix sockets in
 * a directory of its own (the socket dir, mode 0700, owned by Lifeboat's user, inside a
 * directory of Lifeboat's), which no other user can enter:
 *
 *   <socketDir>/client.sock   clients (gRPC and etcd's HTTP endpoints), plain: the directory is the guard
 *   <socketDir>/peer.sock     peers (a lone member never dials one); etcd binds a peer URL's host
 *                             part, which cannot hold a slash, so etcd runs in the socket dir and
 *                             the peer URL is `unix://peer.sock` (THROWAWAY_PEER_URL)
 *
 * No other listener (no --listen-metrics-urls). The socket dir is made afresh on each start
 * (whatever a crash left there is removed first) and removed on stop. Flags such as
 * --initial-cluster are not passed: etcd ignores them on a data dir that already has a member.
 *
 * Its PID reaches the caller before any wait, so that should this process be killed outright, a
 * later one can stop it with `stopLeftover`, which knows it by that PID and its `--data-dir`,
 * and then removes its socket dir.
 */

/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 10_000;
const POLL_MS = 100;
const CALL_MS = 2000;

/** The peer URL of a throwaway member, relative to its socket dir (etcd's working directory). */
export const THROWAWAY_PEER_URL = 'unix://peer.sock';
const CLIENT_SOCKET = 'client.sock';
/** etcd wants an advertised client URL of the form host:port; this one names no TCP port, and nothing dials it. */
const ADVERTISED_CLIENT_URL = 'unix://localhost:0';
/** A unix socket's path fits in 108 bytes (sun_path), with its terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** An etcd3 client of a throwaway etcd: its one unix-socket endpoint (`unix:///…/client.sock`), no TLS. */
export function throwawayClient(endpoint: string): Etcd3 {
  return etcdClient({ endpoints: endpoint, dialTimeoutMs: CALL_MS, maxResponseBytes: 64 << 20 });
}

export interface ThrowawayEtcd<C> {
  pid: number;
  /** `unix://<socketDir>/client.sock`. */
  endpoint: string;
  /** Connected; it saw a leader. */
  client: C;
  /** Closes the client, stops etcd (SIGTERM, SIGKILL after 10 s), removes the socket dir; resolves once etcd has exited. */
  stop(): Promise<void>;
}

export interface ThrowawayOptions<C extends { close(): void }> {
  exec: Executor;
  /** More etcd flags (a replay's `--unsafe-no-fsync`, `--max-txn-ops`). */
  extraArgs?: readonly string[];
  /** The etcd server binary (tools.etcd). */
  etcd: string;
  name: string;
  dataDir: string;
  /** etcd's output (its zap JSON log), quoted when it fails. */
  logFile: string;
  /**
   * The socket dir: a path inside a private directory of Lifeboat's, made here (mode 0700)
   * after removing whatever is there, and removed on stop. Its client socket's path must fit a
   * unix socket (107 bytes).
   */
  socketDir: string;
  /** The setting that places the socket dir (a config path such as `/drill/scratchDir`), named when its path is too long. */
  socketSetting: string;
  /** Makes a member of a multi-member restore serve alone (it rewrites the data dir's membership). */
  forceNewCluster?: boolean;
  /** How long etcd may take to have a leader, and the setting that says so (named when it takes longer). */
  timeoutSeconds: number;
  timeoutSetting: string;
  signal?: AbortSignal;
  /** Hears the PID before any wait. */
  started?: (pid: number) => Promise<void>;
  connect: (endpoint: string) => C;
  hasLeader: (client: C, deadline: Date) => Promise<boolean>;
}

/**
 * Starts a throwaway etcd and waits until it has a leader: first for its client socket to accept
 * connections (a gRPC client that fails to connect backs off for seconds), then for `hasLeader`.
 * An exit or the deadline is a ToolError quoting etcd's own last error; on any failure (an abort
 * too) etcd is stopped before this rejects.
 */
export async function startThrowawayEtcd<C extends { close(): void }>(o: ThrowawayOptions<C>): Promise<ThrowawayEtcd<C>> {
  const socket = path.join(o.socketDir, CLIENT_SOCKET);
  const endpoint = `unix://${socket}`;
  await makeSocketDir(o.socketDir, socket, o.socketSetting);
  const args = [
    `--name=${o.name}`,
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${endpoint}`,
    `--advertise-client-urls=${ADVERTISED_CLIENT_URL}`,
    `--listen-peer-urls=${THROWAWAY_PEER_URL}`,
    ...(o.forceNewCluster ? ['--force-new-cluster'] : []),
    ...(o.extraArgs ?? []),
    '--logger=zap',
    '--log-outputs=stderr',
  ];
  const child = await o.exec.start(o.etcd, args, { output: o.logFile, cwd: o.socketDir }).catch(async (err: unknown) => {
    await rm(o.socketDir, { recursive: true, force: true });
    throw err;
  });
  let exit: ProcessExit | undefined;
  void child.exited.then((e) => (exit = e));
  let client: C | undefined;
  const stop = async () => {
    try {
      client?.close();
    } catch {
      // a client that failed to close holds nothing we need
    }
    await child.stop(STOP_GRACE_MS);
    await rm(o.socketDir, { recursive: true, force: true });
  };
  try {
    await o.started?.(child.pid);
    const until = Date.now() + o.timeoutSeconds * 1000;
    for (;;) {
      if (o.signal?.aborted) throw new CancelledError(`starting etcd on ${o.dataDir} was cancelled`);
      if (exit) {
        throw new ToolError(`${o.etcd} exited (${exit.signal ?? `code ${exit.code}`}) before it served ${o.dataDir}: ${await lastError(o.logFile)}`, {
          hint: 'check that tools.etcd is etcd 3.5 or later and can run on this host',
        });
      }
      if (Date.now() > until) {
        throw new ToolError(`${o.etcd} on ${o.dataDir} did not become healthy within ${o.timeoutSeconds} s: ${await lastError(o.logFile)}`, {
          hint: `a big database takes longer: raise ${o.timeoutSetting}`,
        });
      }
      if (await acceptsUnixConnections(socket)) {
        client ??= o.connect(endpoint);
        try {
          if (await o.hasLeader(client, new Date(Math.min(until, Date.now() + CALL_MS)))) return { pid: child.pid, endpoint, client, stop };
        } catch {
          // not serving yet: a new client next time
          client.close();
          client = undefined;
        }
      }
      await sleep(POLL_MS);
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Stops a throwaway etcd that a process killed outright left running, by its recorded PID, and
 * only while that PID runs etcd on `dataDir` (so a reused PID is never signalled): SIGTERM, then
 * SIGKILL after 10 s. Then removes its socket dir, which its command line names. Resolves once
 * it is gone, with whether it was running.
 */
export async function stopLeftover(pid: number | undefined, dataDir: string): Promise<boolean> {
  const args = pid === undefined ? [] : await commandLine(pid);
  if (pid === undefined || !args.includes(`--data-dir=${dataDir}`) || !send(pid, 'SIGTERM')) return false;
  const kill = Date.now() + STOP_GRACE_MS;
  // A process that cannot be killed (stuck in the kernel) is given up on after a second grace.
  const giveUp = kill + STOP_GRACE_MS;
  let killed = false;
  while ((await runsOn(pid, dataDir)) && Date.now() < giveUp) {
    if (!killed && Date.now() > kill) killed = send(pid, 'SIGKILL');
    await sleep(POLL_MS);
  }
  const socketDir = socketDirOf(args);
  if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
  return true;
}

/** `pid`'s arguments; none for a zombie or a process that is gone. */
async function commandLine(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
}

/** Whether `pid` runs with `--data-dir=<dataDir>`. */
async function runsOn(pid: number, dataDir: string): Promise<boolean> {
  return (await commandLine(pid)).includes(`--data-dir=${dataDir}`);
}

/** The socket dir of a throwaway etcd run with these arguments (one from before the socket dir has none). */
function socketDirOf(args: string[]): string | undefined {
  const prefix = '--listen-client-urls=unix://';
  const socket = args.find((a) => a.startsWith(prefix))?.slice(prefix.length);
  return socket !== undefined && path.isAbsolute(socket) && path.basename(socket) === CLIENT_SOCKET ? path.dirname(socket) : undefined;
}

/**
 * Makes the socket dir afresh: removes whatever a crash left at `dir` (a symlink is removed, not
 * followed), makes it with mode 0700, and checks it is a directory of this user that no one
 * else may enter.
 */
async function makeSocketDir(dir: string, socket: string, setting: string): Promise<void> {
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new ConfigError(setting, `the throwaway etcd's socket ${socket} is longer than the ${MAX_SOCKET_PATH} bytes a unix socket path may have`, {
      hint: `point ${setting} at a shorter path`,
    });
  }
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  await chmod(dir, 0o700);
  const info = await lstat(dir);
  if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0) {
    throw new UnsafePathError(dir, `${dir}, the throwaway etcd's socket dir, is not a private directory of this user`);
  }
}

function send(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** etcd's last error from its zap JSON log, else its last line. */
async function lastError(logFile: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return 'no log';
  }
  const lines = text.trim().split('\n').filter(Boolean);
  for (const line of lines.slice(-20).reverse()) {
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      if (entry.level === 'fatal' || entry.level === 'panic' || entry.level === 'error') {
        return cap(entry.error ? `${entry.msg ?? ''}: ${entry.error}` : (entry.msg ?? line));
      }
    } catch {
      // not JSON: etcd failed before its logger was set up
    }
  }
  return cap(lines.at(-1) ?? 'no output');
}

function cap(s: string): string {
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}
