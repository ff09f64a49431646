import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { createDecryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { CancelledError, ConflictError } from '../../src/errors/errors.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { readyz, startClusterRoots, type ClusterRoots, type NodeRoot } from '../../scripts/rig/cluster-roots.ts';
import { populateRig } from '../../scripts/rig/populate.ts';
import { takeBackup } from '../support/backups.ts';
import { configOf, ETCDUTL, quietLog } from '../support/lifeboat.ts';

/** Rolling an in-place restore back, on a one-member control plane under the stand-in kubelet. */
let work: string;
let cluster: ClusterRoots;
let node: NodeRoot;
let engine: RestoreEngine;
let backup: StoredManifest;
const key = await generateIdentity();

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-rollback-'));
  cluster = await startClusterRoots({ base: path.join(work, 'cluster'), names: ['cp-1'] });
  node = cluster.nodes[0]!;
  const storeDir = path.join(work, 'store');
  const config = configOf({
    cluster: 'it',
    node: 'cp-1',
    etcd: { endpoints: [node.clientUrl], tls: node.tls, dialTimeoutMs: 3000 },
    kit: { hostRoot: node.root },
    store: { fs: { dir: storeDir } },
    encryption: { recipients: [key.recipient] },
    tools: { etcdutl: ETCDUTL, etcd: cluster.etcd },
    restore: { etcdWaitSeconds: 30, apiserverWaitSeconds: 30 },
    daemon: { stateDir: path.join(work, 'state') },
  });
  await populateRig(cluster, { keys: 300, valueBytes: [64, 512], seed: 3 });
  const store = new FsStore(storeDir);
  backup = await takeBackup(config, store);
  const later = cluster.client();
  try {
    await later.put('/registry/after-backup').value('still here after a rollback');
  } finally {
    later.close();
  }
  engine = new RestoreEngine({ store, catalog: new Catalog(store, config.cluster), decrypt: createDecryptStream, exec: processExecutor, log: quietLog, config });
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const manifest = (name: string) => readFile(path.join(node.root, 'etc/kubernetes/manifests', name));

async function liveValue(): Promise<string | null> {
  await cluster.waitHealthy();
  const client = cluster.client();
  try {
    return await client.get('/registry/after-backup').string();
  } finally {
    client.close();
  }
}

test('rolled back after the members stopped: the manifests come back and the old member serves again', async () => {
  const [etcdBefore, apiserverBefore] = await Promise.all([manifest('etcd.yaml'), manifest('kube-apiserver.yaml')]);
  const plan = await engine.plan({ backup: backup.backupId, mode: 'in-place' });
  // Cancelled (a daemon shutting down) while waiting for etcd to stop: journaled as interrupted.
  const abort = new AbortController();
  await assert.rejects(
    engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity], through: 'stop-etcd', signal: abort.signal, report: (p) => p === 'stop-etcd' && abort.abort() }),
    CancelledError,
  );
  const cut = (await engine.get(plan.id)).journal.steps['stop-etcd']!;
  assert.equal(cut.state, 'failed');
  assert.equal(cut.interrupted, true);
  const resumed = await engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [], through: 'stop-etcd' });
  assert.equal(resumed.journal.steps['stop-etcd']?.state, 'done', 'resumed without an identity: the backup was already fetched');
  assert.equal(resumed.journal.steps['stop-etcd']?.attempts, 2);
  await assert.rejects(manifest('etcd.yaml'), { code: 'ENOENT' });
  assert.equal(await readyz(node), undefined, 'the apiserver is stopped');
  // One restore at a time on a node.
  await assert.rejects(engine.plan({ backup: backup.backupId, mode: 'in-place' }), (e: unknown) => e instanceof ConflictError && e.message.includes(plan.id));
  await assert.rejects(engine.rollback(plan.id, { confirmationToken: 'nope' }), /confirmation token/);

  const view = await engine.rollback(plan.id, { confirmationToken: plan.confirmationToken });
  assert.equal(view.state, 'rolled-back');
  assert.ok((await manifest('etcd.yaml')).equals(etcdBefore));
  assert.ok((await manifest('kube-apiserver.yaml')).equals(apiserverBefore));
  assert.equal(await liveValue(), 'still here after a rollback');
  await assert.rejects(stat(path.join(plan.staging, 'archive')), { code: 'ENOENT' }, 'the decrypted backup is removed');
  await assert.rejects(engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity] }), ConflictError);
  // Rolling back again changes nothing.
  assert.equal((await engine.rollback(plan.id, { confirmationToken: plan.confirmationToken })).state, 'rolled-back');
});

test('rolled back after a complete restore: the old data dir and manifests come back, the restored data is kept aside', async () => {
  const etcdBefore = await manifest('etcd.yaml');
  const plan = await engine.plan({ backup: backup.backupId, mode: 'in-place' });
  const done = await engine.apply(plan.id, { confirmationToken: plan.confirmationToken, identities: [key.identity] });
  assert.equal(done.state, 'done');
  assert.equal(await liveValue(), null, 'the restore removed what was written after the backup');
  assert.ok(!(await manifest('etcd.yaml')).equals(etcdBefore));

  const view = await engine.rollback(plan.id, { confirmationToken: plan.confirmationToken });
  assert.equal(view.state, 'rolled-back');
  assert.ok(view.journal.rollback!.actions.some((a) => /put the old data back/.test(a)));
  assert.ok((await manifest('etcd.yaml')).equals(etcdBefore));
  assert.equal(await liveValue(), 'still here after a rollback');
  assert.equal(await readyz(node), 200);
  const varLib = await readdir(path.join(node.root, 'var/lib'));
  assert.ok(varLib.includes(`etcd.lifeboat-failed-${plan.id}`), 'the restored data is set aside, not deleted');
  assert.ok(!varLib.some((d) => d.includes(`lifeboat-aside-${plan.id}`)), 'the old data is back in place');
});
