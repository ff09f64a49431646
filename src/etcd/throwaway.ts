import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { CancelledError, ToolError } from '../errors/errors.ts';
import type { Executor, ProcessExit } from '../exec/executor.ts';
import { acceptsConnections, freePorts } from '../exec/ports.ts';

/**
 * A throwaway etcd: etcd on a data dir that `etcdutl snapshot restore` made (a restore drill's,
 * a restore's dry run, a fresh restore's lease cleanup), serving alone on 127.0.0.1, plain HTTP,
 * on two ports free at that moment, and no other listener (no --listen-metrics-urls). Flags such
 * as --initial-cluster are not passed: etcd ignores them on a data dir that already has a member.
 *
 * Its PID reaches the caller before any wait, so that should this process be killed outright, a
 * later one can stop it with `stopLeftover`, which knows it by that PID and its `--data-dir`.
 */

/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 10_000;
const POLL_MS = 100;
const CALL_MS = 2000;

export interface LoopbackUrls {
  client: string;
  peer: string;
}

/** A client and a peer URL on 127.0.0.1, on two ports free at this moment. */
export async function loopbackUrls(): Promise<LoopbackUrls> {
  const [client, peer] = (await freePorts(2)) as [number, number];
  return { client: `http://127.0.0.1:${client}`, peer: `http://127.0.0.1:${peer}` };
}

/** An etcd3 client of a throwaway etcd: one loopback endpoint, no TLS. */
export function loopbackClient(endpoint: string): Etcd3 {
  return new Etcd3({ hosts: endpoint, dialTimeout: CALL_MS, grpcOptions: { 'grpc.max_receive_message_length': 64 << 20 } });
}

export interface ThrowawayEtcd<C> {
  pid: number;
  endpoint: string;
  /** Connected; it saw a leader. */
  client: C;
  /** Closes the client, then stops etcd (SIGTERM, SIGKILL after 10 s); resolves once it has exited. */
  stop(): Promise<void>;
}

export interface ThrowawayOptions<C extends { close(): void }> {
  exec: Executor;
  /** The etcd server binary (tools.etcd). */
  etcd: string;
  name: string;
  dataDir: string;
  /** etcd's output (its zap JSON log), quoted when it fails. */
  logFile: string;
  /** Free loopback ports by default. */
  urls?: LoopbackUrls;
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
 * Starts a throwaway etcd and waits until it has a leader: first for its client port to accept
 * connections (a gRPC client that fails to connect backs off for seconds), then for `hasLeader`.
 * An exit or the deadline is a ToolError quoting etcd's own last error; on any failure (an abort
 * too) etcd is stopped before this rejects.
 */
export async function startThrowawayEtcd<C extends { close(): void }>(o: ThrowawayOptions<C>): Promise<ThrowawayEtcd<C>> {
  const urls = o.urls ?? (await loopbackUrls());
  const args = [
    `--name=${o.name}`,
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${urls.client}`,
    `--advertise-client-urls=${urls.client}`,
    `--listen-peer-urls=${urls.peer}`,
    ...(o.forceNewCluster ? ['--force-new-cluster'] : []),
    '--logger=zap',
    '--log-outputs=stderr',
  ];
  const child = await o.exec.start(o.etcd, args, { output: o.logFile });
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
  };
  try {
    await o.started?.(child.pid);
    const { hostname, port } = new URL(urls.client);
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
      if (await acceptsConnections(hostname, Number(port))) {
        client ??= o.connect(urls.client);
        try {
          if (await o.hasLeader(client, new Date(Math.min(until, Date.now() + CALL_MS)))) return { pid: child.pid, endpoint: urls.client, client, stop };
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
 * SIGKILL after 10 s. Resolves once it is gone, with whether it was running.
 */
export async function stopLeftover(pid: number | undefined, dataDir: string): Promise<boolean> {
  if (pid === undefined || !(await runsOn(pid, dataDir)) || !send(pid, 'SIGTERM')) return false;
  const kill = Date.now() + STOP_GRACE_MS;
  // A process that cannot be killed (stuck in the kernel) is given up on after a second grace.
  const giveUp = kill + STOP_GRACE_MS;
  let killed = false;
  while ((await runsOn(pid, dataDir)) && Date.now() < giveUp) {
    if (!killed && Date.now() > kill) killed = send(pid, 'SIGKILL');
    await sleep(POLL_MS);
  }
  return true;
}

/** Whether `pid` runs with `--data-dir=<dataDir>` (a zombie's command line is empty: it does not). */
async function runsOn(pid: number, dataDir: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0').includes(`--data-dir=${dataDir}`);
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
