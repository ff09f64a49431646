/**
 * Disaster A on the real lab (scripts/lab/): every control-plane host is lost.
 *
 * A 3-host kubeadm cluster (Kubernetes and etcd 3.6 built from source) is filled through kubectl
 * and backed up by `lifeboat serve` on each host to a real Ceph RGW, itself a host of the lab
 * (`rgw`, reached over the bridge by name). Then all three hosts are destroyed: processes, data
 * dirs, /etc/kubernetes. Three new hosts with new names and addresses take their place, with
 * nothing initialised. On the first, the runbook's section "Restore into a fresh control plane"
 * is followed as written: its config (the yaml block, with this lab's names and addresses) and
 * its commands (the sh block, extracted from docs/runbook.md and run line by line on the host:
 * the release archive from scripts/release.sh extracted into /opt, a token, a certificate,
 * `lifeboat serve`, then curl). The other two join with the `kubeadm join` the restore returned.
 *
 * What stands in: the lab kubelet (no container runtime here), so the join adds the lab's CRI
 * socket and runtime preflight names; and `systemd-run` (no systemd in a lab host), whose
 * command is started on the host as a process of its own.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { parse, stringify } from 'yaml';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import type { Job } from '../../src/jobs/job.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import type { JoinInstructions } from '../../src/restore/kubeadm.ts';
import { kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { startRgw, type Rgw } from '../../scripts/rig/rgw.ts';
import { addBareHost, adminKubectl, CRI_SOCKET, ENDPOINT_NAME, RUNTIME_PREFLIGHT_ERRORS, startKubeCluster, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects, type FillResult } from '../../scripts/lab/fill.ts';
import { addHost, destroyLab, execOnHost, hostPrefix, removeHost, spawnOnHost, type LabHost } from '../../scripts/lab/hosts.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { until, type DaemonProcess } from '../support/daemon.ts';
import { daemonOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { REPO, runCli } from '../support/lifeboat.ts';
import { etcdctlOn, whoami } from '../support/restore-nodes.ts';
import { runbookBlock, ShellSession } from '../support/runbook.ts';
import { SIGNING_KEY_FILE } from '../support/signing.ts';

const run = promisify(execFile);
const NET = 27;
const OLD = ['cp-1', 'cp-2', 'cp-3'];
const NEW = ['dr-1', 'dr-2', 'dr-3'];
const SECTION = '## Restore into a fresh control plane';
const BUCKET = 'lifeboat-backups';
const PREFIX = 'prod/';

let work: string;
let cluster: KubeCluster;
let rgw: Rgw;
let pki: ApiPki;
let archive: string;
let filled: FillResult;
let objects: Map<string, string>;
let backupId: string;
let oldHosts: LabHost[] = [];
const newHosts: LabHost[] = [];
let restored: RestoreView | undefined;
let restoreStarted = 0;
const daemons: DaemonProcess[] = [];
/** The restore daemon on the first new host, started as the runbook's systemd-run line says. */
let restoreDaemon: ChildProcess | undefined;
const figures: string[] = [];
const operator = generateToken();
const key = await generateIdentity();
const seconds = (since: number) => ((performance.now() - since) / 1000).toFixed(1);

/** The files the runbook has the operator bring, as Lifeboat's DaemonSet config names them on the old hosts. */
const s3Files = () => ({ accessKeyIdFile: path.join(work, 's3-access-key'), secretAccessKeyFile: path.join(work, 's3-secret-key') });
const rgwEndpoint = () => rgw.endpoint.replace(/\/\/[^:]+:/, '//rgw:');

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-disaster-hosts-'));
  const built = await run('bash', [path.join(REPO, 'scripts/release.sh'), '--out', work], { maxBuffer: 1 << 20 });
  archive = built.stdout.trim().split('\n').at(-1)!;

  const phases: string[] = [];
  let start = performance.now();
  cluster = await startKubeCluster({ net: NET, dir: path.join(work, 'lab'), names: OLD, onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  oldHosts = [...cluster.hosts];
  // The RGW is a host of the lab: the mon and OSD on its loopback, the gateway on its address.
  const rgwHost = await addHost(cluster.lab, 'rgw', 5);
  rgw = await startRgw({ dir: path.join(rgwHost.dir, 'ceph'), host: { prefix: hostPrefix(rgwHost), address: rgwHost.address } });
  const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: rgw });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  s3.destroy();
  await writeSecret(s3Files().accessKeyIdFile, rgw.accessKeyId);
  await writeSecret(s3Files().secretAccessKeyFile, rgw.secretAccessKey);
  figures.push(`lab ${seconds(start)} s (${phases.join(', ')})`);

  start = performance.now();
  filled = await fillCluster(cluster, { namespaces: 3, targetMiB: 50 });
  objects = await snapshotObjects(cluster);
  figures.push(`fill ${seconds(start)} s`);

  // lifeboat serve on every host, backing up to the RGW; a backup through the API.
  pki = await makeApiPki(path.join(work, 'api-pki'), oldHosts.map((h) => `IP:${h.address}`));
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(operator, 'operator', 'oncall')}\n`);
  const tokenFile = await writeSecret(path.join(work, 'operator-token.txt'), `${operator}\n`);
  const lb: LabLifeboat = { work, storeDir: path.join(work, 'unused'), recipient: key.recipient };
  for (const host of oldHosts) {
    daemons.push(await daemonOn(host, lb, {
      store: { s3: { endpoint: rgwEndpoint(), bucket: BUCKET, prefix: PREFIX, ...s3Files() } },
      daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 } },
      api: { listen: { host: host.address, port: 8443 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile: path.join(work, 'tokens') },
      metrics: { listen: { host: '127.0.0.1', port: 9464 } },
    }));
  }
  start = performance.now();
  await until('a leader takes lifeboat trigger backup --wait', async () => {
    for (const h of oldHosts) {
      const made = await runCli(['trigger', 'backup', '--wait'], { LIFEBOAT_CLIENT__URL: `https://${h.address}:8443`, LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN_FILE: tokenFile });
      backupId = /succeeded \(backup (\S+)\)/.exec(made.stdout)?.[1] ?? '';
      if (made.code === 0 && backupId) return true;
    }
    return false;
  }, 180_000);
  figures.push(`backup to RGW ${seconds(start)} s`);

  // The disaster: every control-plane host is gone, with everything on it.
  for (const d of daemons.splice(0)) d.child.kill('SIGKILL');
  for (const h of oldHosts) await removeHost(cluster.lab, h);
});

after(async () => {
  for (const d of daemons) d.child.kill('SIGKILL');
  restoreDaemon?.kill('SIGKILL');
  console.log(`# figures: ${figures.join('; ')}`);
  if (process.env['LIFEBOAT_LAB_KEEP'] === '1') {
    console.log(`# kept: ${work} (stop the lab with: node scripts/lab/main.ts stop --net ${NET})`);
    return;
  }
  await destroyLab(NET);
  if (work) await rm(work, { recursive: true, force: true });
});

/** The runbook's restore config with this lab's names and addresses: every key it has, and no other. */
async function restoreConfig(host: LabHost): Promise<Record<string, unknown>> {
  const doc = parse(await runbookBlock(SECTION, 'yaml')) as { store: { s3: Record<string, unknown> }; restore: { kubeadm: Record<string, unknown> } } & Record<string, unknown>;
  return {
    ...doc,
    cluster: 'lab',
    node: host.name,
    store: { s3: { ...doc.store.s3, endpoint: rgwEndpoint(), prefix: PREFIX } },
    restore: { ...doc.restore, advertiseAddress: host.address, kubeadm: { ...doc.restore.kubeadm, criSocket: CRI_SOCKET, ignorePreflightErrors: RUNTIME_PREFLIGHT_ERRORS } },
  };
}

/** The keys of `doc`, as paths. */
function keyPaths(doc: unknown, at = ''): string[] {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return [at];
  return Object.entries(doc).flatMap(([k, v]) => keyPaths(v, `${at}/${k}`));
}

/** curl on `host` as the runbook line says, with its status code appended (`-w`), silent but for errors. */
async function curlOn(host: LabHost, args: string[]): Promise<{ status: number; json: unknown; text: string }> {
  const res = await execOnHost(host, 'curl', ['-sS', '--max-time', '30', '-w', '\n%{http_code}', ...args], { timeoutMs: 40_000, allowFailure: true });
  const at = res.stdout.lastIndexOf('\n');
  const text = res.stdout.slice(0, at);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: Number(res.stdout.slice(at + 1)), json, text: `${text}${res.stderr}` };
}

test('every control-plane host is lost: on a new host, the runbook restores a fresh control plane from RGW, as written', async () => {
  const provisioned = performance.now();
  for (const [i, name] of NEW.entries()) newHosts.push(await addBareHost(cluster.lab, name, 21 + i, `10.249.${NET}.21`));
  figures.push(`three new hosts ${seconds(provisioned)} s`);
  const dr = newHosts[0]!;
  const config = await restoreConfig(dr);
  const doc = parse(await runbookBlock(SECTION, 'yaml')) as Record<string, unknown>;
  assert.deepEqual(keyPaths(config).filter((k) => k !== '/restore/kubeadm/ignorePreflightErrors').sort(), keyPaths(doc).sort(), 'the lab uses the runbook\'s config, key for key (and the runtime preflight names the lab host needs)');
  // The files the operator brings, at the runbook's paths on the new host.
  const etc = path.join(dr.dir, 'etc/lifeboat');
  await writeFile(path.join(etc, 'restore.yaml'), stringify(config));
  await writeSecret(path.join(etc, 'recipients.txt'), `${key.recipient}\n`);
  await writeSecret(path.join(etc, 'online.txt'), identityFileText(key.identity, key.recipient, new Date()));
  await copyFile(SIGNING_KEY_FILE, path.join(etc, 'signing.key'));
  await copyFile(s3Files().accessKeyIdFile, path.join(etc, 's3-access-key'));
  await copyFile(s3Files().secretAccessKeyFile, path.join(etc, 's3-secret-key'));

  // A kubeadm host: kubeadm and kubectl on its PATH.
  const env = { PATH: `${path.dirname(kubernetesBinaries().kubeadm)}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: '/root' };
  const session = new ShellSession(await runbookBlock(SECTION, 'sh'));
  const steps: string[] = [];
  let plan: RestoreView['plan'] | undefined;
  let firstCurl: number | undefined;
  for (let c = session.next(); c; c = session.next()) {
    const [tool, ...args] = c.argv as [string, ...string[]];
    const start = performance.now();
    let label = `${path.basename(tool)} ${args[0]}`;
    if (tool === 'tar') {
      assert.equal(args[1], path.basename(archive), `${c.text}: the archive scripts/release.sh builds`);
      const res = await execOnHost(dr, 'tar', args, { cwd: path.dirname(archive), env });
      assert.equal(res.code, 0);
    } else if (tool === 'systemd-run') {
      const [unitFlag, unit, command, ...rest] = args;
      assert.deepEqual([unitFlag, unit], ['--unit', 'lifeboat-restore']);
      const child = spawnOnHost(dr, command!, rest, path.join(dr.logDir, 'lifeboat-restore.log'), { env });
      restoreDaemon = child;
      await until('the restore daemon answers on 127.0.0.1:8443', async () => (await curlOn(dr, ['-k', 'https://127.0.0.1:8443/v1/backups'])).status !== 0, 60_000);
    } else if (tool === 'curl') {
      firstCurl ??= start;
      const route = c.argv.find((a) => a.startsWith('https://127.0.0.1:8443'))!.slice('https://127.0.0.1:8443'.length);
      const post = args.includes('-d');
      label = `${post ? 'POST' : 'GET'} ${route}`;
      // A job: polled as the runbook says ("again until").
      if (/^\/v1\/jobs\//.test(route)) {
        let job: Job | undefined;
        await until(`${route} ends`, async () => {
          job = ((await curlOn(dr, args)).json as { job: Job }).job;
          return job.state === 'succeeded' || job.state === 'failed';
        }, 900_000);
        const view = plan && ((await curlOn(dr, [...args.slice(0, -1), `https://127.0.0.1:8443/v1/restores/${plan.id}`])).json as RestoreView);
        assert.equal(job!.state, 'succeeded', `${c.text}: ${JSON.stringify(job!.error)}\n${JSON.stringify(view?.journal.steps, null, 1)}`);
      } else {
        const res = await curlOn(dr, args);
        if (route.startsWith('/v1/backups')) {
          assert.equal(res.status, 200, `${c.text}: ${res.text}`);
          assert.equal((res.json as { backups: { manifest: { backupId: string } }[] }).backups[0]?.manifest.backupId, backupId, 'the newest backup in RGW is the one the old cluster made');
        } else if (route === '/v1/restores' && post) {
          assert.equal(res.status, 201, `${c.text}: ${res.text}`);
          const made = res.json as { plan: RestoreView['plan']; job?: Job };
          assert.equal(made.plan.backupId, backupId);
          if (made.job) session.set('JOB', made.job.id);
          else {
            plan = made.plan;
            session.set('PLAN', plan.id);
            session.set('CONFIRM', plan.confirmationToken!);
          }
        } else if (route.endsWith('/apply')) {
          assert.equal(res.status, 202, `${c.text}: ${res.text}`);
          restoreStarted = start;
          session.set('JOB', (res.json as { job: Job }).job.id);
        } else {
          assert.equal(res.status, 200, `${c.text}: ${res.text}`);
          restored = res.json as RestoreView;
        }
      }
    } else {
      const res = await execOnHost(dr, tool, args, { env, allowFailure: true });
      assert.equal(res.code, 0, `${c.text}: ${res.stderr}`);
      if (args.includes('token')) session.set('TOKEN', res.stdout.trim());
      if (args[0] === 'version') assert.match(res.stdout, /lifeboat \d+\.\d+\.\d+/);
    }
    steps.push(`${label} ${seconds(start)} s`);
  }
  figures.push(`runbook on ${dr.name}: ${steps.join('; ')}`);
  assert.ok(firstCurl && restored, 'the runbook ran to the restore view');
  assert.equal(restored.state, 'done');
  const journal = restored.journal;
  figures.push(`restore steps: ${restored.plan.steps.map((s) => `${s} ${((Date.parse(journal.steps[s]!.finishedAt!) - Date.parse(journal.steps[s]!.startedAt!)) / 1000).toFixed(1)} s`).join(', ')}`);
  restoreStarted = firstCurl;
});

test('the two other new hosts join with the command the restore returned: three etcd members and three apiservers, healthy', async () => {
  assert.ok(restored, 'the restore ran');
  const join = restored.journal.result.join as JoinInstructions;
  const encryption = restored.plan.files.find((f) => f.role === 'encryption-provider-config')!;
  assert.ok(join.before.some((line) => line.includes(encryption.path)), `the join instructions name ${encryption.path}`);
  const [command, ...args] = join.command.split(' ');
  assert.equal(command, 'kubeadm');
  for (const h of newHosts.slice(1)) {
    const start = performance.now();
    await mkdir(path.dirname(path.join(h.dir, encryption.path)), { recursive: true, mode: 0o700 });
    await copyFile(path.join(newHosts[0]!.dir, encryption.path), path.join(h.dir, encryption.path));
    const joined = await execOnHost(h, kubernetesBinaries().kubeadm, [...args, '--cri-socket', CRI_SOCKET, `--ignore-preflight-errors=${RUNTIME_PREFLIGHT_ERRORS.join(',')}`, '-v=1'], { allowFailure: true, timeoutMs: 600_000 });
    assert.equal(joined.code, 0, `kubeadm join on ${h.name} failed:\n${joined.stderr.split('\n').slice(-30).join('\n')}`);
    await until(`the apiserver on ${h.name} is ready`, async () => (await adminKubectl(h, ['get', '--raw', '/readyz'], { allowFailure: true })).stdout.trim() === 'ok', 180_000);
    figures.push(`kubeadm join ${h.name} ${seconds(start)} s`);
  }
  await until('etcd has three started members, every one healthy', async () => {
    const list = JSON.parse((await etcdctlOn(newHosts[0]!, ['member', 'list', '-w', 'json'])).stdout) as { members: { name?: string; isLearner?: boolean }[] };
    if (list.members.length !== 3 || !list.members.every((m) => m.name && !m.isLearner)) return false;
    const health = JSON.parse((await etcdctlOn(newHosts[0]!, ['endpoint', 'health', '--cluster', '-w', 'json'])).stdout) as { health: boolean }[];
    return health.length === 3 && health.every((h) => h.health);
  }, 180_000);
  for (const h of newHosts) assert.equal((await adminKubectl(h, ['get', '--raw', '/readyz'])).stdout.trim(), 'ok', `kubectl answers on ${h.name}`);
  console.log(`# RTO: ${seconds(restoreStarted)} s from the runbook's first curl to three healthy etcd members and kubectl answering on every new host (${filled.namespaces.length} namespaces, about 50 MiB)`);
  const list = JSON.parse((await etcdctlOn(newHosts[0]!, ['member', 'list', '-w', 'json'])).stdout) as { members: { name: string }[] };
  assert.deepEqual(list.members.map((m) => m.name).sort(), NEW);
});

test('on the new control plane: every object as it was, Secrets readable, the old token authenticates, nothing of the old hosts left', async () => {
  assert.ok(restored, 'the restore ran');
  const dr = newHosts[2]!;
  assert.deepEqual(await snapshotObjects({ kubectl: (a, o = {}) => adminKubectl(o.host ?? dr, a, o) }, dr), objects, 'kubectl on a joined host reads back every object as it was');
  const secret = JSON.parse((await adminKubectl(dr, ['get', 'secret', 'credentials', '-n', filled.namespaces[1]!, '-o', 'json'])).stdout) as { data: { user: string } };
  assert.equal(Buffer.from(secret.data.user, 'base64').toString(), 'user-2', 'a Secret encrypted at rest reads back');
  assert.equal(await whoami(dr, filled.token), `system:serviceaccount:${filled.tokenNamespace}:reader`, 'the token minted before the backup authenticates (sa.key came back)');

  const newAddresses = newHosts.map((h) => h.address).sort();
  await until('only the new hosts are Nodes', async () => (await adminKubectl(dr, ['get', 'nodes', '-o', 'name'])).stdout.split('\n').filter(Boolean).sort().join() === NEW.map((n) => `node/${n}`).join(), 120_000);
  const leases = await etcdctlOn(dr, ['get', '/registry/masterleases/', '--prefix', '--keys-only']);
  assert.deepEqual(leases.stdout.split('\n').filter(Boolean).sort(), newAddresses.map((a) => `/registry/masterleases/${a}`), 'master leases: the new apiservers only');
  await until('the kubernetes Service has the three new hosts as its endpoints', async () => {
    const ep = JSON.parse((await adminKubectl(dr, ['get', 'endpointslices', '-n', 'default', '-l', 'kubernetes.io/service-name=kubernetes', '-o', 'json'])).stdout) as { items: { endpoints: { addresses: string[] }[] }[] };
    return JSON.stringify(ep.items.flatMap((s) => s.endpoints.flatMap((e) => e.addresses)).sort()) === JSON.stringify(newAddresses);
  }, 120_000);
  await until('no pod of an old host is left', async () => {
    const pods = (await adminKubectl(dr, ['get', 'pods', '-n', 'kube-system', '-o', 'name'])).stdout.split('\n');
    return !pods.some((p) => OLD.some((n) => p.endsWith(`-${n}`)));
  }, 120_000);

  // cluster-info and kubeadm-config point at the new control plane: the endpoint (which resolves to dr-1 now) and the restored CA.
  const ca = await readFile(path.join(newHosts[0]!.dir, 'etc/kubernetes/pki/ca.crt'));
  const info = JSON.parse((await adminKubectl(dr, ['get', 'configmap', 'cluster-info', '-n', 'kube-public', '-o', 'json'])).stdout) as { data: { kubeconfig: string } };
  const kubeconfig = parse(info.data.kubeconfig) as { clusters: { cluster: { server: string; 'certificate-authority-data': string } }[] };
  assert.equal(kubeconfig.clusters[0]!.cluster.server, `https://${ENDPOINT_NAME}:6443`);
  assert.deepEqual(Buffer.from(kubeconfig.clusters[0]!.cluster['certificate-authority-data'], 'base64'), ca);
  const kubeadmConfig = JSON.parse((await adminKubectl(dr, ['get', 'configmap', 'kubeadm-config', '-n', 'kube-system', '-o', 'json'])).stdout) as { data: { ClusterConfiguration: string } };
  assert.equal((parse(kubeadmConfig.data.ClusterConfiguration) as { controlPlaneEndpoint: string }).controlPlaneEndpoint, `${ENDPOINT_NAME}:6443`);
  const hosts = await readFile(path.join(dr.dir, 'etc/hosts'), 'utf8');
  assert.match(hosts, new RegExp(`^${newHosts[0]!.address.replaceAll('.', '\\.')} ${ENDPOINT_NAME.replaceAll('.', '\\.')}$`, 'm'), 'the endpoint name resolves to the restored host');
  for (const n of OLD) assert.doesNotMatch(hosts, new RegExp(` ${n}$`, 'm'), `${n} is gone from the lab`);
});
