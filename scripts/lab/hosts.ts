/**
 * Lab hosts: each one a network namespace with its own address on a bridge, plus its own mount
 * and UTS namespaces in which `/etc/kubernetes`, `/var/lib/etcd`, `/var/lib/kubelet`,
 * `/var/lib/lifeboat`, `/etc/lifeboat`, `/opt/lifeboat` and `/etc/hosts` are bind-mounted from
 * the host's own folder. Inside a
 * host, programs use their real fixed paths and ports, with no mapping.
 *
 * A host's namespaces are held by one "holder" process (`sleep infinity` under `unshare`);
 * commands run on the host through `nsenter -t <holder> -n -m -u`, which execs the command, so
 * a spawned child's PID is the command's own. Only addresses the lab gives its own hosts
 * (`10.249.<net>.0/24`) and loopback are used.
 *
 * Every name the lab makes starts with `lbl<net>` (namespaces `lbl<net>-<host>`, the bridge
 * `lbl<net>-br`, veths `lbl<net>-<host>`), and what it made is recorded in
 * `/run/lifeboat-lab/<net>.json`, so that `destroyLab` (and the next `createLab` after a crash)
 * removes every namespace, veth, bridge, process and mount point it made.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { killOnExit } from '../rig/process.ts';

const run = promisify(execFile);
const STATE_DIR = '/run/lifeboat-lab';

/** The host paths bound from each lab host's own folder. */
export const BOUND_DIRS = ['/etc/kubernetes', '/var/lib/etcd', '/var/lib/kubelet', '/var/lib/lifeboat', '/etc/lifeboat', '/opt/lifeboat'] as const;

export interface LabHost {
  /** The host name (also its UTS host name and its Kubernetes node name). */
  name: string;
  address: string;
  /** The folder whose subfolders are bound over BOUND_DIRS (`<dir>/etc/kubernetes`, ...). */
  dir: string;
  logDir: string;
  netns: string;
  /** PID of the process holding the host's mount and UTS namespaces. */
  holder: number;
}

interface LabState {
  net: number;
  netnses: string[];
  /** Each host by name, for commands run on it later (`npm run lab -- exec`). */
  hosts?: Record<string, { holder: number; address: string; dir: string }>;
}

/** Mount points the labs created on the machine, shared by every lab: the last one removes them. */
const MOUNT_POINTS = path.join(STATE_DIR, 'mount-points.list');

export interface Lab {
  net: number;
  dir: string;
  bridge: string;
  gateway: string;
  hosts: Map<string, LabHost>;
  /** Names every host resolves besides the hosts' own (the control-plane endpoint), to an address. */
  aliases: Map<string, string>;
}

/** Fails with one line when the lab cannot run here. */
export async function checkLabPrerequisites(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the lab needs root: it creates network and mount namespaces (run the tests as root)');
  for (const tool of ['ip', 'unshare', 'nsenter', 'mount']) {
    await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
      throw new Error(`the lab needs \`${tool}\` (Debian: iproute2 / util-linux / mount)`);
    });
  }
}

const stateFile = (net: number) => path.join(STATE_DIR, `${net}.json`);
const prefix = (net: number) => `lbl${net}`;

async function saveState(state: LabState): Promise<void> {
  await mkdir(STATE_DIR, { recursive: true });
  await writeFile(stateFile(state.net), JSON.stringify(state));
}

async function ip(args: string[]): Promise<void> {
  try {
    await run('ip', args);
  } catch (err) {
    throw new Error(`ip ${args.join(' ')}: ${((err as { stderr?: string }).stderr ?? String(err)).trim()}`, { cause: err });
  }
}

/**
 * A new lab on bridge `lbl<net>-br` (10.249.<net>.1/24) in folder `dir`; whatever an earlier run
 * with the same `net` left behind is removed first.
 */
export async function createLab(net: number, dir: string): Promise<Lab> {
  if (!Number.isInteger(net) || net < 1 || net > 250) throw new Error(`lab net ${net} must be 1..250`);
  await checkLabPrerequisites();
  await destroyLab(net);
  const lab: Lab = { net, dir, bridge: `${prefix(net)}-br`, gateway: `10.249.${net}.1`, hosts: new Map(), aliases: new Map() };
  const state: LabState = { net, netnses: [] };
  await mkdir(STATE_DIR, { recursive: true });
  for (const d of BOUND_DIRS) {
    if (!existsSync(d)) {
      await mkdir(d, { recursive: true });
      await appendFile(MOUNT_POINTS, `${d}\n`);
    }
  }
  await saveState(state);
  await mkdir(dir, { recursive: true });
  await ip(['link', 'add', lab.bridge, 'type', 'bridge']);
  await ip(['addr', 'add', `${lab.gateway}/24`, 'dev', lab.bridge]);
  await ip(['link', 'set', lab.bridge, 'up']);
  return lab;
}

/** The lab's `/etc/hosts`: every host by name, the lab's aliases, plus `extra` (name → address). */
export function hostsFile(lab: Lab, extra: Record<string, string> = {}): string {
  const lines = ['127.0.0.1 localhost', '::1 localhost ip6-localhost ip6-loopback'];
  for (const h of lab.hosts.values()) lines.push(`${h.address} ${h.name}`);
  for (const [name, address] of [...lab.aliases, ...Object.entries(extra)]) lines.push(`${address} ${name}`);
  return lines.join('\n') + '\n';
}

/** Writes the lab's `/etc/hosts` on every host: after a host or an alias came or went. */
export async function writeHostsFiles(lab: Lab): Promise<void> {
  for (const h of lab.hosts.values()) await writeFile(path.join(h.dir, 'etc/hosts'), hostsFile(lab));
}

/** Adds host `name` with address 10.249.<net>.<octet>. */
export async function addHost(lab: Lab, name: string, octet: number): Promise<LabHost> {
  const state = JSON.parse(await readFile(stateFile(lab.net), 'utf8')) as LabState;
  const netns = `${prefix(lab.net)}-${name}`.slice(0, 15);
  const veth = netns;
  const address = `10.249.${lab.net}.${octet}`;
  const dir = path.join(lab.dir, 'hosts', name);
  const logDir = path.join(dir, 'logs');
  await rm(dir, { recursive: true, force: true }); // a new host: nothing of an earlier one
  for (const d of BOUND_DIRS) await mkdir(path.join(dir, d), { recursive: true });
  await mkdir(logDir, { recursive: true });
  await writeFile(path.join(dir, 'etc/hosts'), hostsFile(lab, { [name]: address }));

  await ip(['netns', 'add', netns]);
  state.netnses.push(netns);
  await saveState(state);
  await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await ip(['link', 'set', veth, 'master', lab.bridge]);
  await ip(['link', 'set', veth, 'up']);
  await ip(['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', netns, 'route', 'add', 'default', 'via', lab.gateway]);
  // What kubeadm's preflight asks of a host (per network namespace).
  await ip(['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);

  // The holder: private mounts, its own host name, sysfs of its own netns, the binds, then sleep.
  const binds = [...BOUND_DIRS, '/etc/hosts'].map((d) => `mount --bind ${JSON.stringify(path.join(dir, d))} ${d}`).join(' && ');
  const script = `mount -t sysfs sysfs /sys && hostname ${name} && ${binds} && echo ready && exec sleep infinity`;
  const holder = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'unshare', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  holder.unref();
  const ready = await new Promise<string>((resolve) => {
    let out = '';
    holder.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve('');
    });
    holder.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    holder.once('exit', (code) => resolve(`holder of ${name} exited (${code}): ${out.trim()}`));
  });
  if (ready !== '') throw new Error(ready);
  holder.stdout!.destroy();
  holder.stderr!.destroy();
  state.hosts = { ...state.hosts, [name]: { holder: holder.pid!, address, dir } };
  await saveState(state);

  const host: LabHost = { name, address, dir, logDir, netns, holder: holder.pid! };
  lab.hosts.set(name, host);
  // Every host learns every other host's name.
  await writeHostsFiles(lab);
  return host;
}

/**
 * Destroys one host as a lost machine is lost: every process in its namespaces is killed, its
 * namespaces and veth go, and its folder (its /etc/kubernetes, data dirs, logs) is removed. The
 * other hosts stop resolving its name.
 */
export async function removeHost(lab: Lab, host: LabHost): Promise<void> {
  await killProcessesIn([host.netns]);
  await run('ip', ['netns', 'delete', host.netns]).catch(() => undefined);
  await run('ip', ['link', 'delete', host.netns]).catch(() => undefined);
  const state = JSON.parse(await readFile(stateFile(lab.net), 'utf8')) as LabState;
  state.netnses = state.netnses.filter((n) => n !== host.netns);
  const { [host.name]: _gone, ...hosts } = state.hosts ?? {};
  state.hosts = hosts;
  await saveState(state);
  lab.hosts.delete(host.name);
  await rm(host.dir, { recursive: true, force: true });
  await writeHostsFiles(lab);
}

/** The argv prefix that runs a command on `host` (nsenter execs it: the PID stays the command's). */
export function hostPrefix(host: LabHost): string[] {
  return ['nsenter', '-t', String(host.holder), '-n', '-m', '-u', '--'];
}

/** argv that runs `command args` on `host`. */
export function onHost(host: LabHost, command: string, args: readonly string[] = []): string[] {
  return [...hostPrefix(host), command, ...args];
}

export interface HostRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command args` on `host` to completion; rejects with its output unless `allowFailure`. */
export async function execOnHost(host: LabHost, command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string; allowFailure?: boolean; cwd?: string } = {}): Promise<HostRun> {
  // nsenter enters the mount namespace at its root: a working directory is set after entering it.
  const [bin, ...rest] = options.cwd ? [...hostPrefix(host).slice(0, -1), `--wd=${options.cwd}`, '--', command, ...args] : onHost(host, command, args);
  return new Promise((resolve, reject) => {
    const child = spawn(bin!, rest, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    killOnExit(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    // A command that exits before reading its input (under load, before this write) closes the
    // pipe: that EPIPE is not the command's result, its exit code is.
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(options.input ?? '');
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result = { code: code ?? -1, stdout, stderr };
      if (result.code === 0 || options.allowFailure) resolve(result);
      else reject(new Error(`on ${host.name}: ${command} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${(stderr || stdout).trim().split('\n').slice(-15).join('\n')}`));
    });
  });
}

/**
 * Starts a long-running `command args` on `host`, output appended to `logFile`. It dies with
 * this process unless `detached`; destroyLab stops it, as every process in the host's namespace.
 */
export function spawnOnHost(host: LabHost, command: string, args: readonly string[], logFile: string, options: { env?: NodeJS.ProcessEnv; detached?: boolean } = {}): ChildProcess {
  const [bin, ...rest] = onHost(host, command, args);
  const log = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(bin!, rest, { stdio: ['ignore', log, log], env: options.env ?? process.env, detached: options.detached ?? false });
  } finally {
    closeSync(log);
  }
  if (options.detached) child.unref();
  else killOnExit(child);
  return child;
}

/** The hosts lab `net` recorded, as LabHosts (for commands run on them from another process). */
export async function recordedHosts(net: number): Promise<LabHost[]> {
  const state = JSON.parse(await readFile(stateFile(net), 'utf8').catch(() => '{}')) as Partial<LabState>;
  return Object.entries(state.hosts ?? {}).map(([name, h]) => ({ name, ...h, logDir: path.join(h.dir, 'logs'), netns: `${prefix(net)}-${name}`.slice(0, 15) }));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops every process inside the network namespaces `netnses` (SIGTERM, SIGKILL after 10 s): each
 * one the lab started runs there. A recorded PID alone is not trusted: after a crash it may belong
 * to another process by now.
 */
async function killProcessesIn(netnses: readonly string[]): Promise<void> {
  const pids = new Set<number>();
  for (const ns of netnses) {
    const out = await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
    for (const p of out.stdout.split(/\s+/).filter(Boolean)) pids.add(Number(p));
  }
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGTERM');
  const until = Date.now() + 10_000;
  while ([...pids].some(alive) && Date.now() < until) await sleep(100);
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  while ([...pids].some(alive)) await sleep(50);
}

/** Removes every process, namespace, veth, bridge and mount point that lab `net` made. */
export async function destroyLab(net: number): Promise<void> {
  let state: LabState | undefined;
  try {
    state = JSON.parse(await readFile(stateFile(net), 'utf8')) as LabState;
  } catch {
    state = undefined;
  }
  const netnses = new Set(state?.netnses ?? []);
  const { stdout } = await run('ip', ['netns', 'list']).catch(() => ({ stdout: '' }));
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(`${prefix(net)}-`)) netnses.add(name);
  }
  await killProcessesIn([...netnses]);
  for (const ns of netnses) await run('ip', ['netns', 'delete', ns]).catch(() => undefined);
  const links = await run('ip', ['-o', 'link', 'show']).catch(() => ({ stdout: '' }));
  for (const m of links.stdout.matchAll(new RegExp(`^\\d+: (${prefix(net)}-[^:@]+)`, 'gm'))) {
    await run('ip', ['link', 'delete', m[1]!]).catch(() => undefined);
  }
  // Removing a directory detaches every mount on it in every mount namespace: while another lab
  // runs, its hosts' binds sit on these mount points, so they stay until the last lab goes.
  const others = (await readdir(STATE_DIR).catch(() => [] as string[])).filter((f) => f.endsWith('.json') && f !== `${net}.json`);
  if (others.length === 0) {
    const made = (await readFile(MOUNT_POINTS, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    for (const d of made) await rmdir(d).catch(() => undefined);
    await rm(MOUNT_POINTS, { force: true });
  }
  await rm(stateFile(net), { force: true });
}
