/**
 * Fresh-control-plane restore on the real lab (scripts/lab/): a one-host kubeadm cluster is
 * filled, backed up with Lifeboat, and destroyed; then, on a new host with a different address
 * where nothing of Kubernetes is installed (only the lab kubelet runs), `lifeboat serve` restores
 * it through the API as the runbook says, with real `kubeadm init`; and a second new host joins
 * with the `kubeadm join ... --control-plane` command the restore returns.
 *
 * The lab has no container runtime: the restore config names the CRI socket and the runtime's
 * preflight checks to ignore (restore.kubeadm), as a user with an unusual host would.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import type { Job } from '../../src/jobs/job.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import type { JoinInstructions } from '../../src/restore/kubeadm.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { addBareHost, adminKubectl, CRI_SOCKET, ENDPOINT_NAME, RUNTIME_PREFLIGHT_ERRORS, startKubeCluster, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects, type FillResult } from '../../scripts/lab/fill.ts';
import { createLab, destroyLab, execOnHost, type Lab, type LabHost } from '../../scripts/lab/hosts.ts';
import { makeApiPki } from '../support/api-pki.ts';
import type { DaemonProcess } from '../support/daemon.ts';
import { daemonOn, lifeboatOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { etcdctlOn, whoami } from '../support/restore-nodes.ts';
import { TEST_TRUST } from '../support/signing.ts';

const NET = 24;
const KEEP = process.env['LIFEBOAT_LAB_KEEP'] === '1';
let work: string;
let lb: LabLifeboat;
let filled: FillResult;
let objects: Map<string, string>;
let oldHost: LabHost;
let lab: Lab | undefined;
let newHost: LabHost;
let backupId: string;
let restored: RestoreView | undefined;
const daemons: DaemonProcess[] = [];
const figures: string[] = [];
const restorer = generateToken();
const key = await generateIdentity();

const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

/** curl on `host` against its daemon's API on loopback, as the runbook has the operator do on the new host. */
async function api<T>(host: LabHost, method: 'GET' | 'POST', route: string, body?: unknown): Promise<{ status: number; json: T }> {
  const args = ['-sS', '--max-time', '20', '--cacert', path.join(work, 'api-pki', 'ca.crt'), '-H', `Authorization: Bearer ${restorer}`, '-w', '\n%{http_code}', '-X', method];
  if (body !== undefined) args.push('-H', 'Content-Type: application/json', '-d', JSON.stringify(body));
  const { stdout } = await execOnHost(host, 'curl', [...args, `https://127.0.0.1:8443${route}`], { timeoutMs: 30_000 });
  const at = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(at + 1)), json: JSON.parse(stdout.slice(0, at)) as T };
}

async function until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The job's end state, polled through the API. */
async function finished(host: LabHost, id: string, ms: number): Promise<Job> {
  let job: Job | undefined;
  await until(`job ${id} ends`, async () => {
    job = (await api<{ job: Job }>(host, 'GET', `/v1/jobs/${id}`)).json.job;
    return job.state === 'succeeded' || job.state === 'failed';
  }, ms);
  return job!;
}

/** Every file under a host's /etc/kubernetes and /var/lib/etcd, with its size. */
async function hostTree(host: LabHost): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['etc/kubernetes', 'var/lib/etcd']) {
    for (const f of await readdir(path.join(host.dir, d), { recursive: true })) out.push(path.join(d, f));
  }
  return out.sort();
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-fresh-'));
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  // The store and the identity are outside both labs' folders: they outlive the old hosts.
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(restorer, 'restorer', 'dr-team')}\n`);
  await makeApiPki(path.join(work, 'api-pki'));

  // The old cluster: one host, filled, backed up, then gone entirely.
  let start = performance.now();
  const phases: string[] = [];
  const old: KubeCluster = await startKubeCluster({ net: NET, dir: path.join(work, 'old-lab'), names: ['old-1'], onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  try {
    figures.push(`old lab start ${seconds(start)} (${phases.join(', ')})`);
    oldHost = old.hosts[0]!;
    start = performance.now();
    filled = await fillCluster(old, { namespaces: 3, targetMiB: 50 });
    objects = await snapshotObjects(old);
    figures.push(`fill ${seconds(start)}`);
    start = performance.now();
    const made = await lifeboatOn(oldHost, lb, ['backup']);
    assert.equal(made.code, 0, made.stderr);
    figures.push(`backup ${seconds(start)}`);
  } finally {
    if (!KEEP) await old.stop();
  }
  const backup = await new Catalog(new FsStore(lb.storeDir), 'lab', { trust: TEST_TRUST }).resolve('latest');
  backupId = backup.backupId;
  assert.equal(backup.kit.files.find((f) => f.role === 'cluster-configuration')?.source?.from, 'configmap', 'kubeadm wrote no ClusterConfiguration file: the backup took it from the ConfigMap');

  // The new host: a different name and address, nothing installed; the endpoint points at it.
  start = performance.now();
  lab = await createLab(NET, path.join(work, 'new-lab'));
  newHost = await addBareHost(lab, 'new-1', 21);
  daemons.push(await daemonOn(newHost, lb, {
    daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 } },
    api: { listen: { host: '127.0.0.1', port: 8443 }, tls: { certFile: path.join(work, 'api-pki', 'server.crt'), keyFile: path.join(work, 'api-pki', 'server.key') }, tokensFile: path.join(work, 'tokens') },
    metrics: { listen: { host: '127.0.0.1', port: 9464 } },
    restore: { deleteStaleNodes: true, etcdWaitSeconds: 60, apiserverWaitSeconds: 180, kubeadm: { criSocket: CRI_SOCKET, ignorePreflightErrors: RUNTIME_PREFLIGHT_ERRORS } },
  }));
  figures.push(`new host with the lab kubelet and lifeboat serve ${seconds(start)}`);
});

after(async () => {
  for (const d of daemons) d.child.kill('SIGKILL');
  await Promise.all(daemons.map((d) => d.exited));
  console.log(`# figures: ${figures.join('; ')}`);
  if (KEEP) {
    console.log(`# kept: ${work} (stop the lab with: node scripts/lab/main.ts stop --net ${NET})`);
    return;
  }
  await destroyLab(NET);
  if (work) await rm(work, { recursive: true, force: true });
});

const members = () => [{ name: newHost.name, peerURL: `https://${newHost.address}:2380` }];

test('a fresh-control-plane dry run on the new host restores the snapshot for real and leaves the host as it was', async () => {
  const tree = await hostTree(newHost);
  const planned = await api<{ plan: RestoreView['plan']; job: Job }>(newHost, 'POST', '/v1/restores', { backup: 'latest', mode: 'fresh-control-plane', members: members(), dryRun: true });
  assert.equal(planned.status, 201, JSON.stringify(planned.json));
  const job = await finished(newHost, planned.json.job.id, 120_000);
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  const view = (await api<RestoreView>(newHost, 'GET', `/v1/restores/${planned.json.plan.id}`)).json;
  const dry = view.journal.result.dryRun as { etcd: { revision: string }; wouldRun: string[] };
  assert.ok(BigInt(dry.etcd.revision) >= BigInt(view.plan.targetRevision));
  assert.equal(dry.wouldRun[0], `${kubernetesBinaries().kubeadm} init --config /etc/kubernetes/lifeboat/kubeadm-${view.plan.id}.yaml --ignore-preflight-errors=${['DirAvailable--var-lib-etcd', ...RUNTIME_PREFLIGHT_ERRORS].join(',')}`);
  assert.deepEqual(await hostTree(newHost), tree, 'nothing changed under /etc/kubernetes and /var/lib/etcd');
});

test('fresh-control-plane through lifeboat serve with real kubeadm init: the apiserver on the new host serves the backup', async () => {
  const planned = await api<{ plan: RestoreView['plan'] }>(newHost, 'POST', '/v1/restores', { backup: backupId, mode: 'fresh-control-plane', members: members() });
  assert.equal(planned.status, 201, JSON.stringify(planned.json));
  const plan = planned.json.plan;
  // The lab binds /var/lib/etcd from the host's folder, as a dedicated disk is mounted there.
  assert.equal(plan.self.swap, 'member');
  assert.deepEqual(plan.warnings.filter((w) => !/fewer than two backups/.test(w)), ['/var/lib/etcd is a mount point: the snapshot is restored inside it and its member/ directory is swapped']);
  const start = performance.now();
  const applied = await api<{ job: Job }>(newHost, 'POST', `/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken });
  assert.equal(applied.status, 202, JSON.stringify(applied.json));
  const job = await finished(newHost, applied.json.job.id, 600_000);
  const view = (await api<RestoreView>(newHost, 'GET', `/v1/restores/${plan.id}`)).json;
  assert.equal(job.state, 'succeeded', `${JSON.stringify(job.error)}\n${JSON.stringify(view.journal.steps, null, 1)}`);
  restored = view;
  const took = (step: string) => {
    const s = view.journal.steps[step]!;
    return ((Date.parse(s.finishedAt!) - Date.parse(s.startedAt!)) / 1000).toFixed(1);
  };
  const apiserverReady = (Date.parse(view.journal.steps['wait-apiserver']!.finishedAt!) - Date.parse(view.journal.steps['fetch']!.startedAt!)) / 1000;
  figures.push(`restore: apply to apiserver ready ${apiserverReady.toFixed(1)} s, to job done ${seconds(start)} (${plan.steps.map((s) => `${s} ${took(s)} s`).join(', ')})`);
  assert.equal(view.state, 'done');
});

test('after the restore: every object as it was, Secrets readable and encrypted at rest, the old token authenticates', async () => {
  assert.ok(restored, 'the restore ran');
  assert.deepEqual(await snapshotObjects({ kubectl: (args, o = {}) => adminKubectl(o.host ?? newHost, args, o) }, newHost), objects);
  const secret = JSON.parse((await adminKubectl(newHost, ['get', 'secret', 'credentials', '-n', filled.namespaces[1]!, '-o', 'json'])).stdout) as { data: { user: string } };
  assert.equal(Buffer.from(secret.data.user, 'base64').toString(), 'user-2');
  const raw = await etcdctlOn(newHost, ['get', `/registry/secrets/${filled.namespaces[1]}/credentials`, '--print-value-only']);
  assert.ok(raw.stdout.startsWith('k8s:enc:aescbc:v1:key1:'), `the new apiserver reads Secrets stored with the kit's key: ${JSON.stringify(raw.stdout.slice(0, 24))}`);
  assert.equal(await whoami(newHost, filled.token), `system:serviceaccount:${filled.tokenNamespace}:reader`, 'the token minted before the backup authenticates (sa.key came back)');
});

test('after the restore: kubeadm rewrote kubeadm-config and cluster-info for the new host, and the old host is gone from the cluster', async () => {
  assert.ok(restored, 'the restore ran');
  const ca = await readFile(path.join(newHost.dir, 'etc/kubernetes/pki/ca.crt'));
  // kubeadm-config holds no per-host data any more (kubeadm dropped ClusterStatus): kubeadm init
  // uploads the ClusterConfiguration it was given, which is the backup's (an identical update
  // leaves the restored object as it was).
  const kubeadmConfig = JSON.parse((await adminKubectl(newHost, ['get', 'configmap', 'kubeadm-config', '-n', 'kube-system', '-o', 'json'])).stdout) as { data: { ClusterConfiguration: string } };
  const cc = parse(kubeadmConfig.data.ClusterConfiguration) as { controlPlaneEndpoint: string; clusterName: string; etcd: { local: { dataDir: string } } };
  const given = parseAllDocuments((restored.journal.result.kubeadmConfig as { text: string }).text).map((d) => d.toJS() as { kind: string });
  assert.deepEqual(given.map((d) => d.kind), ['InitConfiguration', 'ClusterConfiguration']);
  assert.deepEqual(cc, given[1], 'the cluster holds the ClusterConfiguration Lifeboat gave kubeadm init');
  assert.equal(cc.controlPlaneEndpoint, `${ENDPOINT_NAME}:6443`);
  assert.equal(cc.clusterName, 'lab');
  assert.equal(cc.etcd.local.dataDir, '/var/lib/etcd');
  assert.deepEqual((given[0] as unknown as { nodeRegistration: unknown }).nodeRegistration, { name: newHost.name, criSocket: CRI_SOCKET }, 'the InitConfiguration names this host and the configured CRI socket');
  assert.equal(existsSync(path.join(newHost.dir, 'etc/kubernetes/kubeadm-config.yaml')), false, 'as after kubeadm init, no ClusterConfiguration file: the ConfigMap stays the source');

  const join = restored.journal.result.join as JoinInstructions;
  const caHash = createHash('sha256').update(new X509Certificate(ca).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
  const m = new RegExp(`^kubeadm join ${ENDPOINT_NAME.replaceAll('.', '\\.')}:6443 --token ([a-z0-9]{6})\\.[a-z0-9]{16} --discovery-token-ca-cert-hash sha256:${caHash} --control-plane --certificate-key [0-9a-f]{64}$`).exec(join.command);
  assert.ok(m, `a real kubeadm join line for the restored CA: ${join.command.replace(/(--token|--certificate-key) \S+/g, '$1 <secret>')}`);
  // cluster-info: the endpoint and the restored CA as kubeadm writes them, signed for the new token by the bootstrap signer.
  await until('cluster-info is signed for the join token', async () => {
    const info = JSON.parse((await adminKubectl(newHost, ['get', 'configmap', 'cluster-info', '-n', 'kube-public', '-o', 'json'])).stdout) as { data: Record<string, string> };
    return `jws-kubeconfig-${m[1]}` in info.data;
  }, 60_000);
  const info = JSON.parse((await adminKubectl(newHost, ['get', 'configmap', 'cluster-info', '-n', 'kube-public', '-o', 'json'])).stdout) as { data: { kubeconfig: string } };
  const kubeconfig = parse(info.data.kubeconfig) as { clusters: { cluster: { server: string; 'certificate-authority-data': string } }[] };
  assert.equal(kubeconfig.clusters[0]!.cluster.server, `https://${ENDPOINT_NAME}:6443`);
  assert.deepEqual(Buffer.from(kubeconfig.clusters[0]!.cluster['certificate-authority-data'], 'base64'), ca);

  // The old host's master lease was removed by Lifeboat; the new one is the apiserver's own.
  assert.deepEqual(restored.journal.result.cleanup, { kept: [], removed: [oldHost.address], staleNodes: [oldHost.name], nodesDeleted: [oldHost.name], dryRun: false });
  const leases = await etcdctlOn(newHost, ['get', '/registry/masterleases/', '--prefix', '--keys-only']);
  assert.deepEqual(leases.stdout.split('\n').filter(Boolean), [`/registry/masterleases/${newHost.address}`]);
  await until('the kubernetes Service has only the new host as its endpoint', async () => {
    const ep = JSON.parse((await adminKubectl(newHost, ['get', 'endpointslices', '-n', 'default', '-l', 'kubernetes.io/service-name=kubernetes', '-o', 'json'])).stdout) as { items: { endpoints: { addresses: string[] }[] }[] };
    return JSON.stringify(ep.items.flatMap((s) => s.endpoints.flatMap((e) => e.addresses))) === JSON.stringify([newHost.address]);
  }, 60_000);
  const nodes = (await adminKubectl(newHost, ['get', 'nodes', '-o', 'name'])).stdout.split('\n').filter(Boolean);
  assert.deepEqual(nodes, [`node/${newHost.name}`]);
  // The old host's mirror pods (owned by its Node) go with it.
  await until('no pod of the old host is left', async () => {
    const pods = (await adminKubectl(newHost, ['get', 'pods', '-n', 'kube-system', '-o', 'name'])).stdout;
    return !pods.includes(oldHost.name);
  }, 120_000);
});

test('a second new host joins with the join command the restore returned: two etcd members, two apiservers', async () => {
  assert.ok(restored && lab, 'the restore ran');
  const join = restored.journal.result.join as JoinInstructions;
  const second = await addBareHost(lab, 'new-2', 22, newHost.address);
  // kubeadm does not distribute the encryption config: the join instructions say to copy it.
  const encryption = restored.plan.files.find((f) => f.role === 'encryption-provider-config')!;
  assert.ok(join.before.some((line) => line.includes(encryption.path)), `the join instructions name ${encryption.path}`);
  await mkdir(path.dirname(path.join(second.dir, encryption.path)), { recursive: true, mode: 0o700 });
  await copyFile(path.join(newHost.dir, encryption.path), path.join(second.dir, encryption.path));

  const [command, ...args] = join.command.split(' ');
  assert.equal(command, 'kubeadm');
  const start = performance.now();
  // The command is for a host with a container runtime; the lab host has none.
  const joined = await execOnHost(second, kubernetesBinaries().kubeadm, [...args, '--cri-socket', CRI_SOCKET, `--ignore-preflight-errors=${RUNTIME_PREFLIGHT_ERRORS.join(',')}`, '-v=1'], { allowFailure: true, timeoutMs: 600_000 });
  assert.equal(joined.code, 0, `kubeadm join failed:\n${joined.stderr.split('\n').slice(-30).join('\n')}`);
  figures.push(`kubeadm join new-2 ${seconds(start)}`);

  await until('etcd has two started members and is healthy', async () => {
    const list = JSON.parse((await etcdctlOn(second, ['member', 'list', '-w', 'json'])).stdout) as { members: { name?: string; isLearner?: boolean }[] };
    return list.members.length === 2 && list.members.every((m) => m.name && !m.isLearner);
  }, 120_000);
  const list = JSON.parse((await etcdctlOn(newHost, ['member', 'list', '-w', 'json'])).stdout) as { members: { name: string; clientURLs: string[] }[] };
  assert.deepEqual(list.members.map((m) => m.name).sort(), ['new-1', 'new-2']);
  for (const h of [newHost, second]) assert.ok(list.members.some((m) => m.clientURLs.includes(`https://${h.address}:2379`)), `member of ${h.name} serves on its own address`);
  const health = JSON.parse((await etcdctlOn(newHost, ['endpoint', 'health', '--cluster', '-w', 'json'])).stdout) as { health: boolean }[];
  assert.deepEqual(health.map((h) => h.health), [true, true]);
  for (const h of [newHost, second]) {
    await until(`the apiserver on ${h.name} is ready`, async () => (await adminKubectl(h, ['get', '--raw', '/readyz'], { allowFailure: true })).stdout.trim() === 'ok', 120_000);
  }
  // The restored data is what the second apiserver serves too.
  assert.deepEqual(await snapshotObjects({ kubectl: (a, o = {}) => adminKubectl(o.host ?? second, a, o) }, second), objects);

  // And the restored cluster backs up as the old one did: a complete kit, its ClusterConfiguration from the ConfigMap.
  const made = await lifeboatOn(second, lb, ['backup']);
  assert.equal(made.code, 0, made.stderr);
  const latest = await new Catalog(new FsStore(lb.storeDir), 'lab', { trust: TEST_TRUST }).resolve('latest');
  assert.notEqual(latest.backupId, backupId);
  assert.deepEqual(latest.kit.missing, []);
  assert.equal(latest.kit.files.find((f) => f.role === 'cluster-configuration')?.source?.from, 'configmap');
  assert.deepEqual(latest.etcd.members.map((m) => m.name).sort(), ['new-1', 'new-2']);
  assert.ok(BigInt(latest.etcd.revision) > BigInt(restored.plan.targetRevision));
});
