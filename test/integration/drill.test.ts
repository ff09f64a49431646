import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { runBackup } from '../../src/backup/run.ts';
import { createDecryptStream, createEncryptStream, generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { CancelledError, IntegrityError, ToolError } from '../../src/errors/errors.ts';
import type { SnapshotSource } from '../../src/etcd/source.ts';
import { Etcd3SnapshotSource } from '../../src/etcd/etcd3-source.ts';
import { processExecutor, type Executor } from '../../src/exec/executor.ts';
import { parseStoredManifest } from '../../src/archive/manifest.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import type { Config } from '../../src/config/schema.ts';
import { runDrill, type DrillOptions } from '../../src/verify/drill.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { startEtcd, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { entry, populate, type PopulateOptions } from '../../scripts/rig/populate.ts';
import { configDoc, configOf, errorLines, ETCDUTL, quietLog, REPO, runCli, writeConfig } from '../support/lifeboat.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const ETCD = etcdBinaries().etcd;
let work: string;
let hostRoot: string;
let cluster: EtcdCluster;
const data: PopulateOptions = { keys: 3000, valueBytes: [64, 2048], seed: 11 };
const OTHER_KEYS = 25;
const DELETED = 50;
/** What the cluster holds when each test backs it up. */
const KEYS = data.keys - DELETED + OTHER_KEYS;
const REGISTRY_KEYS = data.keys - DELETED;
const key = await generateIdentity();
let identityFile: string;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-drill-'));
  hostRoot = path.join(work, 'host');
  const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'));
  cluster = await startEtcd({ tree, members: 1, dataRoot: path.join(work, 'etcd') });
  const client = cluster.client();
  try {
    await populate(client, data);
    for (let i = 0; i < OTHER_KEYS; i++) await client.put(`/lifeboat-test/other-${i}`).value('x');
    // Deletes and overwrites: the revision runs ahead of the key count.
    for (let i = 0; i < DELETED; i++) await client.delete().key(entry(data, i)[0]);
    for (let i = DELETED; i < DELETED + 100; i++) await client.put(entry(data, i)[0]).value('overwritten');
  } finally {
    client.close();
  }
  identityFile = path.join(work, 'key.txt');
  await writeFile(identityFile, identityFileText(key.identity, key.recipient, new Date()), { mode: 0o600 });
});

after(async () => {
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function setup(name: string) {
  const storeDir = path.join(work, `store-${name}`);
  const scratchDir = path.join(work, `scratch-${name}`);
  await mkdir(scratchDir);
  const doc = configDoc(cluster, hostRoot, storeDir, [key.recipient], { tools: { etcdutl: ETCDUTL, etcd: ETCD }, drill: { scratchDir } });
  return { doc, config: configOf(doc), store: new FsStore(storeDir), storeDir, scratchDir };
}

async function backup(config: Config, store: FsStore, source?: (real: SnapshotSource) => SnapshotSource) {
  const real = new Etcd3SnapshotSource(config.etcd, quietLog);
  try {
    return await runBackup(
      { store, etcd: source ? source(real) : real, encrypt: createEncryptStream, log: quietLog, now: () => new Date(), signer: TEST_SIGNER, previous: async () => undefined },
      { cluster: config.cluster, node: config.node, kit: config.kit, compression: config.compression, recipients: config.encryption.recipients, progressIntervalSeconds: 10, maxClockSkewSeconds: 300 },
    );
  } finally {
    await real.close();
  }
}

/** The real executor, recording the PID of every process it starts. */
function recording(onStart?: (pid: number, args: readonly string[]) => void | Promise<void>): { exec: Executor; pids: number[] } {
  const pids: number[] = [];
  return {
    pids,
    exec: {
      run: (command, args, options) => processExecutor.run(command, args, options),
      async start(command, args, options) {
        const child = await processExecutor.start(command, args, options);
        pids.push(child.pid);
        await onStart?.(child.pid, args);
        return child;
      },
    },
  };
}

/** Whether `pid` is a live process (not a zombie). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function options(scratchDir: string, extra: Partial<DrillOptions> = {}): DrillOptions {
  return { identities: [key.identity], etcdutl: ETCDUTL, etcd: ETCD, scratchDir, startTimeoutSeconds: 30, ...extra };
}

async function assertCleanedUp(scratchDir: string, pids: number[]) {
  assert.deepEqual(await readdir(scratchDir), [], 'the scratch dir is gone');
  for (const pid of pids) assert.equal(alive(pid), false, `process ${pid} is gone`);
}

test('a backup records its key counts; a drill restores it, serves it from etcd and finds exactly those counts', async (t) => {
  const { config, store, scratchDir } = await setup('good');
  const manifest = await backup(config, store);
  assert.equal(manifest.etcd.keyCount, KEYS);
  assert.equal(manifest.etcd.registryKeyCount, REGISTRY_KEYS);

  // Written after the backup: not in it, and not counted by the drill (removed again below).
  const client = cluster.client();
  await client.put('/registry/pods/default/after-the-backup').value('x');
  t.after(async () => {
    await client.delete().key('/registry/pods/default/after-the-backup');
    client.close();
  });

  const lines: { phase?: string; durationMs?: number }[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), cb()) }));
  let scratchMode = 0;
  let snapshotLeft = true;
  const { exec, pids } = recording(async (_pid, args) => {
    const dataDir = args.find((a) => a.startsWith('--data-dir='))!.slice('--data-dir='.length);
    scratchMode = (await stat(path.dirname(dataDir))).mode & 0o777;
    snapshotLeft = await stat(path.join(path.dirname(dataDir), 'snapshot.db')).then(() => true, () => false);
  });
  const report = await runDrill({ store, decrypt: createDecryptStream, exec, log }, manifest, options(scratchDir));

  assert.equal(report.backupId, manifest.backupId);
  assert.equal(report.level, 'drill');
  assert.equal(report.keyCount, KEYS);
  assert.equal(report.registryKeyCount, REGISTRY_KEYS);
  assert.deepEqual(report.expected, { revision: manifest.etcd.revision, keyCount: KEYS, registryKeyCount: REGISTRY_KEYS });
  assert.ok(BigInt(report.revision) >= BigInt(manifest.etcd.revision));
  assert.deepEqual(report.archive, { key: manifest.archive.key, size: manifest.archive.size, sha256: manifest.archive.sha256 });
  assert.equal(report.kitFiles, manifest.kit.files.length);
  assert.deepEqual(Object.keys(report.timings), ['archive', 'restore', 'start', 'check', 'cleanup']);

  assert.equal(scratchMode, 0o700, 'the scratch dir is private');
  assert.equal(snapshotLeft, false, 'the snapshot is deleted once restored');
  assert.equal(pids.length, 1);
  await assertCleanedUp(scratchDir, pids);
  const steps = lines.filter((l) => /^drill-(archive|restore|start|check|cleanup)$/.test(l.phase ?? ''));
  assert.deepEqual(steps.map((l) => l.phase), ['drill-archive', 'drill-restore', 'drill-start', 'drill-check', 'drill-cleanup']);
  for (const l of steps) assert.equal(typeof l.durationMs, 'number', l.phase);
  assert.equal(lines.at(-1)?.phase, 'drill-passed');
});

test('a tampered archive fails the drill with IntegrityError and leaves nothing behind', async () => {
  const { config, store, storeDir, scratchDir } = await setup('tampered');
  const manifest = await backup(config, store);
  const file = path.join(storeDir, manifest.archive.key);
  const bytes = await readFile(file);
  const at = Math.floor(bytes.length / 2);
  bytes[at] = (bytes[at] ?? 0) ^ 0x01;
  await writeFile(file, bytes);

  const { exec, pids } = recording();
  await assert.rejects(
    runDrill({ store, decrypt: createDecryptStream, exec, log: quietLog }, manifest, options(scratchDir)),
    (err: unknown) => err instanceof IntegrityError && /sha256 .* manifest says/.test(err.message),
  );
  assert.deepEqual(pids, [], 'no etcd was started for an archive that failed its hashes');
  await assertCleanedUp(scratchDir, pids);
});

test('an etcd that cannot start, exits, or never becomes healthy fails with ToolError and is cleaned up', async () => {
  const { config, store, scratchDir } = await setup('no-etcd');
  const manifest = await backup(config, store);
  const deps = (exec: Executor) => ({ store, decrypt: createDecryptStream, exec, log: quietLog });

  let rec = recording();
  await assert.rejects(
    runDrill(deps(rec.exec), manifest, options(scratchDir, { etcd: path.join(work, 'no-such-etcd') })),
    (err: unknown) => err instanceof ToolError && /cannot start .*no-such-etcd: not found/.test(err.message) && /tools/.test(err.hint ?? ''),
  );
  await assertCleanedUp(scratchDir, rec.pids);

  const exits = path.join(work, 'etcd-that-exits');
  await writeFile(exits, '#!/bin/sh\necho "etcdmain: cannot listen: address already in use" >&2\nexit 1\n', { mode: 0o755 });
  rec = recording();
  await assert.rejects(
    runDrill(deps(rec.exec), manifest, options(scratchDir, { etcd: exits })),
    (err: unknown) => err instanceof ToolError && /exited \(code 1\).*address already in use/.test(err.message),
  );
  assert.equal(rec.pids.length, 1);
  await assertCleanedUp(scratchDir, rec.pids);

  const hangs = path.join(work, 'etcd-that-hangs');
  await writeFile(hangs, '#!/bin/sh\nexec sleep 600\n', { mode: 0o755 });
  rec = recording();
  await assert.rejects(
    runDrill(deps(rec.exec), manifest, options(scratchDir, { etcd: hangs, startTimeoutSeconds: 1 })),
    (err: unknown) => err instanceof ToolError && /did not become healthy within 1 s/.test(err.message) && /startTimeoutSeconds/.test(err.hint ?? ''),
  );
  assert.equal(rec.pids.length, 1);
  await assertCleanedUp(scratchDir, rec.pids);
});

test('a drill aborted while its etcd runs stops that etcd and removes the scratch dir', async () => {
  const { config, store, scratchDir } = await setup('abort');
  const manifest = await backup(config, store);
  const abort = new AbortController();
  const { exec, pids } = recording(() => abort.abort());
  await assert.rejects(
    runDrill({ store, decrypt: createDecryptStream, exec, log: quietLog }, manifest, options(scratchDir, { signal: abort.signal })),
    CancelledError,
  );
  assert.equal(pids.length, 1);
  await assertCleanedUp(scratchDir, pids);
});

test('a manifest without key counts (written before they were recorded) still drills: keys and /registry/ keys must exist', async () => {
  const { config, store, scratchDir } = await setup('old');
  const manifest = await backup(config, store, (real) => ({
    chooseMember: async () => {
      const { keyCount: _k, registryKeyCount: _r, ...facts } = await real.chooseMember();
      return facts;
    },
    openSnapshot: (member, signal) => real.openSnapshot(member, signal),
    close: () => real.close(),
  }));
  assert.equal('keyCount' in manifest.etcd, false);
  assert.deepEqual(parseStoredManifest(JSON.stringify(manifest), 'm'), manifest, 'format v1 without the counts still parses');
  const report = await runDrill({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, options(scratchDir));
  assert.deepEqual(report.expected, { revision: manifest.etcd.revision });
  assert.equal(report.keyCount, KEYS);
  assert.equal(report.registryKeyCount, REGISTRY_KEYS);
  assert.deepEqual(await readdir(scratchDir), []);
});

test('the CLI: `lifeboat drill latest` prints an OK line with the counts, and a line on the change log (none here), and records the pass; a tampered archive prints one error line, records the failure, and `lifeboat list` shows it', async () => {
  const { doc, config, store, storeDir, scratchDir } = await setup('cli');
  const manifest = await backup(config, store);
  const configFile = await writeConfig(work, doc);

  const ok = await runCli(['--config', configFile, 'drill', 'latest', '--identity', identityFile]);
  assert.equal(ok.code, 0, ok.stderr);
  const out = ok.stdout.trim().split('\n');
  assert.equal(out.length, 2, ok.stdout);
  assert.equal(out[1], `change log: not replayed: the change log holds no revision after this backup's (${manifest.etcd.revision})`);
  assert.match(out[0]!, new RegExp(`^backup ${manifest.backupId.replace('.', '\\.')}: drill OK \\(restored into etcd at revision \\d+; ${KEYS} keys, ${REGISTRY_KEYS} under /registry/ at revision ${manifest.etcd.revision}, as the manifest says; [\\d.]+ s\\)$`));
  assert.deepEqual(await readdir(scratchDir), []);
  const catalog = new Catalog(store, config.cluster, { trust: TEST_TRUST });
  const passed = await catalog.verification(manifest.backupId);
  assert.equal(passed?.result, 'passed');
  assert.equal(passed?.level, 'drill');

  const file = path.join(storeDir, manifest.archive.key);
  const bytes = await readFile(file);
  bytes[bytes.length - 100] = (bytes[bytes.length - 100] ?? 0) ^ 0x80;
  await writeFile(file, bytes);
  const bad = await runCli(['--config', configFile, 'drill', manifest.backupId, '--identity', identityFile]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stdout, '');
  assert.equal(errorLines(bad.stderr).length, 1, bad.stderr);
  assert.match(bad.stderr, /lifeboat: error: archive .* has sha256 .* manifest says .*: the object is corrupted or was changed \(this backup cannot be restored/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(await readdir(scratchDir), []);
  const failed = await catalog.verification(manifest.backupId);
  assert.equal(failed?.result, 'failed');
  assert.equal(failed?.level, 'drill');
  assert.equal(failed?.error?.code, 'INTEGRITY_MISMATCH');
  assert.equal(failed?.lastPassedLevel, 'drill', 'the earlier pass is remembered');
  const list = await runCli(['--config', configFile, 'list']);
  assert.match(list.stdout, new RegExp(`^${manifest.backupId.replace('.', '\\.')}\\s.*FAILED drill \\d{4}-`, 'm'));

  const noKey = await runCli(['--config', configFile, 'drill', 'latest']);
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /needs an age identity/);
});

test('a drill whose process is killed outright leaves its etcd and scratch dir; the next drill stops that etcd and removes the dir', async () => {
  const { config, store, storeDir, scratchDir } = await setup('killed');
  const manifest = await backup(config, store);
  // Another process drills with the real executor and etcd, and a probe that never sees etcd
  // healthy: it prints the etcd's PID once that is recorded, then waits until it is killed.
  const script = `
    const [repo, storeDir, manifest, identity, etcdutl, etcd, scratchDir] = process.argv.slice(1);
    const { runDrill } = await import(repo + '/src/verify/drill.ts');
    const { processExecutor } = await import(repo + '/src/exec/executor.ts');
    const { FsStore } = await import(repo + '/src/store/fs-store.ts');
    const { createDecryptStream } = await import(repo + '/src/crypto/age.ts');
    const { createLogger } = await import(repo + '/src/log/logger.ts');
    let pid;
    const exec = { run: processExecutor.run, start: async (...a) => { const c = await processExecutor.start(...a); pid = c.pid; return c; } };
    const connect = () => { process.stdout.write(pid + '\\n'); return { status: () => new Promise(() => {}), counts: () => new Promise(() => {}), close() {} }; };
    await runDrill({ store: new FsStore(storeDir), decrypt: createDecryptStream, exec, log: createLogger('silent'), connect }, JSON.parse(manifest),
      { identities: [identity], etcdutl, etcd, scratchDir, startTimeoutSeconds: 3600 });
  `;
  const victim = spawn(process.execPath, ['--input-type=module', '-e', script, REPO, storeDir, JSON.stringify(manifest), key.identity, ETCDUTL, ETCD, scratchDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const orphan = await new Promise<number>((resolve, reject) => {
    let out = '';
    victim.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    victim.once('exit', (code) => reject(new Error(`the drill process exited (${code}) before starting etcd`)));
  });
  try {
    victim.kill('SIGKILL');
    await new Promise((resolve) => victim.once('exit', resolve));
    assert.ok(alive(orphan), 'the etcd outlived its SIGKILLed parent');
    assert.equal((await readdir(scratchDir)).length, 1, 'and so did its scratch dir');

    const report = await runDrill({ store, decrypt: createDecryptStream, exec: processExecutor, log: quietLog }, manifest, options(scratchDir));
    assert.equal(report.keyCount, KEYS);
    await assertCleanedUp(scratchDir, [orphan]);
  } finally {
    if (alive(orphan)) process.kill(orphan, 'SIGKILL');
  }
});
