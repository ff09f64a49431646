/**
 * The image, without a Docker engine.
 *
 * - The Dockerfile lints clean; the build downloads nothing: no RUN fetches or installs (no npm,
 *   apt-get, curl, wget, git clone), no stage is FROM a registry image but the official node and
 *   etcd ones, and COPY --from names only those etcd stages. Its versions are the repository's:
 *   Node the node dev dependency's, etcd scripts/versions.env's, the version label package.json's.
 * - The build context is the folder scripts/image-context.sh prepares (.dockerignore lets in
 *   nothing else). The test runs that script into a bare build context, then carries out the
 *   runtime stage's COPY lines as Docker would (the etcd stages are the locally built etcd
 *   binaries of the same versions, in the official images' paths), and from the filesystem that
 *   gives runs `lifeboat --version`, a backup of a real etcd and kubeadm kit, and a deep verify
 *   with the image's own etcdutl.
 *
 * What it cannot prove here: that `docker build` succeeds (no engine) and what the RUN line does
 * (groupadd, the setuid sweep, the state folders and the lifeboat link are only read, not run);
 * the Node that runs the assembled files is this test's, the same version as the base image's.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, open, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { validate as validateDockerfile } from 'dockerfile-utils';
import type { Instruction } from 'dockerfile-ast';
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
/** The only registry images a stage may start from. */
const NODE_IMAGE = 'node';
const ETCD_IMAGE = 'gcr.io/etcd-development/etcd';
/** The script that prepares the build context, and the folder it writes by default (relative to the repository). */
const CONTEXT_SCRIPT = 'scripts/image-context.sh';
const CONTEXT_DIR = '.cache/image';
const SCRIPT_TEXT = readFileSync(path.join(REPO, CONTEXT_SCRIPT), 'utf8');

const stage = (name: string) => {
  const s = stages.find((x) => x.name === name);
  assert.ok(s, `a stage named ${name}`);
  return s;
};
const lineOf = (ins: Instruction) => ins.getRange().start.line + 1;
const flagNames = (ins: Instruction) => (ins as unknown as { getFlags(): { getName(): string }[] }).getFlags().map((f) => f.getName());
/** COPY lines that take from the build context (no --from). */
const contextCopies = () => dockerfile.getInstructions().filter((i) => i.getKeyword() === 'COPY' && flagValue(i, 'from') === undefined);

/** What a RUN must not do: each one would download during `docker build`. */
const FETCHES: [RegExp, string][] = [
  [/\bnpm\s+(ci|install|i|add|update|exec)\b|\bnpx\b|\byarn\b|\bpnpm\b|\bcorepack\b/, 'no npm ci or install (nor npx, yarn, pnpm)'],
  [/\bapt-get\b|\bapt\s|\baptitude\b|\bdpkg\b|\bapk\s|\b(yum|dnf|microdnf)\b/, 'no system package manager'],
  [/\bcurl\b|\bwget\b|[a-z]+:\/\//, 'no curl, wget or URL'],
  [/\bgit\s+(clone|fetch|pull|submodule)\b/, 'no git clone'],
  [/\bpip3?\s|\bgo\s+(get|install|mod)\b/, 'no pip or go get'],
];

describe('Dockerfile', () => {
  test('lints clean, and the build downloads nothing: no RUN fetches or installs, no ADD, no frontend image', () => {
    const diagnostics = validateDockerfile(DOCKERFILE_TEXT);
    assert.deepEqual(diagnostics.map((d) => `line ${d.range.start.line + 1}: ${d.message}`), []);
    // A `# syntax=` directive makes the builder pull a frontend image; the built-in one reads this file.
    assert.deepEqual(dockerfile.getDirectives().map((d) => d.getName()), [], 'no parser directive (no # syntax= frontend image)');
    for (const ins of dockerfile.getInstructions()) {
      const kw = ins.getKeyword();
      const line = lineOf(ins);
      assert.equal(ins.getInstruction(), kw, `line ${line}: upper-case instructions`);
      assert.notEqual(kw, 'ADD', `line ${line}: COPY, not ADD (which fetches URLs and git repositories)`);
      assert.notEqual(kw, 'MAINTAINER', `line ${line}: a LABEL, not MAINTAINER`);
      assert.notEqual(kw, 'ONBUILD', `line ${line}: no ONBUILD`);
      if (kw === 'RUN') {
        const text = ins.getTextContent();
        assert.deepEqual(flagNames(ins), [], `line ${line}: no RUN --mount or --network`);
        for (const [re, why] of FETCHES) assert.doesNotMatch(text, re, `line ${line}: ${why}`);
        assert.doesNotMatch(text, /\|/, `line ${line}: no pipes (their failures would pass)`);
        assert.doesNotMatch(text, /\bsudo\b/, `line ${line}`);
      }
      if (kw === 'WORKDIR') assert.ok(path.posix.isAbsolute(args(ins)[0]!), `line ${line}: absolute WORKDIR`);
    }
    for (const kw of ['CMD', 'ENTRYPOINT', 'HEALTHCHECK', 'USER']) assert.equal(instructions(finalStage, kw).length, 1, `one ${kw} in the runtime stage`);
  });

  test('FROM the official node and etcd images only, pinned: Node as the node dev dependency, etcd 3.6 and 3.5 as scripts/versions.env', () => {
    const names: string[] = [];
    for (const s of stages) {
      // A stage FROM an earlier stage pulls nothing; any other FROM is a registry image.
      if (!(s.tag === '' && names.includes(s.image))) {
        assert.ok([NODE_IMAGE, ETCD_IMAGE].includes(s.image), `stage ${s.index} (${s.name ?? 'runtime'}): FROM ${s.image}, neither the official node nor the etcd image`);
        assert.ok(s.tag && s.tag !== 'latest' && !s.tag.includes('${'), `stage ${s.index}: ${s.image} has a pinned tag (${s.tag})`);
      }
      if (s.name) names.push(s.name);
    }
    assert.deepEqual(stages.map((s) => s.name ?? 'runtime'), ['etcd36', 'etcd35', 'runtime'], 'multi-stage: the etcd images to copy from, the runtime last');
    // One Node: the runtime's base image's. No other stage is a Node image, none is copied from.
    assert.deepEqual(stages.filter((s) => s.image === NODE_IMAGE).map((s) => s.name ?? 'runtime'), ['runtime']);
    assert.equal(finalStage.tag, `${globalArgs.get('NODE_VERSION')}-bookworm-slim`);
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
      assert.equal(s.image, ETCD_IMAGE, name);
      assert.equal(s.tag, `v${pinned.get(key)}`, name);
      assert.deepEqual(s.instructions, [], `${name} is only copied from`);
      const [major, min, patch] = s.tag.replace(/^v/, '').split('.').map(Number);
      assert.ok(major === 3 && (min! > 5 || (min === 5 && patch! >= 10)), `etcd ${s.tag}: restores need --bump-revision and --mark-compacted (3.5.10+)`);
    }
    // COPY --from=<an image> would pull it: --from names the etcd stages only.
    for (const c of dockerfile.getInstructions().filter((i) => i.getKeyword() === 'COPY')) {
      const from = flagValue(c, 'from');
      if (from !== undefined) assert.ok(Object.keys(ETCD_STAGES).includes(from), `line ${lineOf(c)}: COPY --from=${from}, not an etcd stage`);
    }
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
    assert.equal(l.get('org.opencontainers.image.base.name'), `docker.io/library/${NODE_IMAGE}:\${NODE_VERSION}-\${DEBIAN_RELEASE}-slim`);
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

  test('the build context is the folder scripts/image-context.sh prepares, and .dockerignore lets in nothing else', () => {
    // The header's two steps, in order: prepare the context, then build.
    assert.match(DOCKERFILE_TEXT, /^# {3}bash scripts\/image-context\.sh\n# {3}docker build -t \S+ \\\n(# .*\\\n)*# .* \.\n/m, 'the header documents both steps');
    // deploy/README.md shows the same two steps (`docker build` cannot run here; the first step runs below).
    const header = /^# {3}(bash scripts\/image-context\.sh\n(?:# .*\n)*?)#\n/m.exec(DOCKERFILE_TEXT)?.[1]?.replace(/^# {3}/gm, '');
    const section = readFileSync(path.join(REPO, 'deploy/README.md'), 'utf8').split(/^## /m).find((x) => x.startsWith('1. The image'));
    assert.ok(header && section, 'the header\'s commands and deploy/README.md section 1');
    assert.equal(/```sh\n([\s\S]*?)```/.exec(section)?.[1], header, 'deploy/README.md shows the header\'s build commands');
    assert.match(SCRIPT_TEXT, new RegExp(`^out="\\$root/${CONTEXT_DIR.replace('.', '\\.')}"$`, 'm'), `${CONTEXT_SCRIPT} writes ${CONTEXT_DIR} by default`);
    const ignore = dockerignore();
    const copies = contextCopies();
    assert.ok(copies.length > 0);
    for (const c of copies) {
      for (const src of args(c).slice(0, -1)) {
        const rel = path.posix.normalize(src).replace(/\/$/, '');
        assert.ok(rel.startsWith(`${CONTEXT_DIR}/`), `line ${lineOf(c)}: COPY ${src} takes from outside ${CONTEXT_DIR}`);
        assert.equal(ignore(rel), false, `COPY ${src}: excluded by .dockerignore`);
      }
    }
    assert.equal(ignore(CONTEXT_DIR), false);
    for (const p of ['node_modules', 'dist', 'src', 'scripts', '.cache', '.cache/etcd-3.6', '.git', 'test', 'deploy', 'docs', 'Dockerfile', 'package.json', 'package-lock.json']) {
      assert.equal(ignore(p), true, `.dockerignore keeps ${p} out of the context`);
    }
    // The script compiles as `npm run build` does and installs the lock file's production packages without scripts.
    const script = PKG.scripts.build!;
    assert.match(script, /^tsc /);
    assert.ok(SCRIPT_TEXT.includes('tsc="$root/node_modules/typescript/bin/tsc"') && SCRIPT_TEXT.includes(`"$tsc" ${script.replace(/^tsc /, '')} `), `${CONTEXT_SCRIPT} runs ${script}`);
    assert.match(SCRIPT_TEXT, /npm ci --omit=dev --ignore-scripts /);
  });
});

// ---------------------------------------------------------------------------------------------
// The runtime stage's filesystem, assembled

/** The etcd stages as the runtime copies from them, made locally under `root/<stage>/`. */
async function etcdStages(root: string): Promise<Map<string, string>> {
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
  return dirs;
}

/**
 * The runtime stage's COPY lines carried out into `rootfs` with Docker's rules: a folder's contents
 * go into the destination, a file into a destination ending in / keeps its name, several sources
 * need such a destination. From the build context `context`, what .dockerignore excludes is not
 * there and symlinks stay symlinks; from a stage, files are taken as they are.
 */
async function assemble(rootfs: string, context: string, stageDirs: Map<string, string>): Promise<void> {
  const ignore = dockerignore();
  for (const c of instructions(finalStage, 'COPY')) {
    const from = flagValue(c, 'from');
    const a = args(c);
    const dest = a.at(-1)!;
    const sources = a.slice(0, -1);
    assert.ok(sources.length === 1 || dest.endsWith('/'), `COPY ${a.join(' ')}: several sources need a directory`);
    for (const src of sources) {
      const base = from === undefined ? context : stageDirs.get(from);
      assert.ok(base, `COPY --from=${from}: a stage this test does not make`);
      const local = path.join(base, src);
      assert.ok(existsSync(local), `COPY ${from ? `--from=${from} ` : ''}${src}: ${from ? 'the stage' : 'the prepared context'} has no such file`);
      const isDir = (await stat(local)).isDirectory();
      const target = path.join(rootfs, !isDir && dest.endsWith('/') ? path.posix.join(dest, path.posix.basename(src)) : dest);
      await mkdir(isDir ? target : path.dirname(target), { recursive: true });
      if (from === undefined) {
        await cp(local, target, { recursive: true, verbatimSymlinks: true, filter: (p) => !ignore(path.relative(context, p)) });
      } else {
        await cp(local, target, { recursive: true, dereference: true });
      }
    }
  }
}

async function isElf(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(4), 0, 4, 0);
    return bytesRead === 4 && buffer.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    await fh.close();
  }
}

async function elfFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    if (e.isFile() && (await isElf(p))) out.push(path.relative(dir, p));
  }
  return out;
}

describe('the runtime stage\'s filesystem, assembled from its COPY lines out of the prepared context', () => {
  let work: string;
  /** A bare build context: only what scripts/image-context.sh wrote. */
  let context: string;
  let rootfs: string;
  let cluster: EtcdCluster | undefined;

  const prepare = (out: string) => run('bash', [path.join(REPO, CONTEXT_SCRIPT), '--out', out], { cwd: REPO, maxBuffer: 1 << 20 });

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
    context = path.join(work, 'context');
    rootfs = path.join(work, 'rootfs');
    const out = path.join(context, CONTEXT_DIR);
    const { stdout } = await prepare(out);
    assert.equal(stdout.trim().split('\n').at(-1), out, `${CONTEXT_SCRIPT} prints the folder it wrote`);
    await assemble(rootfs, context, await etcdStages(path.join(work, 'stages')));
  });

  after(async () => {
    await cluster?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('the prepared context holds what the COPY lines take and nothing else, and no binary: no Node, no native addon', async () => {
    const copied = contextCopies().flatMap((c) => args(c).slice(0, -1)).map((s) => path.posix.relative(CONTEXT_DIR, path.posix.normalize(s)).split('/')[0]!);
    assert.deepEqual((await readdir(path.join(context, CONTEXT_DIR))).sort(), [...new Set(copied)].sort());
    assert.deepEqual(await readdir(context), [CONTEXT_DIR.split('/')[0]], 'the script wrote into its folder only');
    // No ELF file at all: the image's only Node is its base image's, and the production
    // dependencies are JavaScript, so the same context serves every platform.
    assert.deepEqual(await elfFiles(path.join(context, CONTEXT_DIR)), []);
    assert.deepEqual((await readdir(path.join(context, CONTEXT_DIR, 'dist'), { recursive: true })).filter((f) => f.endsWith('.map')), [], 'no source maps');
  });

  test('the script refuses to replace a folder that is not its own', async () => {
    const foreign = path.join(work, 'foreign');
    await mkdir(foreign);
    await writeFile(path.join(foreign, 'keep.txt'), 'mine');
    await assert.rejects(prepare(foreign), (err: { code: number; stderr: string }) => err.code === 1 && /holds .*keep\.txt: not replacing it/.test(err.stderr));
    assert.equal(readFileSync(path.join(foreign, 'keep.txt'), 'utf8'), 'mine');
  });

  test('holds the production dependencies only, no Node binary of its own, and the etcdutl of each minor', async () => {
    const modules = (await readdir(path.join(rootfs, 'app/node_modules'))).flatMap((n) => (n.startsWith('@') ? [] : [n]));
    for (const dep of Object.keys(PKG.dependencies).filter((d) => !d.startsWith('@'))) assert.ok(modules.includes(dep), `${dep} is installed`);
    // Dev-only packages (the lock file's dev: true) stay out, among them the node package's second Node and tsc.
    const lock = JSON.parse(readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.keys(PKG.devDependencies).filter((d) => lock.packages[`node_modules/${d}`]?.dev === true);
    assert.ok(devOnly.includes('node') && devOnly.includes('typescript'), devOnly.join(', '));
    for (const dev of devOnly) assert.ok(!existsSync(path.join(rootfs, 'app/node_modules', dev)), `dev dependency ${dev} is not in the image`);
    // The base image's /usr/local/bin/node is the only Node: the only binaries copied are etcd's.
    const elf = await elfFiles(rootfs);
    assert.deepEqual(elf.sort(), ['usr/local/bin/etcd', 'usr/local/bin/etcdutl', 'usr/local/bin/etcdutl-3.5'], 'no node binary among the copied files');
    for (const [tool, minor] of [['etcdutl', '3.6'], ['etcdutl-3.5', '3.5'], ['etcd', '3.6']] as const) {
      const { stdout } = await run(path.join(rootfs, 'usr/local/bin', tool), [tool === 'etcd' ? '--version' : 'version']);
      const want = etcdBinaries(minor).version;
      assert.equal(/^(?:etcdutl|etcd) version: (\S+)$/im.exec(stdout)?.[1], want, `${tool} is etcd ${want}: ${stdout}`);
    }
  });

  test('uid 65532 can read all of /app, and the lifeboat link on PATH points at an executable main.js', async () => {
    const app = path.join(rootfs, 'app');
    const unreadable: string[] = [];
    for (const e of await readdir(app, { recursive: true, withFileTypes: true })) {
      if (e.isSymbolicLink()) continue;
      const p = path.join(e.parentPath, e.name);
      const { mode } = await stat(p);
      // The files are root's in the image: "other" is what uid 65532 gets.
      const need = e.isDirectory() ? 0o5 : 0o4;
      if ((mode & need) !== need || (mode & 0o2) !== 0) unreadable.push(`${path.relative(rootfs, p)} ${(mode & 0o777).toString(8)}`);
    }
    assert.deepEqual(unreadable, [], 'world-readable, not world-writable');
    // The RUN line's `ln -s TARGET LINK` (read, not run): its target is in the assembled filesystem.
    const runs = instructions(finalStage, 'RUN').map((i) => i.getTextContent()).join('\n');
    const link = /\bln -s (\/\S+) (\/usr\/local\/bin\/lifeboat)\b/.exec(runs);
    assert.ok(link, 'the RUN line links /usr/local/bin/lifeboat');
    assert.equal(link[1], `/app/${PKG.bin.lifeboat}`);
    assert.ok(((await stat(path.join(rootfs, link[1]!))).mode & 0o111) === 0o111, `${link[1]} is executable by all`);
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
