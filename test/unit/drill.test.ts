import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { StoredManifest } from '../../src/archive/manifest.ts';
import { archiveChunks } from '../../src/archive/writer.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { ConfigError, IntegrityError, NoMatchingIdentityError } from '../../src/errors/errors.ts';
import type { Executor, ProcessExit } from '../../src/exec/executor.ts';
import { createLogger } from '../../src/log/logger.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { archiveKey } from '../../src/store/layout.ts';
import { runDrill, type DrillProbe } from '../../src/verify/drill.ts';
import { chunked, collect, fakeSnapshot, sampleManifest, sha256 } from '../support/fixtures.ts';

/**
 * The drill's checks and cleanup with a stand-in etcd: `etcdutl` makes the data dir, `etcd` is a
 * TCP listener on the client port it was given, and the probe reports what a test sets. The real
 * etcd is in test/integration/drill.test.ts.
 */
const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-drill-unit-'));
test.after(() => rm(work, { recursive: true, force: true }));
const key = await generateIdentity();
const stranger = await generateIdentity();
const store = new FsStore(path.join(work, 'store'));
const log = createLogger('silent');
let n = 0;

async function backup(counts: { keyCount?: number; registryKeyCount?: number }): Promise<StoredManifest> {
  const db = randomBytes(4096);
  const base = sampleManifest(db.length, [], `20261124T0330${String(n++).padStart(2, '0')}.000Z-r42`);
  const manifest = { ...base, etcd: { ...base.etcd, ...counts } };
  const tar = await collect(archiveChunks({ manifest, kit: [], snapshot: chunked(fakeSnapshot(db), 1000) }));
  const sealed = await buffer(Readable.from([tar]).compose(createEncryptStream([key.recipient])));
  const k = archiveKey('test', manifest.backupId, 'none');
  await store.put(k, Readable.from([sealed]));
  return {
    ...manifest,
    snapshot: { ...manifest.snapshot, sha256: sha256(fakeSnapshot(db)), dbSha256: sha256(db) },
    archive: { key: k, size: sealed.length, sha256: sha256(sealed), compression: { algorithm: 'none', level: 0 }, encryption: { format: 'age', recipients: [key.recipient] } },
    completedAt: manifest.createdAt,
  };
}

interface Seen {
  started: number;
  stopped: number;
}

function standIn(): { exec: Executor; seen: Seen } {
  const seen: Seen = { started: 0, stopped: 0 };
  const exec: Executor = {
    async run(_command, args) {
      await mkdir(args[args.indexOf('--data-dir') + 1]!, { mode: 0o700 });
      return { stdout: '', stderr: '' };
    },
    async start(_command, args) {
      const socket = args.find((a) => a.startsWith('--listen-client-urls='))!.slice('--listen-client-urls=unix://'.length);
      const server: Server = createServer((conn) => conn.destroy());
      await new Promise<void>((resolve) => server.listen(socket, resolve));
      seen.started += 1;
      let exit!: (e: ProcessExit) => void;
      const exited = new Promise<ProcessExit>((resolve) => (exit = resolve));
      return {
        pid: 0x3ffffff0,
        exited,
        async stop() {
          seen.stopped += 1;
          await new Promise((resolve) => server.close(resolve));
          exit({ code: 0, signal: null });
        },
      };
    },
  };
  return { exec, seen };
}

function probe(found: { revision?: string; keyCount: number; registryKeyCount: number }): () => DrillProbe {
  return () => ({
    status: async () => ({ revision: found.revision ?? '42', hasLeader: true }),
    counts: async () => ({ keyCount: found.keyCount, registryKeyCount: found.registryKeyCount }),
    close: () => undefined,
  });
}

async function drill(stored: StoredManifest, found: Parameters<typeof probe>[0], identities = [key.identity]) {
  const scratchDir = path.join(work, `scratch-${n++}`);
  await mkdir(scratchDir);
  const { exec, seen } = standIn();
  const result = runDrill({ store, decrypt: createDecryptStream, exec, log, connect: probe(found) }, stored, {
    identities, etcdutl: 'etcdutl', etcd: 'etcd', scratchDir, startTimeoutSeconds: 30,
  });
  return { result, seen, scratchDir };
}

async function assertCleanedUp(d: Awaited<ReturnType<typeof drill>>, started: number) {
  await d.result.catch(() => undefined);
  assert.equal(d.seen.started, started);
  assert.equal(d.seen.stopped, started, 'every etcd started was stopped');
  assert.deepEqual(await readdir(d.scratchDir), [], 'the scratch dir is gone');
}

test('matching counts pass, and the report carries the counts, the expectation and every step', async () => {
  const stored = await backup({ keyCount: 10, registryKeyCount: 7 });
  const d = await drill(stored, { revision: '45', keyCount: 10, registryKeyCount: 7 });
  const report = await d.result;
  assert.deepEqual(
    { revision: report.revision, keyCount: report.keyCount, registryKeyCount: report.registryKeyCount, expected: report.expected },
    { revision: '45', keyCount: 10, registryKeyCount: 7, expected: { revision: '42', keyCount: 10, registryKeyCount: 7 } },
  );
  assert.deepEqual(Object.keys(report.timings), ['archive', 'restore', 'start', 'check', 'cleanup']);
  await assertCleanedUp(d, 1);
});

for (const [label, found, pattern] of [
  ['a key missing', { keyCount: 9, registryKeyCount: 7 }, /holds 9 keys at revision 42, but the manifest says 10/],
  ['a /registry/ key missing', { keyCount: 10, registryKeyCount: 6 }, /holds 6 keys under \/registry\/ at revision 42, but the manifest says 7/],
  ['an older revision', { revision: '41', keyCount: 10, registryKeyCount: 7 }, /at revision 41, older than the manifest's 42/],
] as const) {
  test(`${label} in the restored etcd is an IntegrityError; its etcd is stopped and the scratch dir removed`, async () => {
    const d = await drill(await backup({ keyCount: 10, registryKeyCount: 7 }), found);
    await assert.rejects(d.result, (err: unknown) => err instanceof IntegrityError && pattern.test(err.message));
    await assertCleanedUp(d, 1);
  });
}

test('without counts in the manifest, keys and /registry/ keys must exist', async () => {
  const stored = await backup({});
  const ok = await drill(stored, { keyCount: 3, registryKeyCount: 1 });
  assert.deepEqual((await ok.result).expected, { revision: '42' });
  await assertCleanedUp(ok, 1);
  const none = await drill(stored, { keyCount: 3, registryKeyCount: 0 });
  await assert.rejects(none.result, (err: unknown) => err instanceof IntegrityError && /no keys under \/registry\//.test(err.message));
  await assertCleanedUp(none, 1);
  const empty = await drill(stored, { keyCount: 0, registryKeyCount: 0 });
  await assert.rejects(empty.result, (err: unknown) => err instanceof IntegrityError && /holds no keys/.test(err.message));
  await assertCleanedUp(empty, 1);
});

test('a wrong identity on an intact archive stays NoMatchingIdentityError; no etcd is started', async () => {
  const d = await drill(await backup({ keyCount: 10, registryKeyCount: 7 }), { keyCount: 10, registryKeyCount: 7 }, [stranger.identity]);
  await assert.rejects(d.result, NoMatchingIdentityError);
  await assertCleanedUp(d, 0);
});

test('a scratch dir that does not exist is a ConfigError naming drill.scratchDir', async () => {
  const stored = await backup({ keyCount: 10, registryKeyCount: 7 });
  const { exec } = standIn();
  await assert.rejects(
    runDrill({ store, decrypt: createDecryptStream, exec, log, connect: probe({ keyCount: 10, registryKeyCount: 7 }) }, stored, {
      identities: [key.identity], etcdutl: 'etcdutl', etcd: 'etcd', scratchDir: path.join(work, 'absent'), startTimeoutSeconds: 30,
    }),
    (err: unknown) => err instanceof ConfigError && err.field === '/drill/scratchDir',
  );
});
