import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readdir, readFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import type { Config } from '../../src/config/schema.ts';
import { createDecryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { BadRequestError, ConfigError, NotFoundError } from '../../src/errors/errors.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import { etcdFacts, StaticPod } from '../../src/restore/manifests.ts';
import { applyAll, type NodeDriver } from '../../src/restore/orchestrate.ts';
import type { InPlaceStep, RestorePlan, StepName } from '../../src/restore/plan.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { readyz, startClusterRoots, type ClusterRoots, type NodeRoot } from '../../scripts/rig/cluster-roots.ts';
import { keysOf, liveDigest } from '../support/restore-nodes.ts';
import { takeBackup } from '../support/backups.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { populate } from '../../scripts/rig/populate.ts';
import { configOf, ETCDUTL, quietLog, REPO } from '../support/lifeboat.ts';

/**
 * In-place restore of a 3-member TLS etcd whose members run from static pod manifests under the
 * stand-in kubelet (scripts/rig/kubelet.ts), one host root per node, one engine per node.
 */
const run = promisify(execFile);
let work: string;
let cluster: ClusterRoots;
let storeDir: string;
let identityFile: string;
let backup: StoredManifest;
/** Every key and value at the backup's revision. */
let snapshotKeys: Map<string, Buffer>;
const key = await generateIdentity();
const STALE_LEASES = ['10.0.0.1', '10.0.0.2', '10.0.0.3'];

function configFor(node: NodeRoot, endpoints = [node.clientUrl]): Record<string, unknown> {
  return {
    cluster: 'it',
    node: node.name,
    etcd: { endpoints, tls: node.tls, dialTimeoutMs: 3000 },
    kit: { hostRoot: node.root },
    store: { fs: { dir: storeDir } },
    encryption: { recipients: [key.recipient] },
    tools: { etcdutl: ETCDUTL, etcd: cluster.etcd },
    restore: { etcdWaitSeconds: 40, apiserverWaitSeconds: 30 },
    daemon: { stateDir: path.join(work, 'state', node.name) },
  };
}

function engineFor(node: NodeRoot): RestoreEngine {
  const config: Config = configOf(configFor(node));
  const store = new FsStore(storeDir);
  return new RestoreEngine({ store, catalog: new Catalog(store, config.cluster), decrypt: createDecryptStream, exec: processExecutor, log: quietLog, config });
}


before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-inplace-'));
  storeDir = path.join(work, 'store');
  cluster = await startClusterRoots({ base: path.join(work, 'cluster') });
  const client = cluster.client();
  try {
    await populate(client, { keys: 3000, valueBytes: [64, 1024], seed: 11 });
    // Written without a lease: the worst case, they would never expire by themselves.
    for (const ip of [...STALE_LEASES, '127.0.0.1']) await client.put(`/registry/masterleases/${ip}`).value(`{"kind":"Endpoints","subsets":[{"addresses":[{"ip":"${ip}"}]}]}`);
    await client.put('/registry/minions/cp-old').value('{"kind":"Node","metadata":{"name":"cp-old","labels":{"node-role.kubernetes.io/control-plane":""}}}');
    await client.put('/registry/minions/cp-1').value('{"kind":"Node","metadata":{"name":"cp-1","labels":{"node-role.kubernetes.io/control-plane":""}}}');
    await client.put('/registry/minions/worker-1').value('{"kind":"Node","metadata":{"name":"worker-1","labels":{}}}');
  } finally {
    client.close();
  }
  snapshotKeys = (await keysOf(cluster, cluster.nodes[0]!)).keys;
  identityFile = path.join(work, 'identity.txt');
  await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
  const config = configOf(configFor(cluster.nodes[0]!, cluster.nodes.map((n) => n.clientUrl)));
  backup = await takeBackup(config, new FsStore(storeDir));
  // Changes after the backup: the restore must undo them.
  const after = cluster.client();
  try {
    for (let i = 0; i < 50; i++) await after.put(`/registry/after-backup/k${i}`).value('late');
    await after.delete().key([...snapshotKeys.keys()].find((k) => k.startsWith('/registry/pods/'))!);
  } finally {
    after.close();
  }
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Plans on every node: the first plan's token and bump pinned on the others, as `apply --all` does. */
async function planAll(engines: RestoreEngine[], body: Record<string, unknown> = {}): Promise<RestorePlan[]> {
  const first = await engines[0]!.plan({ backup: backup.backupId, mode: 'in-place', ...body });
  const rest = await Promise.all(engines.slice(1).map((e) => e.plan({ backup: backup.backupId, mode: 'in-place', clusterToken: first.clusterToken, bumpRevision: first.bumpRevision, ...body })));
  return [first, ...rest];
}

function inProcess(engine: RestoreEngine, node: NodeRoot, plan: RestorePlan, identities: string[], phases: StepName[] = []): NodeDriver {
  return {
    name: node.name,
    plan,
    applyThrough: async (through) => {
      await engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities, through, report: (p) => phases.push(p) });
    },
  };
}

/** Applies a plan in a separate process running the engine, SIGKILLed as soon as it reports `killAt`. */
function inChild(node: NodeRoot, plan: RestorePlan, killAt: StepName, killed: { at?: StepName }): NodeDriver {
  return {
    name: node.name,
    plan,
    applyThrough: async (through: InPlaceStep) => {
      const configFile = path.join(work, `config-${node.name}.json`);
      await writeFile(configFile, JSON.stringify(configFor(node)));
      const script = `
        import { readFileSync } from 'node:fs';
        import { resolveConfig } from '${REPO}/src/config/load.ts';
        import { parseIdentityFile, createDecryptStream } from '${REPO}/src/crypto/age.ts';
        import { processExecutor } from '${REPO}/src/exec/executor.ts';
        import { createLogger } from '${REPO}/src/log/logger.ts';
        import { RestoreEngine } from '${REPO}/src/restore/engine.ts';
        import { Catalog } from '${REPO}/src/store/catalog.ts';
        import { FsStore } from '${REPO}/src/store/fs-store.ts';
        const [configFile, id, token, through, identityFile] = process.argv.slice(1);
        const config = resolveConfig(JSON.parse(readFileSync(configFile, 'utf8')));
        const store = new FsStore(config.store.dir);
        const engine = new RestoreEngine({ store, catalog: new Catalog(store, config.cluster), decrypt: createDecryptStream, exec: processExecutor, log: createLogger('silent'), config });
        await engine.apply(id, { confirmationToken: token, identities: parseIdentityFile(readFileSync(identityFile, 'utf8'), identityFile), through, report: (p) => process.stdout.write('phase ' + p + '\\n') });
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, configFile, plan.id, plan.confirmationToken, through, identityFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().split('\n').includes(`phase ${killAt}`) && !killed.at) {
          killed.at = killAt;
          child.kill('SIGKILL');
        }
      });
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
      if (code !== 0) throw new Error(`the engine process for ${node.name} ended with ${signal ?? `code ${code}`}: ${stderr.slice(-500)}`);
    },
  };
}

async function checkRestored(plans: RestorePlan[]): Promise<void> {
  const expected = new Map(snapshotKeys);
  for (const ip of STALE_LEASES) expected.delete(`/registry/masterleases/${ip}`);
  const target = BigInt(backup.etcd.revision) + BigInt(plans[0]!.bumpRevision);
  for (const [i, node] of cluster.nodes.entries()) {
    const { keys, revision } = await keysOf(cluster, node);
    assert.ok(revision >= target, `${node.name} is at revision ${revision}, below ${target}`);
    assert.equal(keys.size, expected.size, `${node.name} serves ${keys.size} keys, the snapshot had ${expected.size} (less the stale leases)`);
    for (const [k, v] of expected) assert.deepEqual(keys.get(k), v, `${node.name} ${k}`);
    assert.equal([...keys.keys()].filter((k) => k.startsWith('/registry/after-backup/')).length, 0);
    // The manifest carries the new token, the whole cluster, and a consistent data dir.
    const manifest = path.join(node.root, 'etc/kubernetes/manifests/etcd.yaml');
    const pod = StaticPod.parse(await readFile(manifest, 'utf8'), manifest);
    const facts = etcdFacts(pod);
    assert.equal(facts.initialClusterToken, plans[i]!.clusterToken);
    assert.notEqual(facts.initialClusterToken, cluster.token);
    assert.equal(facts.initialCluster, cluster.nodes.map((n) => `${n.name}=${n.peerUrl}`).join(','));
    assert.equal(facts.initialClusterState, 'new');
    assert.equal(facts.hostDataDir, '/var/lib/etcd');
    // The old data dir is kept, the decrypted backup is not.
    const aside = path.join(node.root, `var/lib/etcd.lifeboat-aside-${plans[i]!.id}`);
    assert.ok((await readdir(path.join(aside, 'member'))).includes('wal'), `${aside} holds the old data`);
    await assert.rejects(stat(path.join(plans[i]!.staging, 'archive')), { code: 'ENOENT' });
    assert.equal(await readyz(node), 200, `the apiserver of ${node.name} is ready`);
  }
  // A watch from a revision before the restore is refused as compacted.
  const n = cluster.nodes[1]!;
  const etcdctl = etcdBinaries().etcdctl;
  const watched = await run(etcdctl, [`--endpoints=${n.clientUrl}`, `--cacert=${n.tls.caFile}`, `--cert=${n.tls.certFile}`, `--key=${n.tls.keyFile}`, 'watch', `--rev=${backup.etcd.revision}`, '/registry/masterleases/127.0.0.1'], { timeout: 15_000 }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }),
  );
  assert.notEqual(watched.code, 0);
  assert.match(watched.out, /required revision has been compacted/);
}

test('a plan for a wrong backup, a wrong token or a missing identity is a clear 4xx and changes nothing', async () => {
  const engine = engineFor(cluster.nodes[0]!);
  const before = await Promise.all(cluster.nodes.map(liveDigest));
  await assert.rejects(engine.plan({ backup: '20201124T033000.000Z-r5', mode: 'in-place' }), NotFoundError);
  await assert.rejects(engine.plan({ backup: 'not-an-id', mode: 'in-place' }), (e: unknown) => e instanceof BadRequestError && e.field === '/backup');
  const plan = await engine.plan({ backup: backup.backupId, mode: 'in-place' });
  await assert.rejects(engine.apply(plan.id, { confirmationToken: 'f'.repeat(32), identities: [key.identity] }), (e: unknown) => e instanceof BadRequestError && e.field === '/confirmationToken');
  await assert.rejects(engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [] }), (e: unknown) => e instanceof ConfigError && e.field === '/encryption/identityFile');
  const view = await engine.get(plan.id);
  assert.equal(view.state, 'planned');
  assert.ok(Object.values(view.journal.steps).every((s) => s.state === 'pending' && s.attempts === 0));
  assert.deepEqual((await readdir(plan.staging)).sort(), ['journal.json', 'plan.json']);
  assert.deepEqual(await Promise.all(cluster.nodes.map(liveDigest)), before);
});

test('a dry run restores the snapshot for real into temp dirs and touches nothing live', async () => {
  const node = cluster.nodes[0]!;
  const engine = engineFor(node);
  const before = await Promise.all(cluster.nodes.map(liveDigest));
  const plan = await engine.plan({ backup: backup.backupId, mode: 'in-place', dryRun: true });
  assert.ok(plan.self.etcdutl.args.includes(path.join(plan.dryRunRoot!, `var/lib/etcd.lifeboat-restore-${plan.id}`)));
  const phases: StepName[] = [];
  const view = await engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity], report: (p) => phases.push(p) });
  assert.equal(view.state, 'done');
  assert.deepEqual(phases, plan.steps);
  const dry = view.journal.result.dryRun as { etcd: { revision: string; keyCount: number }; wouldWait: string[]; etcdManifestDiff: string };
  assert.ok(BigInt(dry.etcd.revision) >= BigInt(plan.targetRevision), 'the restored member served at the target revision');
  assert.equal(dry.etcd.keyCount, snapshotKeys.size);
  assert.ok(dry.wouldWait.some((w) => /healthy quorum/.test(w)));
  assert.match(dry.etcdManifestDiff, new RegExp(`\\+\\s+- --initial-cluster-token=${plan.clusterToken}`));
  assert.match(dry.etcdManifestDiff, new RegExp(`-\\s+- --initial-cluster-token=${cluster.token}`));
  const cleanup = view.journal.result.cleanup as { removed: string[]; kept: string[]; staleNodes: string[]; dryRun: boolean };
  assert.deepEqual(cleanup, { kept: ['127.0.0.1'], removed: STALE_LEASES, staleNodes: ['cp-old'], nodesDeleted: [], dryRun: true });
  // Nothing live changed; everything temporary is gone.
  assert.deepEqual(await Promise.all(cluster.nodes.map(liveDigest)), before);
  const client = cluster.client();
  try {
    assert.equal((await client.getAll().prefix('/registry/masterleases/').keys()).length, 4);
    assert.equal((await client.getAll().prefix('/registry/after-backup/').keys()).length, 50);
  } finally {
    client.close();
  }
  assert.deepEqual((await readdir(plan.staging)).sort(), ['journal.json', 'logs', 'plan.json']);
});

test('apply --all restores all 3 members in place: the snapshot\'s keys at the bumped revision, old data kept', async () => {
  const engines = cluster.nodes.map(engineFor);
  const plans = await planAll(engines);
  assert.ok(plans.every((p) => p.clusterToken === plans[0]!.clusterToken && p.bumpRevision === plans[0]!.bumpRevision));
  const phases: StepName[][] = cluster.nodes.map(() => []);
  const report = await applyAll(cluster.nodes.map((n, i) => inProcess(engines[i]!, n, plans[i]!, [key.identity], phases[i])));
  assert.equal(report.ok, true, JSON.stringify(report.phases.at(-1)));
  assert.deepEqual(phases[0], plans[0]!.steps, 'every step reported as a phase, in order');
  await checkRestored(plans);
  const views = await Promise.all(engines.map((e, i) => e.get(plans[i]!.id)));
  assert.ok(views.every((v) => v.state === 'done'));
  assert.deepEqual(views[0]!.journal.result.cleanup, { kept: ['127.0.0.1'], removed: STALE_LEASES, staleNodes: ['cp-old'], nodesDeleted: [], dryRun: false });
  assert.equal(views[1]!.journal.steps['cleanup-leases']?.note, 'runs on cp-1');
});

test('a daemon killed mid-apply (twice) resumes when applied again, and completes', async () => {
  const engines = cluster.nodes.map(engineFor);
  const plans = await planAll(engines);
  // The live cluster already jumped by the first restore's bump: the new bump covers that.
  assert.ok(BigInt(plans[0]!.targetRevision) > (await keysOf(cluster, cluster.nodes[0]!)).revision);
  const drive = (first: NodeDriver) => applyAll([first, ...cluster.nodes.slice(1).map((n, i) => inProcess(engines[i + 1]!, n, plans[i + 1]!, [key.identity]))]);

  const killedA: { at?: StepName } = {};
  const a = await drive(inChild(cluster.nodes[0]!, plans[0]!, 'restore-snapshot', killedA));
  assert.equal(killedA.at, 'restore-snapshot');
  assert.equal(a.ok, false);
  assert.equal(a.failedPhase, 'restore');
  assert.equal((await engines[0]!.get(plans[0]!.id)).state, 'interrupted');

  const killedB: { at?: StepName } = {};
  const b = await drive(inChild(cluster.nodes[0]!, plans[0]!, 'wait-quorum', killedB));
  assert.equal(killedB.at, 'wait-quorum');
  assert.equal(b.failedPhase, 'wait-quorum');
  const interrupted = await engines[0]!.recover();
  assert.deepEqual(interrupted, [{ id: plans[0]!.id, step: 'wait-quorum', dryRun: false }]);
  const recovered = await engines[0]!.get(plans[0]!.id);
  assert.equal(recovered.state, 'failed');
  assert.equal(recovered.journal.steps['restore-snapshot']?.attempts, 2, 'redone once after the first kill');

  const c = await drive(inProcess(engines[0]!, cluster.nodes[0]!, plans[0]!, [key.identity]));
  assert.equal(c.ok, true, JSON.stringify(c.phases.at(-1)));
  await checkRestored(plans);
  assert.equal((await engines[0]!.get(plans[0]!.id)).journal.steps['wait-quorum']?.attempts, 2);
  // No restore dir is left over, and both restores' old data dirs are kept.
  const varLib = await readdir(path.join(cluster.nodes[0]!.root, 'var/lib'));
  assert.deepEqual(varLib.filter((d) => d.includes('lifeboat-restore')), []);
  assert.equal(varLib.filter((d) => d.includes('lifeboat-aside')).length, 2);
});
