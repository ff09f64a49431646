/**
 * The image, without a Docker engine.
 *
 * - The Dockerfile lints clean; it uses registry images only (no apt-get, nothing downloaded but
 *   the lock file's packages); its versions are the repository's: Node the node dev
 *   dependency's, etcd scripts/versions.env's, the version label package.json's.
 * - The runtime stage's filesystem, assembled in a temp dir from what its COPY lines bring (the
 *   local tsc output for the build stage, the lock file's production packages for the deps
 *   stage, the locally built etcd binaries for the etcd images), runs `lifeboat --version`, a
 *   backup of a real etcd and kubeadm kit, and a deep verify with the image's own etcdutl.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { validate as validateDockerfile } from 'dockerfile-utils';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { etcdBinaries, pinnedVersions } from '../../scripts/rig/binaries.ts';
import { startEtcd, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { populateRig } from '../../scripts/rig/populate.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { args, dockerfile, DOCKERFILE_TEXT, dockerignore, execForm, expand, finalStage, flagValue, globalArgs, instructions, labels, stageArgs, stages } from '../support/dockerfile.ts';
import { configDoc, NODE_FLAGS, REPO } from '../support/lifeboat.ts';

const run = promisify(execFile);
const PKG = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  scripts: Record<string, string>;
  license: string;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
/** The image's default user. */
const UID = 65532;
/** The etcd images' stages and the etcd minor each one is. */
const ETCD_STAGES = { etcd36: '3.6', etcd35: '3.5' } as const;

const stage = (name: string) => {
  const s = stages.find((x) => x.name === name);
  assert.ok(s, `a stage named ${name}`);
  return s;
};

describe('Dockerfile', () => {
  test('lints clean and keeps the usual rules: registry images only, no apt-get, nothing downloaded but the lock file\'s packages', () => {
    const diagnostics = validateDockerfile(DOCKERFILE_TEXT);
    assert.deepEqual(diagnostics.map((d) => `line ${d.range.start.line + 1}: ${d.message}`), []);
    for (const ins of dockerfile.getInstructions()) {
      const kw = ins.getKeyword();
      const line = ins.getRange().start.line + 1;
      assert.equal(ins.getInstruction(), kw, `line ${line}: upper-case instructions`);
      assert.notEqual(kw, 'ADD', `line ${line}: COPY, not ADD (which fetches URLs)`);
      assert.notEqual(kw, 'MAINTAINER', `line ${line}: a LABEL, not MAINTAINER`);
      if (kw === 'RUN') {
        const text = ins.getTextContent();
        assert.doesNotMatch(text, /apt-get|apt |dpkg|apk /, `line ${line}: no system package installs`);
        assert.doesNotMatch(text, /curl|wget|https?:\/\//, `line ${line}: nothing downloaded`);
        assert.doesNotMatch(text, /\|/, `line ${line}: no pipes (their failures would pass)`);
        assert.doesNotMatch(text, /\bsudo\b/, `line ${line}`);
        if (/\bnpm\b/.test(text)) assert.match(text, /npm ci .*--ignore-scripts/, `line ${line}: only the lock file's packages, no install scripts`);
      }
      if (kw === 'WORKDIR') assert.ok(path.posix.isAbsolute(args(ins)[0]!), `line ${line}: absolute WORKDIR`);
    }
    for (const kw of ['CMD', 'ENTRYPOINT', 'HEALTHCHECK', 'USER']) assert.equal(instructions(finalStage, kw).length, 1, `one ${kw} in the runtime stage`);
  });

  test('pins every base image: Node as the node dev dependency, etcd 3.6 and 3.5 as scripts/versions.env', () => {
    for (const s of stages) assert.ok(s.tag && s.tag !== 'latest' && !s.tag.includes('${'), `stage ${s.index}: ${s.image} has a pinned tag (${s.tag})`);
    const node = stages.filter((s) => s.image === 'node');
    assert.deepEqual(node.map((s) => s.name ?? 'runtime'), ['build', 'deps', 'runtime'], 'build, deps and runtime on the same Node image');
    for (const s of node) assert.equal(s.tag, `${globalArgs.get('NODE_VERSION')}-bookworm-slim`);
    // The Node the tests run on, and the release archive ships, is the image's.
    const nodeDev = JSON.parse(readFileSync(path.join(REPO, 'node_modules/node/package.json'), 'utf8')) as { version: string };
    assert.equal(globalArgs.get('NODE_VERSION'), nodeDev.version, 'NODE_VERSION is the node dev dependency\'s version');
    assert.equal(process.version, `v${nodeDev.version}`);
    // scripts/versions.env is the source of the etcd versions; the ARG defaults must equal it.
    const pinned = pinnedVersions();
    for (const [name, minor] of Object.entries(ETCD_STAGES)) {
      const key = `ETCD_${minor.replace('.', '')}`;
      assert.equal(globalArgs.get(key), pinned.get(key), `ARG ${key} is scripts/versions.env's ${key}`);
      const s = stage(name);
      assert.equal(s.image, 'gcr.io/etcd-development/etcd', name);
      assert.equal(s.tag, `v${pinned.get(key)}`, name);
      const [major, min, patch] = s.tag.replace(/^v/, '').split('.').map(Number);
      assert.ok(major === 3 && (min! > 5 || (min === 5 && patch! >= 10)), `etcd ${s.tag}: restores need --bump-revision and --mark-compacted (3.5.10+)`);
    }
    assert.deepEqual(stages.map((s) => s.name ?? 'runtime'), ['etcd36', 'etcd35', 'build', 'deps', 'runtime'], 'multi-stage, the runtime last');
  });

  test('labels by OCI conventions: the version is package.json\'s, revision and created are build arguments', () => {
    const l = labels(finalStage);
    for (const k of ['title', 'description', 'version', 'revision', 'created', 'licenses', 'source', 'url', 'documentation', 'vendor', 'base.name']) {
      assert.ok(l.has(`org.opencontainers.image.${k}`), `label org.opencontainers.image.${k}`);
    }
    const a = stageArgs(finalStage);
    assert.equal(l.get('org.opencontainers.image.version'), '${VERSION}');
    assert.equal(a.get('VERSION'), PKG.version, 'ARG VERSION is package.json\'s version');
    assert.equal(l.get('org.opencontainers.image.revision'), '${REVISION}');
    assert.equal(l.get('org.opencontainers.image.created'), '${CREATED}');
    assert.ok(a.has('REVISION') && a.has('CREATED'), 'REVISION and CREATED are build arguments of the runtime stage');
    assert.match(DOCKERFILE_TEXT, /--build-arg REVISION="\$\(git rev-parse HEAD\)"/, 'the build command documented in the header sets REVISION');
    assert.match(DOCKERFILE_TEXT, /--build-arg CREATED="\$\(date -u \+%Y-%m-%dT%H:%M:%SZ\)"/, 'and CREATED, in RFC 3339');
    assert.equal(l.get('org.opencontainers.image.licenses'), PKG.license);
    const etcdutl = expand(l.get('io.lifeboat.etcdutl.versions')!);
    assert.equal(etcdutl, `${pinnedVersions().get('ETCD_36')} ${pinnedVersions().get('ETCD_35')}`);
  });

  test('runs as uid 65532 by default, checks /healthz, and starts the daemon with the bin\'s Node flags', () => {
    assert.equal(args(instructions(finalStage, 'USER')[0]!)[0], `${UID}:${UID}`, 'the default user is not root');
    const health = execForm(instructions(finalStage, 'HEALTHCHECK')[0]!);
    assert.equal(health[0], 'node');
    assert.match(health.join(' '), /http:\/\/127\.0\.0\.1:9464\/healthz/);
    assert.deepEqual(execForm(instructions(finalStage, 'ENTRYPOINT')[0]!), ['node', ...NODE_FLAGS, `/app/${PKG.bin.lifeboat}`]);
    assert.deepEqual(execForm(instructions(finalStage, 'CMD')[0]!), ['serve', '--config', '/etc/lifeboat/config.yaml']);
    assert.deepEqual(instructions(finalStage, 'EXPOSE').flatMap(args).sort(), ['8443', '9464']);
  });

  test('grants no privilege: no file capability, no setuid or setgid program', () => {
    const runs = instructions(finalStage, 'RUN').map((i) => i.getTextContent()).join('\n');
    assert.doesNotMatch(DOCKERFILE_TEXT, /setcap|libcap|cap_[a-z_]+=/, 'the DaemonSet runs plain node as root with no capability');
    assert.match(runs, /find \/ -xdev -type f -perm \/6000 -exec chmod a-s \{\} \+/);
  });

  test('copies from the context only what is in it, and from the stages only what they make', () => {
    const ignore = dockerignore();
    for (const c of dockerfile.getInstructions().filter((i) => i.getKeyword() === 'COPY' && flagValue(i, 'from') === undefined)) {
      for (const src of args(c).slice(0, -1)) {
        const rel = src.replace(/\/$/, '');
        assert.ok(existsSync(path.join(REPO, rel)), `COPY ${src}: not in the repository`);
        assert.equal(ignore(rel), false, `COPY ${src}: excluded by .dockerignore`);
      }
    }
    for (const p of ['node_modules', 'dist', '.cache', '.git', 'test', 'deploy', 'Dockerfile']) assert.equal(ignore(p), true, `.dockerignore keeps ${p} out of the context`);
    const script = PKG.scripts.build!;
    assert.match(script, /^tsc /);
    assert.ok(instructions(stage('build'), 'RUN').some((i) => i.getTextContent().includes(`node node_modules/typescript/bin/${script}`)), `the build stage runs ${script}`);
    assert.ok(instructions(stage('deps'), 'RUN').some((i) => /npm ci --omit=dev/.test(i.getTextContent())), 'the deps stage installs the production dependencies only');
  });
});

// ---------------------------------------------------------------------------------------------
// The runtime stage's filesystem, assembled

/** What each stage the runtime copies from holds, made locally, under `root/<stage>/`. */
async function stageFilesystems(root: string): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  for (const [name, minor] of Object.entries(ETCD_STAGES)) {
    // The official etcd images keep their binaries in /usr/local/bin; these are the same
    // versions, built from source by scripts/build-binaries.sh.
    const bin = path.join(root, name, 'usr/local/bin');
    await mkdir(bin, { recursive: true });
    const local = etcdBinaries(minor);
    for (const tool of ['etcd', 'etcdctl', 'etcdutl'] as const) await symlink(local[tool], path.join(bin, tool));
    dirs.set(name, path.join(root, name));
  }
  // build: `tsc -p tsconfig.build.json` in /src, as `npm run build` runs it; main.js executable.
  const build = path.join(root, 'build');
  try {
    await run(process.execPath, [path.join(REPO, 'node_modules/typescript/bin/tsc'), '-p', path.join(REPO, 'tsconfig.build.json'), '--outDir', path.join(build, 'src/dist')], { cwd: REPO });
  } catch (err) {
    throw new Error(`the image's build step fails: ${(err as { stdout?: string }).stdout ?? (err as Error).message}`, { cause: err });
  }
  await chmod(path.join(build, 'src/dist/cli/main.js'), 0o755);
  dirs.set('build', build);
  // deps: what `npm ci --omit=dev` installs, the lock file's packages that are not dev-only.
  const deps = path.join(root, 'deps');
  const lock = JSON.parse(readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; devOptional?: boolean; optional?: boolean }> };
  for (const [key, p] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || p.dev || p.devOptional) continue;
    const from = path.join(REPO, key);
    if (!existsSync(from) && p.optional) continue;
    await cp(from, path.join(deps, 'src', key), { recursive: true, force: false, errorOnExist: false, filter: (src) => src === from || !src.startsWith(`${from}/node_modules`) });
  }
  dirs.set('deps', deps);
  return dirs;
}

/** The runtime stage's COPY lines carried out into `rootfs`, with Docker's rules for a destination. */
async function assemble(rootfs: string, stageDirs: Map<string, string>): Promise<void> {
  for (const c of instructions(finalStage, 'COPY')) {
    const from = flagValue(c, 'from');
    const a = args(c);
    const dest = a.at(-1)!;
    const sources = a.slice(0, -1);
    assert.ok(sources.length === 1 || dest.endsWith('/'), `COPY ${a.join(' ')}: several sources need a directory`);
    for (const src of sources) {
      let local: string;
      if (from === undefined) local = path.join(REPO, src);
      else {
        const dir = stageDirs.get(from);
        assert.ok(dir, `COPY --from=${from}: a stage this test does not make`);
        local = path.join(dir, src);
      }
      assert.ok(existsSync(local), `COPY ${from ? `--from=${from} ` : ''}${src}: the stage has no such file`);
      const target = path.join(rootfs, dest.endsWith('/') ? path.posix.join(dest, path.posix.basename(src)) : dest);
      await mkdir(path.dirname(target), { recursive: true });
      await cp(local, target, { recursive: true, dereference: true });
    }
  }
}

describe('the runtime stage\'s filesystem, assembled from its COPY lines', () => {
  let work: string;
  let rootfs: string;
  let cluster: EtcdCluster | undefined;

  /** The image's ENTRYPOINT with `argv`, in the assembled filesystem: its node is the base image's, the one running this test. */
  async function lifeboat(argv: string[]) {
    const entry = execForm(instructions(finalStage, 'ENTRYPOINT')[0]!);
    const env: Record<string, string> = { PATH: `${rootfs}/usr/local/bin:/usr/bin:/bin`, HOME: '/nonexistent' };
    for (const e of instructions(finalStage, 'ENV')) {
      const [k, v] = args(e)[0]!.split('=');
      env[k!] = v!;
    }
    const workdir = args(instructions(finalStage, 'WORKDIR')[0]!)[0]!;
    const mapped = entry.map((x, i) => (i === 0 && x === 'node' ? process.execPath : x.startsWith('/') ? path.join(rootfs, x) : x));
    try {
      const { stdout, stderr } = await run(mapped[0]!, [...mapped.slice(1), ...argv], { env, cwd: path.join(rootfs, workdir) });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-image-'));
    rootfs = path.join(work, 'rootfs');
    await assemble(rootfs, await stageFilesystems(path.join(work, 'stages')));
  });

  after(async () => {
    await cluster?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('holds the production dependencies only, no Node binary of its own, and the etcdutl of each minor', async () => {
    const modules = (await readdir(path.join(rootfs, 'app/node_modules'))).flatMap((n) => (n.startsWith('@') ? [] : [n]));
    for (const dep of Object.keys(PKG.dependencies).filter((d) => !d.startsWith('@'))) assert.ok(modules.includes(dep), `${dep} is installed`);
    // Dev-only packages (the lock file's dev: true) stay out, among them the node package's second Node and tsc.
    const lock = JSON.parse(readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.keys(PKG.devDependencies).filter((d) => lock.packages[`node_modules/${d}`]?.dev === true);
    assert.ok(devOnly.includes('node') && devOnly.includes('typescript'), devOnly.join(', '));
    for (const dev of devOnly) assert.ok(!existsSync(path.join(rootfs, 'app/node_modules', dev)), `dev dependency ${dev} is not in the image`);
    // The base image's /usr/local/bin/node is the only Node: nothing copied is one.
    const elf: string[] = [];
    for (const e of await readdir(rootfs, { recursive: true, withFileTypes: true })) {
      if (!e.isFile() || e.name !== 'node') continue;
      const head = (await readFile(path.join(e.parentPath, e.name))).subarray(0, 4);
      if (head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) elf.push(path.relative(rootfs, path.join(e.parentPath, e.name)));
    }
    assert.deepEqual(elf, [], 'no node binary among the copied files');
    for (const [tool, minor] of [['etcdutl', '3.6'], ['etcdutl-3.5', '3.5'], ['etcd', '3.6']] as const) {
      const { stdout } = await run(path.join(rootfs, 'usr/local/bin', tool), [tool === 'etcd' ? '--version' : 'version']);
      const want = etcdBinaries(minor).version;
      assert.equal(/^(?:etcdutl|etcd) version: (\S+)$/im.exec(stdout)?.[1], want, `${tool} is etcd ${want}: ${stdout}`);
    }
  });

  test('lifeboat --version prints package.json\'s version', async () => {
    const res = await lifeboat(['--version']);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), PKG.version);
  });

  test('backs up a kubeadm node\'s etcd and kit, and verifies it deeply with the image\'s etcdutl', async () => {
    assert.ok(!existsSync('/usr/bin/etcdutl') && !existsSync('/bin/etcdutl'), 'the only etcdutl on PATH is the image\'s');
    const hostRoot = path.join(work, 'host');
    const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'), { hosts: ['m1'] });
    cluster = await startEtcd({ tree, members: 1, dataRoot: path.join(work, 'etcd') });
    await populateRig(cluster, { keys: 200, valueBytes: [64, 512], seed: 3 });
    const { identity, recipient } = await generateIdentity();
    const identityFile = path.join(work, 'identity.txt');
    await writeFile(identityFile, identityFileText(identity, recipient, new Date()), { mode: 0o600 });
    // tools: the defaults, `etcdutl` and `etcd` on PATH, as in the image.
    const doc = { ...configDoc(cluster, hostRoot, path.join(work, 'store'), [recipient]), tools: {} };
    const configFile = path.join(work, 'config.yaml');
    await writeFile(configFile, stringify(doc));
    const backup = await lifeboat(['backup', '--config', configFile]);
    assert.equal(backup.code, 0, backup.stderr);
    const verify = await lifeboat(['verify', 'latest', '--config', configFile, '--identity', identityFile, '--output', 'json']);
    assert.equal(verify.code, 0, verify.stderr);
    const report = JSON.parse(verify.stdout) as { level?: string; snapshot?: { status?: { totalKey?: number } } };
    assert.equal(report.level, 'deep', verify.stdout);
    assert.ok((report.snapshot?.status?.totalKey ?? 0) > 0, 'etcdutl snapshot status read the snapshot');
  });
});
