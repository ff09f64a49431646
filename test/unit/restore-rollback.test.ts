import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { resolveConfig } from '../../src/config/load.ts';
import { createDecryptStream } from '../../src/crypto/age.ts';
import type { Executor } from '../../src/exec/executor.ts';
import { createLogger } from '../../src/log/logger.ts';
import { RestoreEngine } from '../../src/restore/engine.ts';
import { RestoreRecords } from '../../src/restore/journal.ts';
import { FRESH_STEPS } from '../../src/restore/plan.ts';
import { kitFile, sampleManifest, sha256 } from '../support/fixtures.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { samplePlan } from '../support/plans.ts';

/**
 * Rolling back a fresh-control-plane restore on a host that had no etcd data dir and no kit:
 * the steps run for real on a temp host root, with a stand-in etcdutl that makes the data dir.
 */
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-restore-rollback-unit-'));
test.after(() => rm(work, { recursive: true, force: true }));

const ID = 'restore-20261124T040000.000Z-abcdef';

test('rollback on a host that had no data dir nor kit removes what the restore placed', async () => {
  const hostRoot = path.join(work, 'host');
  const stateDir = path.join(work, 'state');
  await mkdir(path.join(hostRoot, 'etc/kubernetes/pki'), { recursive: true });
  // One kit target was there already, with other content: set aside by the restore, back after the rollback.
  await writeFile(path.join(hostRoot, 'etc/kubernetes/pki/ca.crt'), 'the host\'s own ca.crt');
  const config = resolveConfig({ cluster: 'it', node: 'cp-1', kit: { hostRoot }, daemon: { stateDir } });

  const caKey = kitFile('/etc/kubernetes/pki/ca.key', 'CA PRIVATE KEY', 0o600);
  const saKey = kitFile('/etc/kubernetes/pki/sa.key', 'SA PRIVATE KEY', 0o600);
  const caCrt = kitFile('/etc/kubernetes/pki/ca.crt', 'CA CERT', 0o644);
  const kit = [caKey, saKey, caCrt];
  const base = sampleManifest(1, kit.map((k) => k.file), '20261124T030000.000Z-r100');
  const stored: StoredManifest = {
    ...base,
    cluster: 'it',
    snapshot: { ...base.snapshot, sha256: sha256('s'), dbSha256: sha256('d') },
    archive: { key: 'it/backups/20261124T030000.000Z-r100/archive.tar.age', size: 1, sha256: sha256('a'), compression: { algorithm: 'none', level: 1 }, encryption: { format: 'age', recipients: [] } },
    completedAt: base.createdAt,
  };
  const catalog = { list: async () => [stored], get: async () => stored, resolve: async () => stored };

  const records = new RestoreRecords(stateDir);
  const restoreDir = `/var/lib/etcd.lifeboat-restore-${ID}`;
  const plan = samplePlan({
    id: ID,
    mode: 'fresh-control-plane',
    steps: [...FRESH_STEPS],
    staging: records.dir(ID),
    files: kit.map((k) => ({ path: k.file.path, role: k.file.role, sha256: k.file.sha256, mode: k.file.mode, size: k.file.size, existing: k === caCrt ? 'differs' : 'absent' })),
    self: { name: 'cp-1', peerURL: 'https://10.0.0.1:2380', dataDir: '/var/lib/etcd', restoreDir, swap: 'dir', etcdutl: { command: 'etcdutl', args: ['snapshot', 'restore', 'x', '--data-dir', path.join(hostRoot, restoreDir)] } },
  });
  const journal = await records.create(plan);
  // The backup was fetched and checked: its kit files are staged.
  journal.steps.fetch = { state: 'done', attempts: 1 };
  journal.facts.fetched = true;
  await records.save(journal);
  for (const k of kit) {
    const staged = path.join(plan.staging, 'archive', ...k.file.entry.split('/'));
    await mkdir(path.dirname(staged), { recursive: true });
    await writeFile(staged, k.content.content);
  }
  // etcdutl snapshot restore, standing in: makes the data dir.
  const exec: Executor = {
    async run(_command: string, args: readonly string[]) {
      const dir = args[args.indexOf('--data-dir') + 1]!;
      await mkdir(path.join(dir, 'member', 'snap'), { recursive: true, mode: 0o700 });
      await writeFile(path.join(dir, 'member', 'snap', 'db'), 'restored');
      return { stdout: '', stderr: '' };
    },
    start() {
      throw new Error('no process is started before kubeadm init');
    },
  };
  const engine = new RestoreEngine({ store: new MemoryStore(), catalog, decrypt: createDecryptStream, exec, log: createLogger('silent'), config });

  const applied = await engine.apply(ID, { confirmationToken: plan.confirmationToken, identities: [], through: 'swap-data-dir' });
  assert.equal(applied.journal.steps['swap-data-dir']?.state, 'done');
  const onHost = (p: string) => path.join(hostRoot, p);
  assert.equal(await readFile(onHost('var/lib/etcd/member/snap/db'), 'utf8'), 'restored', 'the restored data is live');
  assert.equal(await readFile(onHost('etc/kubernetes/pki/ca.key'), 'utf8'), 'CA PRIVATE KEY', 'the key is placed');

  const view = await engine.rollback(ID, { confirmationToken: plan.confirmationToken });
  assert.equal(view.state, 'rolled-back');
  await assert.rejects(readFile(onHost('var/lib/etcd/member/snap/db')), { code: 'ENOENT' }, 'the restored data is no longer live');
  assert.equal(await readFile(onHost(`var/lib/etcd.lifeboat-failed-${ID}/member/snap/db`), 'utf8'), 'restored', 'it is set aside, not deleted');
  assert.deepEqual((await readdir(onHost('etc/kubernetes/pki'))).sort(), ['ca.crt', `ca.crt.lifeboat-failed-${ID}`], 'the placed keys are gone');
  assert.equal(await readFile(onHost('etc/kubernetes/pki/ca.crt'), 'utf8'), 'the host\'s own ca.crt');
  assert.ok(view.journal.rollback!.actions.some((a) => /removed the placed \/etc\/kubernetes\/pki\/ca\.key/.test(a)), view.journal.rollback!.actions.join('\n'));
  // Rolling back again changes nothing.
  assert.equal((await engine.rollback(ID, { confirmationToken: plan.confirmationToken })).state, 'rolled-back');
});
