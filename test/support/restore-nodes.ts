/**
 * Restores on the lab's kubeadm hosts (scripts/lab/): what a host serves and holds, read the way
 * an operator would check it (kubectl, etcdctl on the host, etcd over TLS with kubeadm's
 * healthcheck client certificate), and `lifeboat serve` on each host, killed on a log line and
 * started again.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { etcdBinaries, kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { tlsClient, type TlsFiles } from '../../scripts/rig/etcd.ts';
import { adminKubectl, ENDPOINT_NAME } from '../../scripts/lab/cluster.ts';
import { execOnHost, type HostRun, type LabHost } from '../../scripts/lab/hosts.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import type { RestorePlan } from '../../src/restore/plan.ts';
import type { ApiPki } from './api-pki.ts';
import type { Job } from '../../src/jobs/job.ts';
import { curl, until, type CurlResult, type DaemonProcess } from './daemon.ts';

/** etcdctl on `host` against its own member, with kubeadm's healthcheck client certificate. */
export function etcdctlOn(host: LabHost, args: string[]): Promise<HostRun> {
  return execOnHost(host, etcdBinaries('3.6').etcdctl, [
    '--command-timeout=15s',
    '--endpoints=https://127.0.0.1:2379',
    '--cacert=/etc/kubernetes/pki/etcd/ca.crt',
    '--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt',
    '--key=/etc/kubernetes/pki/etcd/healthcheck-client.key',
    ...args,
  ], { timeoutMs: 20_000 });
}

/** kubectl on `host` with its admin.conf; resolves with its output whatever the exit code. */
export function kubectlOn(host: LabHost, args: string[]): Promise<HostRun> {
  return adminKubectl(host, args, { allowFailure: true });
}

/** Who the apiserver says `token` is, asked from `host` with only the token (no kubeconfig, no admin certificate). */
export async function whoami(host: LabHost, token: string): Promise<string> {
  const args = ['--kubeconfig=', `--server=https://${ENDPOINT_NAME}:6443`, '--certificate-authority=/etc/kubernetes/pki/ca.crt', `--token=${token}`, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'];
  return (await execOnHost(host, kubernetesBinaries().kubectl, args, { env: { PATH: process.env['PATH'] } })).stdout;
}

/** kubeadm's healthcheck client certificate of `host`, as files the test process reads. */
export function etcdTlsOf(host: LabHost): TlsFiles {
  const dir = path.join(host.dir, 'etc/kubernetes/pki/etcd');
  return { caFile: path.join(dir, 'ca.crt'), certFile: path.join(dir, 'healthcheck-client.crt'), keyFile: path.join(dir, 'healthcheck-client.key') };
}

/** What the member on `host` answers alone (over TLS on its address): its revision and leader. */
export async function memberStatus(host: LabHost): Promise<{ revision: bigint; leader: string }> {
  const client = tlsClient([`https://${host.address}:2379`], etcdTlsOf(host), { dialTimeout: 3000 });
  try {
    const status = await client.maintenance.status({ deadline: new Date(Date.now() + 10_000) });
    return { revision: BigInt(status.header.revision), leader: status.leader };
  } finally {
    client.close();
  }
}

/** How many keys the cluster held at `revision` (before it is compacted), asked of `host`'s member. */
export async function keyCountAt(host: LabHost, revision: bigint): Promise<number> {
  const client = tlsClient([`https://${host.address}:2379`], etcdTlsOf(host), { dialTimeout: 3000 });
  try {
    return await client.getAll().revision(revision.toString()).count();
  } finally {
    client.close();
  }
}

/**
 * A digest of what must not change while nothing live is touched on `host`: every file under
 * /etc/kubernetes (path, mode, bytes), the entries of the etcd data dir and of its member dir.
 */
export async function liveDigest(host: LabHost): Promise<string> {
  const hash = createHash('sha256');
  const k8s = path.join(host.dir, 'etc/kubernetes');
  for (const f of (await readdir(k8s, { recursive: true })).sort()) {
    const p = path.join(k8s, f);
    const s = await stat(p);
    hash.update(`${f} ${s.mode}\n`);
    if (s.isFile()) hash.update(await readFile(p));
  }
  const etcd = path.join(host.dir, 'var/lib/etcd');
  hash.update((await readdir(etcd)).sort().join(','));
  hash.update((await readdir(path.join(etcd, 'member'))).sort().join(','));
  return hash.digest('hex');
}

/** The bytes of `host`'s etcd and kube-apiserver manifests (undefined when absent). */
export async function manifestsOf(host: LabHost): Promise<{ etcd: Buffer | undefined; apiserver: Buffer | undefined }> {
  const read = (name: string) => readFile(path.join(host.dir, 'etc/kubernetes/manifests', name)).catch(() => undefined);
  return { etcd: await read('etcd.yaml'), apiserver: await read('kube-apiserver.yaml') };
}

/** SIGKILLs the daemon as soon as it logs `msg` (e.g. `restore-snapshot started`); resolves then. */
export function killOn(daemon: DaemonProcess, msg: string): Promise<void> {
  let seen = '';
  return new Promise((resolve) => {
    const listen = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-8192);
      if (seen.includes(`"msg":"${msg}"`)) {
        daemon.child.kill('SIGKILL');
        daemon.child.stderr!.off('data', listen);
        resolve();
      }
    };
    daemon.child.stderr!.on('data', listen);
  });
}

/** Stops the daemon with `signal` and waits until it is gone (20 s at most). */
export async function stopDaemon(daemon: DaemonProcess, signal: NodeJS.Signals): Promise<void> {
  daemon.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`daemon ${daemon.name} did not exit after ${signal}; its last log lines:\n${daemon.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`)), 20_000);
  });
  try {
    await Promise.race([daemon.exited, stuck]);
  } finally {
    clearTimeout(timer);
  }
}

/** The addresses of the `kubernetes` Service's endpoints, as the apiservers publish them. */
export async function kubernetesEndpoints(host: LabHost): Promise<string[]> {
  const out = await kubectlOn(host, ['get', 'endpoints', 'kubernetes', '-n', 'default', '-o', 'jsonpath={.subsets[*].addresses[*].ip}']);
  return out.stdout.split(/\s+/).filter(Boolean);
}

/** What a restore's state dir on `host` holds (`<daemon.stateDir>/restores/<id>`). */
export async function stagedFiles(host: LabHost, plan: RestorePlan): Promise<string[]> {
  return (await readdir(path.join(host.dir, plan.staging))).sort();
}

type Role = 'viewer' | 'operator' | 'restorer';

/** curl against a daemon's API (`base` is its URL) with the token of `role`. */
export function apiOf(pki: ApiPki, tokens: Record<Role, string>) {
  const as = (role: Role) => ['--cacert', pki.ca.cert, '-H', `Authorization: Bearer ${tokens[role]}`];
  return {
    get: (role: Role, base: string, route: string): Promise<CurlResult> => curl([...as(role), `${base}${route}`]),
    post: (role: Role, base: string, route: string, body: unknown): Promise<CurlResult> =>
      curl([...as(role), '-X', 'POST', '-H', 'Content-Type: application/json', '-d', JSON.stringify(body), `${base}${route}`]),
  };
}

/** Every restore on the daemon at `base`, oldest first. */
export async function restoresOn(api: ReturnType<typeof apiOf>, base: string): Promise<RestoreView[]> {
  const res = await api.get('restorer', base, '/v1/restores');
  if (res.status !== 200) throw new Error(`GET ${base}/v1/restores answered ${res.status}: ${res.body}`);
  return (res.json as { restores: RestoreView[] }).restores;
}

/** One backup through POST /v1/backups on whichever daemon of `urls` leads, followed until it ends; the job as it ended. */
export async function backupThroughApi(api: ReturnType<typeof apiOf>, urls: readonly string[]): Promise<Job> {
  let made: { url: string; job: Job } | undefined;
  await until('a leader takes POST /v1/backups', async () => {
    for (const url of urls) {
      const res = await api.post('operator', url, '/v1/backups', {});
      if (res.status === 202) {
        made = { url, job: (res.json as { job: Job }).job };
        return true;
      }
    }
    return false;
  }, 60_000);
  let job: Job | undefined;
  await until(`backup job ${made!.job.id} ends`, async () => {
    job = ((await api.get('viewer', made!.url, `/v1/jobs/${made!.job.id}`)).json as { job: Job }).job;
    return job.state === 'succeeded' || job.state === 'failed';
  }, 120_000);
  return job!;
}
