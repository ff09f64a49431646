/**
 * The backup DaemonSet's securityContext on the real kernel: uid 0, every capability dropped,
 * no_new_privs (allowPrivilegeEscalation: false). A kubeadm kit whose files are all root's, 0600
 * in 0700 directories, is read by ownership alone: `lifeboat backup` run that way backs up every
 * kit file and etcd, and the same command as uid 65532 fails on the first root-only file it
 * opens. setpriv(1) sets up the process as a container runtime would.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { createDecryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { kitSpecs } from '../../src/kit/collect.ts';
import { extractBackup } from '../../src/restore/extract.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { startEtcd, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { configDoc, configOf, NODE_FLAGS, quietLog, REPO } from '../support/lifeboat.ts';
import { SIGNING_KEY_FILE, TEST_TRUST } from '../support/signing.ts';

const run = promisify(execFile);
/** The image's default non-root user: the negative control. */
const NON_ROOT = 65532;
const CLI = path.join(REPO, 'src/cli/main.ts');

/** setpriv's options for a process with uid and gid `id`, no supplementary groups, no capability in any set, and no_new_privs. */
const noCapabilities = (id: number) => [
  `--reuid=${id}`, `--regid=${id}`, '--clear-groups',
  '--inh-caps=-all', '--bounding-set=-all', '--ambient-caps=-all', '--no-new-privs',
];

async function setpriv(id: number, argv: string[]) {
  try {
    const { stdout, stderr } = await run('setpriv', [...noCapabilities(id), '--', ...argv], { env: { PATH: process.env.PATH, HOME: '/nonexistent' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Every file and directory under `dir`: owner and group root, files 0600, directories 0700. */
async function rootOnly(dir: string): Promise<string[]> {
  const files: string[] = [];
  await chown(dir, 0, 0);
  await chmod(dir, 0o700);
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    await chown(p, 0, 0);
    await chmod(p, e.isDirectory() ? 0o700 : 0o600);
    if (e.isFile()) files.push(p);
  }
  return files;
}

describe('a backup as uid 0 with no capability', { skip: process.getuid?.() !== 0 ? 'needs root, to own the kit and to switch users' : false }, () => {
  let work: string;
  let hostRoot: string;
  let cluster: EtcdCluster | undefined;
  let kitFiles: string[];
  let identity: { identity: string; recipient: string };

  /** A store directory and a config for `owner`, as the DaemonSet's mounts give them: the signing key 0400. */
  async function setup(name: string, owner: number) {
    const dir = path.join(work, name);
    await mkdir(dir, { mode: 0o755 });
    const storeDir = path.join(dir, 'store');
    await mkdir(storeDir, { mode: 0o700 });
    await chown(storeDir, owner, owner);
    const signingKey = path.join(dir, 'signing.key');
    await copyFile(SIGNING_KEY_FILE, signingKey);
    await chown(signingKey, owner, owner);
    await chmod(signingKey, 0o400);
    const doc = { ...configDoc(cluster!, hostRoot, storeDir, [identity.recipient]), signing: { keyFile: signingKey } };
    const configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, stringify(doc), { mode: 0o644 });
    return { storeDir, configFile, doc };
  }

  const backup = (id: number, configFile: string) => setpriv(id, [process.execPath, ...NODE_FLAGS, CLI, 'backup', '--config', configFile]);

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-nocaps-'));
    await chmod(work, 0o755);
    identity = await generateIdentity();
    hostRoot = path.join(work, 'host');
    const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'), { hosts: ['m1'] });
    cluster = await startEtcd({ tree, members: 1, dataRoot: path.join(work, 'etcd') });
    kitFiles = await rootOnly(tree.root);
    assert.ok(kitFiles.includes(tree.etcd.clientKey) && kitFiles.includes(path.join(tree.pki, 'ca.key')));
  });

  after(async () => {
    await cluster?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('setpriv gives the process uid 0, no capability in any set, and no_new_privs', async () => {
    const res = await setpriv(0, ['cat', '/proc/self/status']);
    assert.equal(res.code, 0, res.stderr);
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(res.stdout)?.[1]?.trim();
    assert.deepEqual(field('Uid')?.split(/\s+/), ['0', '0', '0', '0'], 'real, effective, saved and filesystem uid');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(field(set), '0000000000000000', set);
    assert.equal(field('NoNewPrivs'), '1');
    // Without DAC_OVERRIDE, root cannot read a file of another user that its mode closes.
    const foreign = path.join(work, 'foreign');
    await writeFile(foreign, 'not root\'s', { mode: 0o600 });
    await chown(foreign, NON_ROOT, NON_ROOT);
    const denied = await setpriv(0, ['cat', foreign]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Permission denied/);
  });

  test('backs up etcd and every file of the root-only kit, byte for byte, with their modes', async () => {
    const { storeDir, configFile, doc } = await setup('root', 0);
    const res = await backup(0, configFile);
    assert.equal(res.code, 0, res.stderr);
    const store = new FsStore(storeDir);
    const [manifest, ...more] = await new Catalog(store, configOf(doc).cluster, { trust: TEST_TRUST }).list();
    assert.ok(manifest, 'one backup committed');
    assert.equal(more.length, 0);
    // Every file the kit names, the keys and the encryption-provider config among them.
    const specs = await kitSpecs({ ...configOf(doc).kit, hostRoot });
    const expected = specs.filter((s) => s.required).map((s) => s.path).sort();
    assert.ok(expected.includes('/etc/kubernetes/pki/ca.key') && expected.includes('/etc/kubernetes/enc/enc.yaml'), expected.join(', '));
    const inKit = manifest.kit.files.map((f) => f.path);
    for (const p of expected) assert.ok(inKit.includes(p), `${p} is in the kit`);
    const out = path.join(work, 'extracted');
    await extractBackup({ store, decrypt: createDecryptStream, log: quietLog }, manifest, [identity.identity], out);
    for (const f of manifest.kit.files) {
      assert.equal(f.mode, 0o600, `${f.path}: the mode it has on the host`);
      assert.deepEqual(await readFile(path.join(out, f.entry)), await readFile(path.join(hostRoot, f.path)), f.path);
    }
    assert.ok((await lstat(path.join(out, 'etcd/snapshot.db'))).size > 0, 'the etcd snapshot');
  });

  test('the same command as uid 65532 cannot read the kit: it fails, names the file, and commits nothing', async () => {
    // Everything of its own (store, signing key, config) is readable to it: only the kit is not.
    const { storeDir, configFile } = await setup('non-root', NON_ROOT);
    const res = await backup(NON_ROOT, configFile);
    assert.notEqual(res.code, 0, res.stderr);
    assert.match(res.stderr, /cannot read \S+\/etc\/kubernetes\/pki\/\S+: EACCES/);
    assert.deepEqual(await readdir(storeDir, { recursive: true }), []);
  });
});
