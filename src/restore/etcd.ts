import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Etcd3, IMember } from 'etcd3';
import type { Config } from '../config/schema.ts';
import { CancelledError, ConflictError, EtcdUnavailableError } from '../errors/errors.ts';
import { etcdClient } from '../etcd/client.ts';
import { startThrowawayEtcd, throwawayClient, type ThrowawayEtcd } from '../etcd/throwaway.ts';
import type { Executor } from '../exec/executor.ts';
import { acceptsConnections } from '../exec/ports.ts';
import type { Static } from '@sinclair/typebox';
import type { LeaseCleanupSchema, QuorumSchema } from './journal-model.ts';

export { stopLeftover } from '../etcd/throwaway.ts';

/**
 * How a restore talks to etcd and the apiserver: the live (or restored) cluster over TLS with
 * the client certificate from etcd.tls, a throwaway member on a private unix socket (the
 * restore drill's kind: ../etcd/throwaway.ts), and the apiserver's /readyz.
 */

const POLL_MS = 200;
const CALL_MS = 2000;

type TlsConfig = Config['etcd']['tls'];

export function tlsClient(endpoints: string | string[], tls: TlsConfig): Etcd3 {
  return etcdClient({ endpoints, tls, dialTimeoutMs: CALL_MS, maxResponseBytes: 64 << 20 });
}

const deadline = (ms = CALL_MS) => ({ deadline: new Date(Date.now() + ms) });

/**
 * Runs `attempt` every `intervalMs` until it gives something other than false, and returns that;
 * past `timeoutSeconds`, throws `timedOut()` (which may describe the last attempt). An abort is a
 * CancelledError naming `what`.
 */
async function poll<T>(what: string, timing: { timeoutSeconds: number; intervalMs: number; signal?: AbortSignal | undefined }, attempt: () => Promise<T | false>, timedOut: () => Error): Promise<T> {
  const until = Date.now() + timing.timeoutSeconds * 1000;
  for (;;) {
    if (timing.signal?.aborted) throw new CancelledError(`${what} was cancelled`);
    const result = await attempt();
    if (result !== false) return result;
    if (Date.now() > until) throw timedOut();
    await sleep(timing.intervalMs, undefined, timing.signal ? { signal: timing.signal } : {});
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

/** The cluster's revision from the first endpoint that answers; undefined when none does. */
export async function liveRevision(etcd: Config['etcd']): Promise<string | undefined> {
  for (const endpoint of etcd.endpoints) {
    const { hostname, port } = new URL(endpoint);
    if (!(await acceptsConnections(hostname, Number(port || 2379)))) continue;
    const client = tlsClient(endpoint, etcd.tls);
    try {
      return (await client.maintenance.status(deadline())).header.revision;
    } catch {
      // try the next one
    } finally {
      client.close();
    }
  }
  return undefined;
}

/** Waits until nothing accepts connections on any of `addresses`. */
export async function waitClosed(addresses: { host: string; port: number }[], what: string, timeoutSeconds: number, signal?: AbortSignal): Promise<void> {
  let open: string[] = [];
  await poll(
    `waiting for ${what} to stop`,
    { timeoutSeconds, intervalMs: POLL_MS, signal },
    async () => {
      open = [];
      for (const a of addresses) if (await acceptsConnections(a.host, a.port)) open.push(`${a.host}:${a.port}`);
      return open.length === 0;
    },
    () => new ConflictError(`${what} still accepts connections on ${open.join(', ')} ${timeoutSeconds} s after its manifest was moved out`, {
      hint: 'check that the kubelet is running and watches the manifests dir, and that nothing else uses the port; then apply again',
    }),
  );
}

/** Waits until something accepts connections on `address`. */
export async function waitOpen(address: { host: string; port: number }, what: string, timeoutSeconds: number, signal?: AbortSignal): Promise<void> {
  await poll(
    `waiting for ${what}`,
    { timeoutSeconds, intervalMs: POLL_MS, signal },
    () => acceptsConnections(address.host, address.port),
    () => new EtcdUnavailableError(`${what} does not listen on ${address.host}:${address.port} ${timeoutSeconds} s after its manifest was put back`, {
      hint: 'check the kubelet and the container log (crictl logs); then apply again',
    }),
  );
}

export type QuorumReport = Static<typeof QuorumSchema>;

/**
 * Waits until the restored cluster is whole: a linearizable member list (which needs a quorum)
 * through this node's member holds exactly `names`, every member has started (it published its
 * client URLs), and each one, asked over TLS, has a leader, no alarms or errors, and a revision
 * of at least `targetRevision`.
 */
export async function waitQuorum(opts: { clientURL: string; names: string[]; targetRevision: string; tls: TlsConfig; timeoutSeconds: number; signal?: AbortSignal }): Promise<QuorumReport> {
  const self = new URL(opts.clientURL);
  let problem = 'this member does not listen yet';
  let missing: string[] = [...opts.names];
  return poll(
    'waiting for the etcd quorum',
    { timeoutSeconds: opts.timeoutSeconds, intervalMs: 250, signal: opts.signal },
    async () => {
      if (!(await acceptsConnections(self.hostname, Number(self.port)))) return false;
      const client = tlsClient(opts.clientURL, opts.tls);
      try {
        const list = await client.cluster.memberList({ linearizable: true }, deadline());
        const started = list.members.filter((m: IMember) => m.name !== '' && m.clientURLs.length > 0);
        missing = opts.names.filter((n) => !started.some((m) => m.name === n));
        const extra = list.members.map((m) => m.name).filter((n) => n !== '' && !opts.names.includes(n));
        if (extra.length > 0) throw new ConflictError(`the restored cluster has members the plan does not: ${extra.join(', ')}`);
        if (missing.length > 0) {
          problem = `members not started yet: ${missing.join(', ')}`;
          return false;
        }
        const report = await checkMembers(started, opts.tls, opts.targetRevision);
        if (typeof report !== 'string') return report;
        problem = report;
        return false;
      } catch (err) {
        if (err instanceof ConflictError) throw err;
        problem = `no quorum yet: ${firstLine(err)}`;
        return false;
      } finally {
        client.close();
      }
    },
    () => new EtcdUnavailableError(`the restored etcd has no healthy quorum after ${opts.timeoutSeconds} s: ${problem}`, {
      hint: missing.length > 0 ? `restore the other members from the same plan: run \`lifeboat restore apply --all\` (not restored or not running: ${missing.join(', ')})` : 'check the etcd logs on every member; then apply again',
    }),
  );
}

async function checkMembers(members: IMember[], tls: TlsConfig, target: string): Promise<QuorumReport | string> {
  const report: QuorumReport = { leader: '', revision: '0', members: [] };
  for (const m of members) {
    const url = m.clientURLs.find((u) => u.startsWith('https://')) ?? m.clientURLs[0]!;
    const client = tlsClient(url, tls);
    try {
      const status = await client.maintenance.status(deadline());
      if (status.leader === '0') return `${m.name} has no leader`;
      if (status.errors.length > 0) return `${m.name} reports ${status.errors.join(', ')}`;
      if (BigInt(status.header.revision) < BigInt(target)) return `${m.name} is at revision ${status.header.revision}, below the target ${target}`;
      if (report.leader !== '' && report.leader !== status.leader) return `members disagree on the leader`;
      report.leader = status.leader;
      if (BigInt(status.header.revision) > BigInt(report.revision)) report.revision = status.header.revision;
      report.members.push({ name: m.name, clientURL: url, revision: status.header.revision });
    } catch (err) {
      return `${m.name} (${url}) does not answer: ${firstLine(err)}`;
    } finally {
      client.close();
    }
  }
  const leader = members.find((m) => m.ID === report.leader);
  report.leader = leader?.name ?? report.leader;
  return report;
}

export type LeaseCleanupReport = Static<typeof LeaseCleanupSchema>;

export const MASTER_LEASES = '/registry/masterleases/';
export const NODES = '/registry/minions/';
export const NODE_LEASES = '/registry/leases/kube-node-lease/';
/** kubeadm labels control-plane nodes with one of these; the label key is plain text in JSON and protobuf values alike. */
const CONTROL_PLANE_LABELS = ['node-role.kubernetes.io/control-plane', 'node-role.kubernetes.io/master'];
const PAGE = 100;

/**
 * Removes master leases (`/registry/masterleases/<ip>`) of addresses not in the new member set,
 * and reports control-plane Node objects (`/registry/minions/<name>`) of names not in it;
 * deletes those (and their node leases) only with `deleteNodes`. A dry run deletes nothing.
 * Runs before any apiserver starts on the restored data, so none re-publishes a stale address.
 */
export async function cleanupLeases(client: Etcd3, opts: { keepAddresses: string[]; memberNames: string[]; deleteNodes: boolean; dryRun: boolean }): Promise<LeaseCleanupReport> {
  const report: LeaseCleanupReport = { kept: [], removed: [], staleNodes: [], nodesDeleted: [], dryRun: opts.dryRun };
  const leases = await client.getAll().prefix(MASTER_LEASES).options(deadline(10_000)).keys();
  for (const key of leases.sort()) {
    const address = key.slice(MASTER_LEASES.length);
    if (opts.keepAddresses.includes(address)) {
      report.kept.push(address);
      continue;
    }
    if (!opts.dryRun) await client.delete().key(key).options(deadline(10_000)).exec();
    report.removed.push(address);
  }
  const end = NODES.slice(0, -1) + String.fromCharCode(NODES.charCodeAt(NODES.length - 1) + 1);
  let start = NODES;
  for (;;) {
    const page = await client.getAll().inRange({ start, end }).limit(PAGE).options(deadline(10_000)).exec();
    for (const kv of page.kvs) {
      const name = kv.key.toString().slice(NODES.length);
      const value = kv.value.toString('latin1');
      if (opts.memberNames.includes(name) || !CONTROL_PLANE_LABELS.some((l) => value.includes(l))) continue;
      report.staleNodes.push(name);
      if (opts.deleteNodes && !opts.dryRun) {
        await client.delete().key(kv.key).options(deadline(10_000)).exec();
        await client.delete().key(NODE_LEASES + name).options(deadline(10_000)).exec();
        report.nodesDeleted.push(name);
      }
    }
    if (page.kvs.length < PAGE) break;
    start = page.kvs[page.kvs.length - 1]!.key.toString() + '\0';
  }
  return report;
}

export type Throwaway = ThrowawayEtcd<Etcd3>;

/**
 * A throwaway etcd on an existing (restored) data dir, once it has a leader (../etcd/throwaway.ts),
 * on unix sockets in `socketDir` (in the restore's private state dir, under daemon.stateDir).
 * `forceNewCluster` makes a member of a multi-member restore serve alone: only for a dry run's
 * copy. `started` hears the PID at once, so a crash can find and stop it (`stopLeftover`).
 */
export function startThrowaway(opts: {
  exec: Executor;
  etcd: string;
  name: string;
  dataDir: string;
  socketDir: string;
  forceNewCluster: boolean;
  logFile: string;
  timeoutSeconds: number;
  signal?: AbortSignal;
  started?: (pid: number) => Promise<void>;
}): Promise<Throwaway> {
  return startThrowawayEtcd({
    ...opts,
    timeoutSetting: 'restore.etcdWaitSeconds',
    socketSetting: '/daemon/stateDir',
    connect: throwawayClient,
    hasLeader: async (client, at) => (await client.maintenance.status({ deadline: at })).leader !== '0',
  });
}

/** The throwaway etcd's revision and key count. */
export async function describeMember(client: Etcd3): Promise<{ revision: string; keyCount: number }> {
  const status = await client.maintenance.status(deadline());
  const keyCount = await client.getAll().options(deadline(10_000)).count();
  return { revision: status.header.revision, keyCount };
}

/**
 * GET https://host:port/readyz, trusting only `ca` and checking the certificate for the
 * name `kubernetes` (a SAN of every kubeadm apiserver certificate; its IP SANs may not include
 * the address probed). Resolves with the status code, or undefined when nothing answers.
 */
function readyz(address: { host: string; port: number }, ca: Buffer): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: address.host, port: address.port, path: '/readyz', method: 'GET', ca, servername: 'kubernetes', timeout: CALL_MS }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode));
      res.once('error', () => resolve(undefined));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(undefined));
    req.end();
  });
}

/** Waits for /readyz to answer 200. */
export async function waitReady(address: { host: string; port: number }, caFile: string, timeoutSeconds: number, signal?: AbortSignal): Promise<void> {
  const ca = await readFile(caFile);
  let last: number | undefined;
  await poll(
    'waiting for kube-apiserver',
    { timeoutSeconds, intervalMs: 500, signal },
    async () => (last = await readyz(address, ca)) === 200,
    () => new EtcdUnavailableError(`kube-apiserver on ${address.host}:${address.port} is not ready after ${timeoutSeconds} s (${last === undefined ? 'no answer' : `/readyz answered ${last}`})`, {
      hint: 'check its container log (crictl logs); raise restore.apiserverWaitSeconds for a big cluster; then apply again',
    }),
  );
}
