/**
 * In-place restores through the daemons on the real lab, as an operator would at 3 a.m.: three
 * kubeadm control-plane hosts (real `kubeadm init` and `join --control-plane`, Kubernetes and
 * etcd 3.6 built from source, scripts/lab/), filled through kubectl; one `lifeboat serve` on
 * each host with its API on the host's address, a shared directory store, and the real CLI
 * (`lifeboat restore apply --all`, `restore rollback --all`) and curl against their APIs. What a
 * restore brought back is read as a user checks it: with kubectl, a ServiceAccount token, and
 * etcdctl on the hosts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import type { Job } from '../../src/jobs/job.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import { etcdFacts, StaticPod } from '../../src/restore/manifests.ts';
import { startKubeCluster, waitForNodes, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects, type FillResult } from '../../scripts/lab/fill.ts';
import type { LabHost } from '../../scripts/lab/hosts.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { curl, until, type DaemonProcess } from '../support/daemon.ts';
import { daemonOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { errorLines, runCli, spawnCli } from '../support/lifeboat.ts';
import { apiOf, backupThroughApi, etcdctlOn, keyCountAt, killOn, kubectlOn, kubernetesEndpoints, liveDigest, manifestsOf, memberStatus, restoresOn, stagedFiles, stopDaemon, whoami } from '../support/restore-nodes.ts';

const NET = 25;
const NAMES = ['cp-1', 'cp-2', 'cp-3'];
/** The master lease of a control-plane host that no longer exists (written without a lease: it never expires by itself). */
const STALE = `10.249.${NET}.99`;
let work: string;
let cluster: KubeCluster;
let hosts: LabHost[];
let filled: FillResult;
let lb: LabLifeboat;
let pki: ApiPki;
const daemons = new Map<string, DaemonProcess>();
const tokens = { viewer: generateToken(), operator: generateToken(), restorer: generateToken() };
const key = await generateIdentity();
let backupId: string;
let backupRevision: bigint;
/** The filled objects as they were when the backup was taken. */
let objects: Map<string, string>;
/** Every host's etcd and kube-apiserver manifests as kubeadm wrote them. */
let original: Awaited<ReturnType<typeof manifestsOf>>[];
/** What each daemon wrote to stderr that is not a JSON log line (a crash). */
const crashes = new Map<string, string>();

const api = () => apiOf(pki, tokens);
const daemonUrl = (i: number) => `https://${hosts[i]!.address}:8443`;
const cliEnv = () => ({ LIFEBOAT_CLIENT__URL: daemonUrl(0), LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN: tokens.restorer });
const allDaemons = () => NAMES.flatMap((n, i) => ['--daemon', `${n}=${daemonUrl(i)}`]);

/** `lifeboat restore rollback --all` through the real CLI: every member says rolled back, then the cluster is ready again. */
async function rollbackAll(): Promise<void> {
  const rolled = await runCli(['restore', 'rollback', '--all', '--backup', backupId, ...allDaemons()], cliEnv());
  assert.equal(rolled.code, 0, rolled.stdout + rolled.stderr + crashed());
  for (const name of NAMES) assert.match(rolled.stdout, new RegExp(`^${name}: rolled back$`, 'm'));
  await waitForNodes(cluster, NAMES);
}
const applyAll = () => ['restore', 'apply', '--all', '--backup', backupId, '--mode', 'in-place', ...allDaemons()];
const crashed = () => [...crashes].map(([n, t]) => `${n}: ${t}`).join('\n');

async function startDaemon(i: number, withIdentity = true): Promise<DaemonProcess> {
  const host = hosts[i]!;
  const d = await daemonOn(host, withIdentity ? lb : { ...lb, identityFile: undefined }, {
    daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 }, shutdownGraceSeconds: 2 },
    api: { listen: { host: host.address, port: 8443 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile: path.join(work, 'tokens') },
    metrics: { listen: { host: '127.0.0.1', port: 9464 } },
  });
  daemons.set(host.name, d);
  d.child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString().split('\n').filter((l) => l !== '' && !l.startsWith('{')).join('\n');
    if (text) crashes.set(d.name, `${crashes.get(d.name) ?? ''}${text}\n`);
  });
  return d;
}

/** Waits until a job on daemon `i` ends. */
async function finished(i: number, id: string): Promise<Job> {
  let last: Job | undefined;
  await until(`job ${id} ends`, async () => {
    last = ((await api().get('viewer', daemonUrl(i), `/v1/jobs/${id}`)).json as { job: Job }).job;
    return last.state === 'succeeded' || last.state === 'failed';
  }, 120_000);
  return last!;
}

/** Whether the namespace made after the backup exists (the cluster serves the data from after the backup). */
const lateNamespace = async (host: LabHost) => (await kubectlOn(host, ['get', 'namespace', 'made-after-backup', '-o', 'name'])).code === 0;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-daemon-'));
  const phases: string[] = [];
  cluster = await startKubeCluster({ net: NET, dir: work, names: NAMES, onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  console.log(`# lab: ${phases.join(', ')}`);
  hosts = cluster.hosts;
  // At least 50 MiB through kubectl: the restore moves a real database, not a toy one.
  filled = await fillCluster(cluster, { namespaces: 3, targetMiB: 50 });
  // What a control-plane host removed since leaves: its master lease, and its Node object.
  await etcdctlOn(hosts[0]!, ['put', `/registry/masterleases/${STALE}`, JSON.stringify({ kind: 'Endpoints', apiVersion: 'v1', metadata: { name: STALE, creationTimestamp: null }, subsets: [{ addresses: [{ ip: STALE }] }] })]);
  await cluster.kubectl(['create', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'cp-old', labels: { 'node-role.kubernetes.io/control-plane': '' } } }) });
  await until('the apiservers publish the stale master lease as an endpoint of the kubernetes Service', async () => (await kubernetesEndpoints(hosts[0]!)).includes(STALE), 60_000);
  original = await Promise.all(hosts.map(manifestsOf));

  pki = await makeApiPki(path.join(work, 'api-pki'), hosts.map((h) => `IP:${h.address}`));
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'oncall')}\n${tokenLine(tokens.restorer, 'restorer', 'dr-team')}\n`);
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  // cp-3 starts without an identity: restores there are refused until it gets one.
  for (const i of [0, 1, 2]) await startDaemon(i, i !== 2);

  // One backup through the API, on whichever daemon leads.
  objects = await snapshotObjects(cluster);
  const done = await backupThroughApi(api(), hosts.map((_, i) => daemonUrl(i)));
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  backupId = done.backupId!;
  backupRevision = BigInt((done.result as { revision: string }).revision);

  // Changes after the backup: the restore must undo them, a rollback bring them back.
  await cluster.kubectl(['create', 'namespace', 'made-after-backup']);
  await cluster.kubectl(['delete', 'secret', 'credentials', '-n', filled.namespaces[2]!]);
});

after(async () => {
  for (const d of daemons.values()) d.child.kill('SIGKILL');
  await Promise.all([...daemons.values()].map((d) => d.exited));
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('refused with a clear 4xx and nothing changed: a viewer or operator, a wrong backup, a wrong token, a daemon without an identity; a dry run touches nothing live', async () => {
  const before = await Promise.all(hosts.map(liveDigest));
  const body = { backup: backupId, mode: 'in-place' };
  const cp1 = daemonUrl(0);
  for (const role of ['viewer', 'operator'] as const) {
    const res = await api().post(role, cp1, '/v1/restores', body);
    assert.equal(res.status, 403, res.body);
    assert.equal(res.json?.code, 'FORBIDDEN');
    assert.match(res.json?.message as string, /needs role restorer/);
    assert.equal((await api().get(role, cp1, '/v1/restores')).status, 403);
  }
  const unknown = await api().post('restorer', cp1, '/v1/restores', { backup: '20200101T000000.000Z-r5', mode: 'in-place' });
  assert.equal(unknown.status, 404, unknown.body);
  assert.equal(unknown.json?.code, 'NOT_FOUND');
  assert.match(unknown.json?.message as string, /20200101T000000\.000Z-r5/);
  const malformed = await api().post('restorer', cp1, '/v1/restores', { backup: 'not-an-id', mode: 'in-place' });
  assert.equal(malformed.status, 400, malformed.body);
  assert.equal(malformed.json?.field, '/body/backup');

  const planned = await curl(['--cacert', pki.ca.cert, '-H', `Authorization: Bearer ${tokens.restorer}`, '-X', 'POST', '-H', 'Content-Type: application/json', '-d', JSON.stringify(body), '-D', '-', `${cp1}/v1/restores`]);
  assert.equal(planned.status, 201, planned.body);
  const plan = (JSON.parse(planned.body.slice(planned.body.indexOf('{'))) as { plan: RestoreView['plan'] }).plan;
  assert.match(planned.body, new RegExp(`location: /v1/restores/${plan.id}`, 'i'));
  assert.equal(plan.node, 'cp-1');
  assert.deepEqual(plan.members.map((m) => m.name), NAMES);
  assert.deepEqual(plan.members.map((m) => m.peerURL), hosts.map((h) => `https://${h.address}:2380`), 'the members as etcd knows them, not as the manifests of the joined hosts list them');
  assert.equal(BigInt(plan.targetRevision), backupRevision + BigInt(plan.bumpRevision));
  assert.equal(plan.self.dataDir, '/var/lib/etcd');
  const wrong = await api().post('restorer', cp1, `/v1/restores/${plan.id}/apply`, { confirmationToken: '0'.repeat(32) });
  assert.equal(wrong.status, 400, wrong.body);
  assert.equal(wrong.json?.field, '/body/confirmationToken');
  const view = (await api().get('restorer', cp1, `/v1/restores/${plan.id}`)).json as unknown as RestoreView;
  assert.equal(view.state, 'planned');
  assert.ok(Object.values(view.journal.steps).every((s) => s.state === 'pending' && s.attempts === 0));
  assert.deepEqual(await stagedFiles(hosts[0]!, plan), ['journal.json', 'plan.json']);

  const onThree = (await api().post('restorer', daemonUrl(2), '/v1/restores', body)).json as { plan: RestoreView['plan'] };
  const noKey = await api().post('restorer', daemonUrl(2), `/v1/restores/${onThree.plan.id}/apply`, { confirmationToken: onThree.plan.confirmationToken });
  assert.equal(noKey.status, 400, noKey.body);
  assert.equal(noKey.json?.code, 'CONFIG_INVALID');
  assert.equal(noKey.json?.field, '/encryption/identityFile');
  assert.match(noKey.json?.hint as string, /encryption\.identityFile/);
  const noDryRun = await api().post('restorer', daemonUrl(2), '/v1/restores', { ...body, dryRun: true });
  assert.equal(noDryRun.status, 400, noDryRun.body);
  assert.equal(noDryRun.json?.field, '/encryption/identityFile');
  for (const i of [0, 2]) assert.deepEqual(((await api().get('viewer', daemonUrl(i), '/v1/jobs?kind=restore')).json as { jobs: Job[] }).jobs, [], 'no restore job was made');

  // A dry run restores the snapshot for real into temp dirs on cp-1 and touches nothing live.
  const dry = await api().post('restorer', cp1, '/v1/restores', { ...body, dryRun: true });
  assert.equal(dry.status, 201, dry.body);
  const dryPlan = dry.json as { plan: RestoreView['plan']; job: Job };
  const dryJob = await finished(0, dryPlan.job.id);
  assert.equal(dryJob.state, 'succeeded', JSON.stringify(dryJob.error));
  assert.ok(!JSON.stringify(dryJob).includes(dryPlan.plan.confirmationToken), 'the job record holds no token');
  const result = dryJob.result as { state: string; steps: Record<string, string>; dryRunResult: { etcd: { revision: string; keyCount: number }; wouldWait: string[]; etcdManifestDiff: string }; cleanup: Record<string, unknown> };
  assert.equal(result.state, 'done');
  assert.deepEqual(Object.keys(result.steps), dryPlan.plan.steps);
  assert.ok(Object.values(result.steps).every((s) => s === 'done'));
  assert.ok(BigInt(result.dryRunResult.etcd.revision) >= BigInt(dryPlan.plan.targetRevision), 'the restored member served at the target revision');
  const snapshotRevision = BigInt(result.dryRunResult.etcd.revision) - BigInt(dryPlan.plan.bumpRevision);
  assert.equal(result.dryRunResult.etcd.keyCount, await keyCountAt(hosts[0]!, snapshotRevision), 'the restored member holds the keys the live cluster held at the snapshot\'s revision');
  assert.ok(result.dryRunResult.wouldWait.some((w) => /healthy quorum/.test(w)));
  assert.match(result.dryRunResult.etcdManifestDiff, new RegExp(`\\+\\s+- --initial-cluster-token=${dryPlan.plan.clusterToken}`));
  assert.match(result.dryRunResult.etcdManifestDiff, /\+\s+- --initial-cluster=cp-1=https:\/\/[\d.]+:2380,cp-2=https:\/\/[\d.]+:2380,cp-3=/);
  assert.deepEqual({ ...result.cleanup, kept: [] }, { kept: [], removed: [STALE], staleNodes: ['cp-old'], nodesDeleted: [], dryRun: true });
  for (const k of result.cleanup.kept as string[]) assert.ok(hosts.some((h) => h.address === k), `kept the lease of member address ${k}`);
  assert.deepEqual(await stagedFiles(hosts[0]!, dryPlan.plan), ['journal.json', 'logs', 'plan.json'], 'everything temporary is gone');

  // The CLI prints a plan readably: the exact etcdutl command, what is set aside, the token and what to run next.
  const printed = await runCli(['restore', 'plan', '--backup', backupId, '--mode', 'in-place'], cliEnv());
  assert.equal(printed.code, 0, printed.stderr);
  const cliPlanId = /^restore +(restore-\S+):/m.exec(printed.stdout)?.[1];
  assert.ok(cliPlanId, printed.stdout);
  const cliPlan = ((await api().get('restorer', cp1, `/v1/restores/${cliPlanId}`)).json as unknown as RestoreView).plan;
  assert.ok(printed.stdout.includes(`etcdutl    ${[cliPlan.self.etcdutl.command, ...cliPlan.self.etcdutl.args].join(' ')}\n`), printed.stdout);
  // kubeadm's /var/lib/etcd is a mount point on these hosts: its member dir is what is set aside.
  assert.ok(printed.stdout.includes(`set aside  /var/lib/etcd/member -> /var/lib/etcd/member.lifeboat-aside-${cliPlanId} (the old etcd data; never deleted)`), printed.stdout);
  assert.ok(printed.stdout.includes(`token      ${cliPlan.confirmationToken}`));
  assert.ok(printed.stdout.includes(`lifeboat restore apply ${cliPlanId} --token ${cliPlan.confirmationToken} --wait`));
  assert.match(printed.stdout, /lifeboat restore apply --all --backup \S+ --mode in-place/);

  // apply --all through the real CLI: cp-3 has no identity, so the first phase fails there and nothing live is touched.
  const refused = await runCli(applyAll(), cliEnv());
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  const lines = errorLines(refused.stderr);
  assert.equal(lines.length, 1, refused.stderr);
  assert.match(lines[0]!, /stopped in phase fetch: cp-3: .*encryption\/identityFile.*Nothing live was touched/);
  assert.match(lines[0]!, /run the same command again to resume/);

  assert.deepEqual(await Promise.all(hosts.map(liveDigest)), before);
  assert.ok((await etcdctlOn(hosts[1]!, ['get', `/registry/masterleases/${STALE}`, '--keys-only'])).stdout.includes(STALE), 'the stale lease is still there');
  for (const h of hosts) assert.ok(await lateNamespace(h), `the cluster still serves what was made after the backup (kubectl on ${h.name})`);
});

test('rolled back after every member stopped (not a complete restore): the manifests come back and the old members serve again', async () => {
  // cp-3 gets its identity: a graceful stop and a start on the new config.
  await stopDaemon(daemons.get('cp-3')!, 'SIGTERM');
  await startDaemon(2);

  // cp-2's daemon dies as soon as its etcd is stopped (every member stops before any restores).
  const killed = killOn(daemons.get('cp-2')!, 'restore-snapshot started');
  const first = spawnCli(applyAll(), cliEnv());
  await Promise.race([killed, first.result]);
  const cut = await first.result;
  assert.equal(daemons.get('cp-2')!.child.signalCode, 'SIGKILL', `cp-2's daemon was not killed: ${cut.stdout}${cut.stderr}`);
  assert.equal(cut.code, 1, cut.stdout + cut.stderr);
  assert.match(cut.stdout, /cp-1: resuming restore-/, 'the restore the refused run planned is resumed');
  assert.match(errorLines(cut.stderr).join('\n'), /stopped in phase restore: cp-2: /);
  const restarted = await startDaemon(1);
  assert.ok(restarted.logs.some((l) => l.phase === 'restore-interrupted' && l.step === 'restore-snapshot'), 'the restarted daemon reports the interrupted restore');

  const views = await Promise.all(hosts.map(async (_, i) => (await restoresOn(api(), daemonUrl(i))).find((v) => !v.plan.dryRun && v.journal.steps['stop-etcd']?.state === 'done')!));
  for (const [i, h] of hosts.entries()) {
    assert.ok(views[i], `a restore on ${h.name} stopped its etcd`);
    const now = await manifestsOf(h);
    assert.equal(now.etcd, undefined, `etcd.yaml is out of ${h.name}'s manifests dir`);
    assert.equal(now.apiserver, undefined);
    const ready = await kubectlOn(h, ['get', '--raw', '/readyz']);
    assert.notEqual(ready.code, 0, `the apiserver on ${h.name} is stopped`);
  }
  const snapshotStep = views[1]!.journal.steps['restore-snapshot'];
  assert.equal(snapshotStep?.state, 'failed');
  assert.equal(snapshotStep?.interrupted, true);
  // One restore at a time on a node; a rollback needs the plan's token.
  const another = await api().post('restorer', daemonUrl(1), '/v1/restores', { backup: backupId, mode: 'in-place' });
  assert.equal(another.status, 409, another.body);
  assert.ok((another.json?.message as string).includes(views[1]!.plan.id));
  const wrong = await api().post('restorer', daemonUrl(1), `/v1/restores/${views[1]!.plan.id}/rollback`, { confirmationToken: 'f'.repeat(32) });
  assert.equal(wrong.status, 400, wrong.body);
  assert.equal(wrong.json?.field, '/body/confirmationToken');

  await rollbackAll();
  for (const [i, h] of hosts.entries()) {
    const view = (await api().get('restorer', daemonUrl(i), `/v1/restores/${views[i]!.plan.id}`)).json as unknown as RestoreView;
    assert.equal(view.state, 'rolled-back');
    assert.deepEqual(await manifestsOf(h), original[i], `kubeadm's manifests are back on ${h.name}, byte for byte`);
    assert.ok(await lateNamespace(h), `the old data serves again: kubectl on ${h.name} sees what was made after the backup`);
    assert.ok((await memberStatus(h)).revision < BigInt(view.plan.targetRevision), `${h.name}'s member is on its old data`);
    assert.ok(!(await stagedFiles(h, view.plan)).includes('archive'), 'the decrypted backup is removed');
  }
  // cp-1 had swapped its data in before cp-2 failed: that restored data is kept aside, never deleted.
  const onOne = await readdir(path.join(hosts[0]!.dir, 'var/lib/etcd'));
  assert.ok(onOne.includes(`member.lifeboat-failed-${views[0]!.plan.id}`), onOne.join(' '));
  assert.ok(!onOne.some((d) => d.startsWith('member.lifeboat-aside-')), 'the old data is back in place');
  // Applying it again is refused, and so is rolling it back again; nothing changes.
  const again = await api().post('restorer', daemonUrl(0), `/v1/restores/${views[0]!.plan.id}/apply`, { confirmationToken: views[0]!.plan.confirmationToken });
  assert.equal(again.status, 409, again.body);
  const twice = await api().post('restorer', daemonUrl(0), `/v1/restores/${views[0]!.plan.id}/rollback`, { confirmationToken: views[0]!.plan.confirmationToken });
  assert.equal(twice.status, 409, twice.body);
  assert.match(twice.json?.message as string, /already rolled back/);
  assert.deepEqual(await manifestsOf(hosts[0]!), original[0]);
  assert.equal(((await api().get('restorer', daemonUrl(0), `/v1/restores/${views[0]!.plan.id}`)).json as unknown as RestoreView).state, 'rolled-back');
});

test('lifeboat restore apply --all: a daemon SIGKILLed mid-restore and another while its apiserver starts, each restarted, the same command completes; every object is back as it was at the backup', async () => {
  const liveBefore = (await memberStatus(hosts[0]!)).revision;
  // Killed as soon as the snapshot restore starts on cp-2 (every etcd stopped).
  const killedSnapshot = killOn(daemons.get('cp-2')!, 'restore-snapshot started');
  const first = spawnCli(applyAll(), cliEnv());
  await Promise.race([killedSnapshot, first.result]);
  const one = await first.result;
  assert.equal(daemons.get('cp-2')!.child.signalCode, 'SIGKILL', `cp-2's daemon was not killed: ${one.stdout}${one.stderr}`);
  assert.match(one.stdout, /cp-1: planned restore-/, 'the rolled-back restore is not resumed: a new one is planned');
  assert.match(errorLines(one.stderr).join('\n'), /stopped in phase restore: cp-2: /);
  await startDaemon(1);
  const [killedJob] = ((await api().get('viewer', daemonUrl(1), '/v1/jobs?kind=restore&limit=1')).json as { jobs: Job[] }).jobs;
  assert.equal(killedJob?.state, 'failed');
  assert.equal(killedJob?.phase, 'interrupted');

  // Resumed, and cut again: cp-1's daemon dies while it waits for its kube-apiserver.
  const killedApiserver = killOn(daemons.get('cp-1')!, 'start-apiserver started');
  const second = spawnCli(applyAll(), cliEnv());
  await Promise.race([killedApiserver, second.result]);
  const two = await second.result;
  assert.equal(daemons.get('cp-1')!.child.signalCode, 'SIGKILL', `cp-1's daemon was not killed: ${two.stdout}${two.stderr}`);
  assert.match(two.stdout, /cp-1: resuming restore-/);
  assert.match(errorLines(two.stderr).join('\n'), /stopped in phase start-apiservers: cp-1: /);
  await startDaemon(0);

  const third = await runCli(applyAll(), cliEnv());
  assert.equal(third.code, 0, third.stdout + third.stderr + crashed());
  assert.match(third.stdout, /restore done on every member/);
  console.log(`# resumed apply --all: ${/restore done on every member.*/.exec(third.stdout)?.[0]}`);

  const views = await Promise.all(hosts.map(async (_, i) => (await restoresOn(api(), daemonUrl(i))).find((v) => !v.plan.dryRun && v.state === 'done')!));
  assert.ok(views.every((v) => v !== undefined), 'a done restore on every node');
  const plan = views[0]!.plan;
  assert.ok(views.every((v) => v.plan.clusterToken === plan.clusterToken && v.plan.bumpRevision === plan.bumpRevision));
  assert.ok(BigInt(plan.targetRevision) > liveBefore, 'the bump covers what the cluster wrote since the backup');
  assert.equal(views[1]!.journal.steps['restore-snapshot']?.attempts, 2, 'cp-2 restored the snapshot again after the kill');
  assert.equal(views[0]!.journal.steps['start-apiserver']?.attempts, 2, 'cp-1 waited for its apiserver again after the kill');
  assert.deepEqual({ ...(views[0]!.journal.result.cleanup as object), kept: [] }, { kept: [], removed: [STALE], staleNodes: ['cp-old'], nodesDeleted: [], dryRun: false });
  assert.equal(views[1]!.journal.steps['cleanup-leases']?.note, 'runs on cp-1');

  await waitForNodes(cluster, NAMES);
  for (const [i, h] of hosts.entries()) {
    assert.deepEqual(await snapshotObjects(cluster, h), objects, `kubectl on ${h.name} reads back every object as it was at the backup`);
    assert.ok(!(await lateNamespace(h)), `the namespace made after the backup is gone (kubectl on ${h.name})`);
    const secret = await kubectlOn(h, ['get', 'secret', 'credentials', '-n', filled.namespaces[2]!, '-o', 'jsonpath={.data.user}']);
    assert.equal(Buffer.from(secret.stdout, 'base64').toString(), 'user-3', 'the Secret deleted after the backup is back, and readable (encrypted at rest)');
    assert.equal(await whoami(h, filled.token), `system:serviceaccount:${filled.tokenNamespace}:reader`, 'the token minted before the backup authenticates');
    const status = await memberStatus(h);
    assert.ok(status.revision >= BigInt(plan.targetRevision), `${h.name} is at revision ${status.revision}, below ${plan.targetRevision}`);
    // The manifest names the new token, the whole cluster, a new cluster and kubeadm's data dir.
    const file = path.join(h.dir, 'etc/kubernetes/manifests/etcd.yaml');
    const facts = etcdFacts(StaticPod.parse((await manifestsOf(h)).etcd!.toString(), file));
    const was = etcdFacts(StaticPod.parse(original[i]!.etcd!.toString(), file));
    assert.equal(was.initialClusterToken, undefined, 'kubeadm sets no --initial-cluster-token');
    assert.equal(facts.initialClusterToken, plan.clusterToken);
    assert.equal(facts.initialCluster, hosts.map((x) => `${x.name}=https://${x.address}:2380`).join(','));
    assert.equal(facts.initialClusterState, 'new');
    assert.equal(facts.hostDataDir, '/var/lib/etcd');
    // The old data is kept aside; nothing of the restore is left over; the decrypted backup is gone.
    const etcdDir = await readdir(path.join(h.dir, 'var/lib/etcd'));
    assert.ok((await readdir(path.join(h.dir, 'var/lib/etcd', `member.lifeboat-aside-${views[i]!.plan.id}`))).includes('wal'), `${h.name} keeps its old data: ${etcdDir.join(' ')}`);
    assert.deepEqual(etcdDir.filter((d) => d.startsWith('lifeboat-restore-')), []);
    await assert.rejects(stat(path.join(h.dir, views[i]!.plan.staging, 'archive')), { code: 'ENOENT' });
  }
  await until('the kubernetes Service no longer lists the stale master lease', async () => !(await kubernetesEndpoints(hosts[1]!)).includes(STALE), 60_000);
  // A watch from a revision before the restore is told to relist.
  const watched = await etcdctlOn(hosts[2]!, ['watch', `--rev=${backupRevision}`, '/registry/']).then(() => '', (err: Error) => err.message);
  assert.match(watched, /required revision has been compacted/);

  // Applying a done restore again is refused; the same command again changes nothing.
  const done = await api().post('restorer', daemonUrl(0), `/v1/restores/${plan.id}/apply`, { confirmationToken: plan.confirmationToken });
  assert.equal(done.status, 409, done.body);
  const fourth = await runCli(applyAll(), cliEnv());
  assert.equal(fourth.code, 0, fourth.stderr + crashed());
  assert.match(fourth.stdout, /already done on every member/);
  // Every daemon lived through its etcd being restored under it.
  assert.equal(crashed(), '');
  for (const d of daemons.values()) assert.equal(d.child.exitCode, null, `${d.name} exited`);
  assert.ok(daemons.get('cp-3')!.logs.some((l) => l.phase === 'election-paused'), 'cp-3 left the leader election while its etcd was restored');
});

test('lifeboat restore rollback --all after a complete restore: every member back on its old data and manifests (what was made after the backup is back), the restored data kept aside', async () => {
  const restored = await Promise.all(hosts.map(async (_, i) => (await restoresOn(api(), daemonUrl(i))).find((v) => v.state === 'done' && !v.plan.dryRun)!));
  await rollbackAll();
  for (const [i, h] of hosts.entries()) {
    const view = (await api().get('restorer', daemonUrl(i), `/v1/restores/${restored[i]!.plan.id}`)).json as unknown as RestoreView;
    assert.equal(view.state, 'rolled-back');
    assert.ok(view.journal.rollback!.actions.some((a) => /put the old data back/.test(a)));
    assert.deepEqual(await manifestsOf(h), original[i], `kubeadm's manifests are back on ${h.name}`);
    assert.ok(await lateNamespace(h), `kubectl on ${h.name} sees the namespace made after the backup again`);
    assert.equal((await kubectlOn(h, ['get', 'secret', 'credentials', '-n', filled.namespaces[2]!])).code, 1, 'the Secret deleted after the backup is deleted again');
    assert.ok((await memberStatus(h)).revision < BigInt(view.plan.targetRevision), `${h.name} serves its old data`);
    const etcdDir = await readdir(path.join(h.dir, 'var/lib/etcd'));
    assert.ok((await readdir(path.join(h.dir, 'var/lib/etcd', `member.lifeboat-failed-${view.plan.id}`))).includes('wal'), `the restored data is kept aside on ${h.name}`);
    assert.ok(!etcdDir.includes(`member.lifeboat-aside-${view.plan.id}`), 'the old data is back in place');
  }
  assert.equal(crashed(), '');
  for (const d of daemons.values()) assert.equal(d.child.exitCode, null, `${d.name} exited`);
});
