import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import type { Job } from '../../src/jobs/job.ts';
import type { RestoreView } from '../../src/restore/engine.ts';
import { readyz, startClusterRoots, type ClusterRoots } from '../../scripts/rig/cluster-roots.ts';
import { keysOf, liveDigest } from '../support/restore-nodes.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { populateRig } from '../../scripts/rig/populate.ts';
import { freePorts } from '../../scripts/rig/ports.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { curl, spawnDaemon, until, type CurlResult, type DaemonProcess } from '../support/daemon.ts';
import { errorLines, ETCDUTL, runCli, spawnCli, writeConfig } from '../support/lifeboat.ts';

/**
 * Restores through the daemons, as an operator would at 3 a.m.: three `lifeboat serve`
 * processes, one per node root of a 3-member TLS etcd that the stand-in kubelets run from
 * static pod manifests, a shared directory store, and the real CLI (`lifeboat restore apply
 * --all`) and curl against their APIs.
 */
const run = promisify(execFile);
const NAMES = ['cp-1', 'cp-2', 'cp-3'] as const;
let work: string;
let cluster: ClusterRoots;
let pki: ApiPki;
let storeDir: string;
let identityFile: string;
let apiPorts: number[];
const daemons = new Map<string, DaemonProcess>();
const tokens = { viewer: generateToken(), operator: generateToken(), restorer: generateToken() };
const key = await generateIdentity();
let backupId: string;
let backupRevision: bigint;
/** Every /registry key and value at the backup's revision. */
let snapshotKeys: Map<string, Buffer>;

function configDoc(i: number, withIdentity: boolean): Record<string, unknown> {
  const node = cluster.nodes[i]!;
  return {
    cluster: 'it',
    node: node.name,
    etcd: { endpoints: [node.clientUrl], tls: node.tls, dialTimeoutMs: 2000 },
    kit: { hostRoot: node.root },
    store: { fs: { dir: storeDir } },
    encryption: { recipients: [key.recipient], ...(withIdentity ? { identityFile } : {}) },
    tools: { etcdutl: ETCDUTL, etcd: cluster.etcd },
    restore: { etcdWaitSeconds: 40, apiserverWaitSeconds: 30 },
    daemon: {
      stateDir: path.join(work, 'state', node.name),
      schedules: { backup: 'off', prune: 'off', drill: 'off' },
      election: { ttlSeconds: 2 },
      shutdownGraceSeconds: 2,
    },
    api: {
      listen: { host: '127.0.0.1', port: apiPorts[i] },
      tls: { certFile: pki.server.cert, keyFile: pki.server.key },
      tokensFile: path.join(work, 'tokens'),
    },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    log: { level: 'info' },
  };
}

/** What each daemon wrote to stderr that is not a JSON log line (a crash). */
const crashes = new Map<string, string>();

async function startDaemon(i: number, withIdentity = true): Promise<DaemonProcess> {
  const d = await spawnDaemon(NAMES[i]!, await writeConfig(work, configDoc(i, withIdentity)));
  daemons.set(NAMES[i]!, d);
  d.child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString().split('\n').filter((l) => l !== '' && !l.startsWith('{')).join('\n');
    if (text) crashes.set(d.name, `${crashes.get(d.name) ?? ''}${text}\n`);
  });
  return d;
}

async function stopDaemon(name: string, signal: NodeJS.Signals): Promise<void> {
  const d = daemons.get(name)!;
  d.child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`daemon ${name} did not exit after ${signal}; its last log lines:\n${d.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`)), 20_000);
  });
  try {
    await Promise.race([d.exited, stuck]);
  } finally {
    clearTimeout(timer);
  }
}

const url = (i: number, route: string) => `https://127.0.0.1:${apiPorts[i]}${route}`;
const as = (role: keyof typeof tokens) => ['--cacert', pki.ca.cert, '-H', `Authorization: Bearer ${tokens[role]}`];
const postJson = (body: unknown) => ['-X', 'POST', '-H', 'Content-Type: application/json', '-d', JSON.stringify(body)];
const cliEnv = () => ({ LIFEBOAT_CLIENT__URL: url(0, ''), LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN: tokens.restorer });
const allDaemons = () => NAMES.flatMap((n, i) => ['--daemon', `${n}=${url(i, '')}`]);
const applyAll = () => ['restore', 'apply', '--all', '--backup', backupId, '--mode', 'in-place', ...allDaemons()];


async function job(i: number, id: string): Promise<Job> {
  const res = await curl([...as('viewer'), url(i, `/v1/jobs/${id}`)]);
  return (res.json as { job: Job }).job;
}

async function finished(i: number, id: string): Promise<Job> {
  let last: Job | undefined;
  await until(`job ${id} ends`, async () => {
    last = await job(i, id);
    return last.state === 'succeeded' || last.state === 'failed';
  }, 60_000);
  return last!;
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-daemon-'));
  storeDir = path.join(work, 'store');
  cluster = await startClusterRoots({ base: path.join(work, 'cluster'), names: [...NAMES] });
  await populateRig(cluster, { keys: 2000, valueBytes: [64, 1024], seed: 21 });
  snapshotKeys = (await keysOf(cluster, cluster.nodes[0]!, '/registry/')).keys;
  pki = await makeApiPki(path.join(work, 'api-pki'));
  await writeFile(path.join(work, 'tokens'), `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'oncall')}\n${tokenLine(tokens.restorer, 'restorer', 'dr-team')}\n`, { mode: 0o600 });
  identityFile = path.join(work, 'identity.txt');
  await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  apiPorts = await freePorts(3);
  // cp-3 starts without an identity: restores there are refused until it gets one.
  await Promise.all(NAMES.map((_, i) => startDaemon(i, i !== 2)));

  // One backup through the API, on whichever daemon leads.
  let made: { i: number; job: Job } | undefined;
  await until('a leader takes POST /v1/backups', async () => {
    for (const i of [0, 1, 2]) {
      const res = await curl([...as('operator'), ...postJson({}), url(i, '/v1/backups')]);
      if (res.status === 202) {
        made = { i, job: (res.json as { job: Job }).job };
        return true;
      }
    }
    return false;
  }, 30_000);
  const done = await finished(made!.i, made!.job.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  backupId = done.backupId!;
  backupRevision = BigInt((done.result as { revision: string }).revision);

  // Changes after the backup: the restore must undo them.
  const later = cluster.client();
  try {
    for (let i = 0; i < 50; i++) await later.put(`/registry/after-backup/k${i}`).value('late');
    await later.delete().key([...snapshotKeys.keys()].find((k) => k.startsWith('/registry/pods/'))!);
  } finally {
    later.close();
  }
});

after(async () => {
  for (const d of daemons.values()) d.child.kill('SIGKILL');
  await Promise.all([...daemons.values()].map((d) => d.exited));
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('refused with a clear 4xx and nothing changed: a viewer or operator, a wrong backup, a wrong token, a daemon without an identity; a dry run touches nothing live', async () => {
  const before = await Promise.all(cluster.nodes.map(liveDigest));
  const body = { backup: backupId, mode: 'in-place' };
  for (const role of ['viewer', 'operator'] as const) {
    const res = await curl([...as(role), ...postJson(body), url(0, '/v1/restores')]);
    assert.equal(res.status, 403, res.body);
    assert.equal(res.json?.code, 'FORBIDDEN');
    assert.match(res.json?.message as string, /needs role restorer/);
    assert.equal((await curl([...as(role), url(0, '/v1/restores')])).status, 403);
  }
  const unknown = await curl([...as('restorer'), ...postJson({ backup: '20200101T000000.000Z-r5', mode: 'in-place' }), url(0, '/v1/restores')]);
  assert.equal(unknown.status, 404, unknown.body);
  assert.equal(unknown.json?.code, 'NOT_FOUND');
  assert.match(unknown.json?.message as string, /20200101T000000\.000Z-r5/);

  const planned = await curl([...as('restorer'), ...postJson(body), '-D', '-', url(0, '/v1/restores')]);
  assert.equal(planned.status, 201, planned.body);
  const plan = (JSON.parse(planned.body.slice(planned.body.indexOf('{'))) as { plan: RestoreView['plan'] }).plan;
  assert.match(planned.body, new RegExp(`location: /v1/restores/${plan.id}`, 'i'));
  assert.equal(plan.node, 'cp-1');
  assert.deepEqual(plan.members.map((m) => m.name), [...NAMES]);
  assert.equal(BigInt(plan.targetRevision), backupRevision + BigInt(plan.bumpRevision));
  const wrong = await curl([...as('restorer'), ...postJson({ confirmationToken: '0'.repeat(32) }), url(0, `/v1/restores/${plan.id}/apply`)]);
  assert.equal(wrong.status, 400, wrong.body);
  assert.equal(wrong.json?.field, '/body/confirmationToken');

  const onThree = (await curl([...as('restorer'), ...postJson(body), url(2, '/v1/restores')])).json as { plan: RestoreView['plan'] };
  const noKey = await curl([...as('restorer'), ...postJson({ confirmationToken: onThree.plan.confirmationToken }), url(2, `/v1/restores/${onThree.plan.id}/apply`)]);
  assert.equal(noKey.status, 400, noKey.body);
  assert.equal(noKey.json?.code, 'CONFIG_INVALID');
  assert.equal(noKey.json?.field, '/encryption/identityFile');
  assert.match(noKey.json?.hint as string, /encryption\.identityFile/);
  const noDryRun = await curl([...as('restorer'), ...postJson({ ...body, dryRun: true }), url(2, '/v1/restores')]);
  assert.equal(noDryRun.status, 400, noDryRun.body);
  assert.equal(noDryRun.json?.field, '/encryption/identityFile');
  for (const i of [0, 2]) {
    const jobs = (await curl([...as('viewer'), url(i, '/v1/jobs?kind=restore')])).json as { jobs: Job[] };
    assert.deepEqual(jobs.jobs, [], 'no restore job was made');
  }

  // A dry run restores the snapshot for real into temp dirs on cp-1 and touches nothing live.
  const dry = await curl([...as('restorer'), ...postJson({ ...body, dryRun: true }), url(0, '/v1/restores')]);
  assert.equal(dry.status, 201, dry.body);
  const dryPlan = dry.json as { plan: RestoreView['plan']; job: Job };
  const dryJob = await finished(0, dryPlan.job.id);
  assert.equal(dryJob.state, 'succeeded', JSON.stringify(dryJob.error));
  const result = dryJob.result as { state: string; dryRunResult: { etcd: { revision: string; keyCount: number } } };
  assert.equal(result.state, 'done');
  assert.ok(BigInt(result.dryRunResult.etcd.revision) >= BigInt(dryPlan.plan.targetRevision));
  assert.ok(!JSON.stringify(dryJob).includes(dryPlan.plan.confirmationToken), 'the job record holds no token');

  // The CLI prints a plan readably: the exact etcdutl command, what is set aside, the token and what to run next.
  const printed = await runCli(['restore', 'plan', '--backup', backupId, '--mode', 'in-place'], cliEnv());
  assert.equal(printed.code, 0, printed.stderr);
  const cliPlanId = /^restore +(restore-\S+):/m.exec(printed.stdout)?.[1];
  assert.ok(cliPlanId, printed.stdout);
  const cliPlan = ((await curl([...as('restorer'), url(0, `/v1/restores/${cliPlanId}`)])).json as unknown as RestoreView).plan;
  assert.ok(printed.stdout.includes(`etcdutl    ${[cliPlan.self.etcdutl.command, ...cliPlan.self.etcdutl.args].join(' ')}\n`), printed.stdout);
  assert.ok(printed.stdout.includes(`set aside  /var/lib/etcd -> /var/lib/etcd.lifeboat-aside-${cliPlanId}`));
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

  assert.deepEqual(await Promise.all(cluster.nodes.map(liveDigest)), before);
  const live = await keysOf(cluster, cluster.nodes[1]!, '/registry/');
  assert.equal([...live.keys.keys()].filter((k) => k.startsWith('/registry/after-backup/')).length, 50, 'etcd still serves what was written after the backup');
});

test('lifeboat restore apply --all: SIGKILL of a daemon mid-restore, restart, the same command again completes; every member serves the snapshot at the bumped revision, old data kept', async () => {
  // cp-3 gets its identity: a graceful stop and a start on the new config.
  await stopDaemon('cp-3', 'SIGTERM');
  await startDaemon(2);

  // Kill cp-2's daemon as soon as it starts restoring the snapshot (after etcd stopped everywhere).
  const victim = daemons.get('cp-2')!;
  let seen = '';
  const killedAt = new Promise<void>((resolve) => {
    victim.child.stderr!.on('data', (d: Buffer) => {
      seen = (seen + d.toString()).slice(-4096);
      if (seen.includes('"msg":"restore-snapshot started"')) {
        victim.child.kill('SIGKILL');
        resolve();
      }
    });
  });
  const first = spawnCli(applyAll(), cliEnv());
  await Promise.race([killedAt, first.result]);
  const interrupted = await first.result;
  assert.ok(victim.child.signalCode === 'SIGKILL', `cp-2's daemon was not killed: ${interrupted.stdout}${interrupted.stderr}`);
  assert.equal(interrupted.code, 1, interrupted.stdout + interrupted.stderr);
  assert.match(interrupted.stdout, /cp-1: resuming restore-/, 'the restore the refused run planned is resumed');
  const line = errorLines(interrupted.stderr).join('\n');
  assert.match(line, /stopped in phase restore: cp-2: /);
  assert.match(line, /run the same command again to resume/);

  const restarted = await startDaemon(1);
  assert.ok(restarted.logs.some((l) => l.phase === 'restore-interrupted' && l.step === 'restore-snapshot'), 'the restarted daemon reports the interrupted restore');
  // Its job is failed as interrupted; the restore's journal says where it stopped.
  const [killedJob] = ((await curl([...as('viewer'), url(1, '/v1/jobs?kind=restore&limit=1')])).json as { jobs: Job[] }).jobs;
  assert.equal(killedJob?.state, 'failed');
  assert.equal(killedJob?.phase, 'interrupted');
  const cut = ((await curl([...as('restorer'), url(1, '/v1/restores')])).json as { restores: RestoreView[] }).restores.find((v) => v.state === 'failed')!;
  assert.deepEqual(cut.journal.steps['restore-snapshot'], { ...cut.journal.steps['restore-snapshot'], state: 'failed', interrupted: true });
  assert.equal(cut.journal.steps['stop-etcd']?.state, 'done');

  const again = await runCli(applyAll(), cliEnv());
  assert.equal(again.code, 0, again.stdout + again.stderr + [...crashes].join('\n'));
  assert.match(again.stdout, /restore done on every member/);

  // Every member serves exactly the snapshot's keys, at or above the backup's revision plus the bump.
  const views = await Promise.all(NAMES.map(async (_, i) => {
    const list = (await curl([...as('restorer'), url(i, '/v1/restores')])).json as { restores: RestoreView[] };
    return list.restores.find((v) => !v.plan.dryRun && v.state === 'done')!;
  }));
  assert.ok(views.every((v) => v !== undefined), 'a done restore on every node');
  assert.ok(views.every((v) => v.plan.clusterToken === views[0]!.plan.clusterToken && v.plan.bumpRevision === views[0]!.plan.bumpRevision));
  assert.equal(views[1]!.journal.steps['restore-snapshot']?.attempts, 2, 'cp-2 restored the snapshot again after the kill');
  const target = backupRevision + BigInt(views[0]!.plan.bumpRevision);
  for (const [i, node] of cluster.nodes.entries()) {
    const { keys, revision } = await keysOf(cluster, node, '/registry/');
    assert.ok(revision >= target, `${node.name} is at revision ${revision}, below ${target}`);
    assert.equal(keys.size, snapshotKeys.size, `${node.name} serves ${keys.size} /registry keys, the snapshot had ${snapshotKeys.size}`);
    for (const [k, v] of snapshotKeys) assert.deepEqual(keys.get(k), v, `${node.name} ${k}`);
    // The old data dir is kept.
    const aside = path.join(node.root, `var/lib/etcd.lifeboat-aside-${views[i]!.plan.id}`);
    assert.ok((await readdir(path.join(aside, 'member'))).includes('wal'), `${aside} holds the old data`);
    assert.equal(await readyz(node), 200, `the apiserver of ${node.name} is ready`);
  }
  // A watch from a revision before the restore is refused as compacted.
  const n = cluster.nodes[2]!;
  const watched = await run(etcdBinaries().etcdctl, [`--endpoints=${n.clientUrl}`, `--cacert=${n.tls.caFile}`, `--cert=${n.tls.certFile}`, `--key=${n.tls.keyFile}`, 'watch', `--rev=${backupRevision}`, '/registry/'], { timeout: 15_000 }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }),
  );
  assert.notEqual(watched.code, 0);
  assert.match(watched.out, /required revision has been compacted/);

  // Applying a done restore again is refused; the same command again changes nothing.
  const done: CurlResult = await curl([...as('restorer'), ...postJson({ confirmationToken: views[0]!.plan.confirmationToken }), url(0, `/v1/restores/${views[0]!.plan.id}/apply`)]);
  assert.equal(done.status, 409, done.body);
  const third = await runCli(applyAll(), cliEnv());
  assert.equal(third.code, 0, third.stderr + [...crashes].join('\n'));
  assert.match(third.stdout, /already done on every member/);
  // Every daemon lived through its etcd being restored under it.
  assert.deepEqual([...crashes], []);
  for (const d of daemons.values()) assert.equal(d.child.exitCode, null, `${d.name} exited`);
  assert.ok(daemons.get('cp-1')!.logs.some((l) => l.phase === 'election-paused'), 'cp-1 left the leader election while its etcd was restored');
});

test('lifeboat restore rollback --all puts every member back on its old data and manifests, and keeps the restored data aside', async () => {
  const restored = await Promise.all(NAMES.map(async (_, i) => ((await curl([...as('restorer'), url(i, '/v1/restores')])).json as { restores: RestoreView[] }).restores.find((v) => v.state === 'done' && !v.plan.dryRun)!));
  const rolled = await runCli(['restore', 'rollback', '--all', '--backup', backupId, ...allDaemons()], cliEnv());
  assert.equal(rolled.code, 0, rolled.stdout + rolled.stderr + [...crashes].join('\n'));
  for (const name of NAMES) assert.match(rolled.stdout, new RegExp(`^${name}: rolled back$`, 'm'));
  await cluster.waitHealthy(40_000);
  for (const [i, node] of cluster.nodes.entries()) {
    const view = ((await curl([...as('restorer'), url(i, `/v1/restores/${restored[i]!.plan.id}`)])).json as unknown) as RestoreView;
    assert.equal(view.state, 'rolled-back');
    // The old data is back (with what was written after the backup), below the restore's revisions.
    const { keys, revision } = await keysOf(cluster, node, '/registry/');
    assert.equal([...keys.keys()].filter((k) => k.startsWith('/registry/after-backup/')).length, 50, node.name);
    assert.ok(revision < BigInt(view.plan.targetRevision), `${node.name} is at revision ${revision}`);
    const manifest = await readFile(path.join(node.root, 'etc/kubernetes/manifests/etcd.yaml'), 'utf8');
    assert.match(manifest, new RegExp(`--initial-cluster-token=${cluster.token}`), 'the original etcd manifest is back');
    // The restored data is kept aside, never deleted.
    assert.ok((await readdir(path.join(node.root, `var/lib/etcd.lifeboat-failed-${view.plan.id}`, 'member'))).includes('wal'));
  }
  for (const d of daemons.values()) assert.equal(d.child.exitCode, null, `${d.name} exited`);
});
