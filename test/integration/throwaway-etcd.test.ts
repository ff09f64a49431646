/**
 * A throwaway etcd (src/etcd/throwaway.ts) serves a restored data dir, every Secret of a
 * cluster, so it must answer Lifeboat alone: no TCP listener at all, its client and peer
 * sockets in a private (0700) directory of Lifeboat's user, which is gone once it stops or a
 * later process stops its leftover. Real etcd 3.6 and 3.5; a second user is `nobody` (setpriv).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { etcdBinaries, type EtcdVersion } from '../../scripts/rig/binaries.ts';
import { freePorts } from '../../scripts/rig/ports.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { startThrowawayEtcd, stopLeftover, throwawayClient, type ThrowawayEtcd } from '../../src/etcd/throwaway.ts';
import { REPO } from '../support/lifeboat.ts';

const run = promisify(execFile);
const KEY = '/registry/secrets/kube-system/bootstrap-token-abcdef';
const VALUE = 'a-secret-value';
const NOBODY = 65534;

let work: string;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-throwaway-'));
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** A snapshot of a one-member etcd holding KEY, restored with etcdutl as a drill does. */
async function restoredDataDir(version: EtcdVersion): Promise<string> {
  const bins = etcdBinaries(version);
  const dir = path.join(work, `source-${version}`);
  const [client, peer] = (await freePorts(2)) as [number, number];
  const source = spawn(bins.etcd, [
    '--name=source', `--data-dir=${path.join(dir, 'data')}`,
    `--listen-client-urls=http://127.0.0.1:${client}`, `--advertise-client-urls=http://127.0.0.1:${client}`,
    `--listen-peer-urls=http://127.0.0.1:${peer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
    `--initial-cluster=source=http://127.0.0.1:${peer}`,
  ], { stdio: 'ignore' });
  const exited = new Promise((resolve) => source.once('exit', resolve));
  const etcd = new Etcd3({ hosts: `http://127.0.0.1:${client}`, dialTimeout: 1000 });
  try {
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        await etcd.put(KEY).value(VALUE).options({ deadline: new Date(Date.now() + 1000) });
        break;
      } catch (err) {
        if (Date.now() > until) throw err;
      }
    }
    await run(bins.etcdctl, [`--endpoints=http://127.0.0.1:${client}`, 'snapshot', 'save', path.join(dir, 'snapshot.db')]);
  } finally {
    etcd.close();
    source.kill('SIGKILL');
    await exited;
  }
  const restored = path.join(dir, 'restored');
  await run(bins.etcdutl, ['snapshot', 'restore', path.join(dir, 'snapshot.db'), '--name', 'drill', '--initial-cluster', 'drill=unix://peer.sock', '--initial-advertise-peer-urls', 'unix://peer.sock', '--data-dir', restored]);
  return restored;
}

function start(version: EtcdVersion, dataDir: string, socketDir: string): Promise<ThrowawayEtcd<Etcd3>> {
  return startThrowawayEtcd({
    exec: processExecutor,
    etcd: etcdBinaries(version).etcd,
    name: 'drill',
    dataDir,
    socketDir,
    socketSetting: '/drill/scratchDir',
    logFile: path.join(path.dirname(socketDir), 'etcd.log'),
    timeoutSeconds: 30,
    timeoutSetting: 'drill.startTimeoutSeconds',
    connect: throwawayClient,
    hasLeader: async (client, at) => (await client.maintenance.status({ deadline: at })).leader !== '0',
  });
}

/** The inodes of the sockets `pid` holds open. */
async function socketInodes(pid: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  return inodes;
}

/** The TCP ports (IPv4 and IPv6) that `pid` listens on, from /proc/<pid>/net/tcp{,6}. */
async function tcpListenPorts(pid: number): Promise<number[]> {
  const inodes = await socketInodes(pid);
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    const lines = (await readFile(`/proc/${pid}/net/${table}`, 'utf8')).trim().split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT; st 0A is LISTEN; field 9 is the inode.
      if (f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

/** The paths of the unix sockets `pid` listens on ('@…' is an abstract name, open to the whole network namespace). */
async function unixListenPaths(pid: number): Promise<string[]> {
  const inodes = await socketInodes(pid);
  const lines = (await readFile('/proc/net/unix', 'utf8')).trim().split('\n').slice(1);
  const paths: string[] = [];
  for (const line of lines) {
    // Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON (listening).
    const f = line.trim().split(/\s+/);
    if ((parseInt(f[3]!, 16) & 0x10000) !== 0 && inodes.has(f[6]!)) paths.push(f[7] ?? '@');
  }
  return paths;
}

/** Whether a plain etcd3 client without credentials, run as `uid` (this user by default), reads KEY at `endpoint`. */
async function readsAs(endpoint: string, uid?: number): Promise<{ read: boolean; detail: string }> {
  const script = `
    const { createRequire } = await import('node:module');
    const { Etcd3 } = createRequire(process.argv[1] + '/package.json')('etcd3');
    const client = new Etcd3({ hosts: process.argv[2], dialTimeout: 1000 });
    try {
      const value = await client.get(process.argv[3]).options({ deadline: new Date(Date.now() + 3000) }).string();
      process.stdout.write(JSON.stringify({ read: value !== null, detail: String(value) }));
    } catch (err) {
      process.stdout.write(JSON.stringify({ read: false, detail: err.message }));
    } finally {
      client.close();
    }`;
  const node = [process.execPath, '--input-type=module', '-e', script, REPO, endpoint, KEY];
  const [command, ...args] = uid === undefined ? node : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...node];
  const { stdout } = await run(command!, args);
  return JSON.parse(stdout) as { read: boolean; detail: string };
}

/** Whether `pid` runs (a zombie does not). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

for (const version of ['3.6', '3.5'] as const) {
  describe(`a throwaway etcd ${version}`, () => {
    let dataDir: string;
    before(async () => {
      dataDir = await restoredDataDir(version);
    });

    test('answers Lifeboat alone: no TCP listener, no abstract socket, sockets in its private dir, gone when stopped', async () => {
      const socketDir = path.join(await mkdtemp(path.join(work, `run-${version}-`)), 'etcd');
      const etcd = await start(version, dataDir, socketDir);
      let stopped = false;
      try {
        // Lifeboat's own client reads the restored keys.
        assert.equal(await etcd.client.get(KEY).string(), VALUE);

        // Nothing on TCP: every port the process listens on is tried with a plain client, and there must be none.
        const ports = await tcpListenPorts(etcd.pid);
        for (const port of ports) {
          const plain = await readsAs(`http://127.0.0.1:${port}`);
          assert.equal(plain.read, false, `a plain client without credentials read ${KEY} on 127.0.0.1:${port}`);
        }
        assert.deepEqual(ports, [], 'the throwaway etcd listens on no TCP port');

        // Unix sockets only, none abstract, each in the private dir (relative names bind in its cwd, that dir).
        assert.equal(await readlink(`/proc/${etcd.pid}/cwd`), socketDir);
        const listening = await unixListenPaths(etcd.pid);
        assert.ok(listening.length >= 2, `a client and a peer socket: ${listening.join(', ')}`);
        for (const p of listening) {
          assert.ok(!p.startsWith('@'), `an abstract socket ${p} is open to every process in the network namespace`);
          assert.ok(path.isAbsolute(p) ? path.dirname(p) === socketDir : !p.includes('/'), `${p} is outside ${socketDir}`);
        }
        const dir = await lstat(socketDir);
        assert.ok(dir.isDirectory());
        assert.equal(dir.mode & 0o777, 0o700);
        assert.equal(dir.uid, process.getuid!());
        assert.match(etcd.endpoint, /^unix:\/\/\//);

        // Another user cannot reach the socket; the same client as this user can (so the refusal is the permission).
        assert.equal((await readsAs(etcd.endpoint)).read, true, 'the plain client, as this user, reads the key');
        const other = await readsAs(etcd.endpoint, NOBODY);
        assert.equal(other.read, false, `nobody read ${KEY}: ${other.detail}`);
        assert.match(other.detail, /EACCES/, 'refused by the socket dir\'s permissions');

        await etcd.stop();
        stopped = true;
        assert.equal(running(etcd.pid), false);
        await assert.rejects(lstat(socketDir), { code: 'ENOENT' }, 'the socket dir is removed on stop');
      } finally {
        if (!stopped) await etcd.stop();
      }
    });

    test('a leftover socket dir is replaced by a private one; a leftover etcd is stopped and its socket dir removed', async () => {
      const socketDir = path.join(await mkdtemp(path.join(work, `leftover-${version}-`)), 'etcd');
      // What a crash of both Lifeboat and etcd leaves, loosened as a stranger might have made it.
      await mkdir(socketDir, { mode: 0o755 });
      await writeFile(path.join(socketDir, 'client.sock'), 'stale');
      const etcd = await start(version, dataDir, socketDir);
      try {
        assert.equal((await lstat(socketDir)).mode & 0o777, 0o700);
        assert.equal(await etcd.client.get(KEY).string(), VALUE);
        // A later process, knowing only the PID and the data dir, stops it.
        etcd.client.close();
        assert.equal(await stopLeftover(etcd.pid, dataDir), true);
        assert.equal(running(etcd.pid), false);
        await assert.rejects(lstat(socketDir), { code: 'ENOENT' }, 'stopLeftover removes the socket dir');
      } finally {
        await etcd.stop();
      }
    });
  });
}
