import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { Header } from 'tar';
import { manifestJson, type StoredManifest } from '../../src/archive/manifest.ts';
import { END_OF_ARCHIVE, fileHeader, padding } from '../../src/archive/tar.ts';
import { readArchive } from '../../src/archive/reader.ts';
import { archiveChunks } from '../../src/archive/writer.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { DestinationNotEmptyError, IntegrityError, UnsafePathError } from '../../src/errors/errors.ts';
import { extractBackup } from '../../src/restore/extract.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { archiveKey } from '../../src/store/layout.ts';
import { createLogger } from '../../src/log/logger.ts';
import { chunked, collect, fakeSnapshot, kitFile, sampleManifest, sha256 } from '../support/fixtures.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-extract-'));
test.after(() => rm(work, { recursive: true, force: true }));
const key = await generateIdentity();
const log = createLogger('silent');
const store = new FsStore(path.join(work, 'store'));
const deps = { store, decrypt: createDecryptStream, log };
let n = 0;

/** Stores `tar` as an encrypted archive with a matching stored manifest. */
async function stored(tar: Buffer, manifest: ReturnType<typeof sampleManifest>): Promise<StoredManifest> {
  const sealed = await buffer(Readable.from([tar]).compose(createEncryptStream([key.recipient])));
  const id = `20261124T0330${String(n++).padStart(2, '0')}.000Z-r42`;
  const k = archiveKey('test', id, 'none');
  await store.put(k, Readable.from([sealed]));
  const snapshot = fakeSnapshot(Buffer.alloc(manifest.etcd.dbSize, 7));
  return {
    ...manifest,
    snapshot: { ...manifest.snapshot, sha256: sha256(snapshot), dbSha256: sha256(snapshot.subarray(0, -32)) },
    archive: { key: k, size: sealed.length, sha256: sha256(sealed), compression: { algorithm: 'none', level: 0 }, encryption: { format: 'age', recipients: [key.recipient] } },
    completedAt: manifest.createdAt,
  };
}

/** A manifest entry, then raw extra bytes (hostile entries), then the end marker. */
function hostileTar(manifest: ReturnType<typeof sampleManifest>, extra: Buffer[]): Buffer {
  const m = Buffer.from(manifestJson(manifest));
  return Buffer.concat([fileHeader({ path: 'manifest.json', size: m.length, mode: 0o644, mtime: new Date() }), m, padding(m.length), ...extra, END_OF_ARCHIVE]);
}

function entry(name: string, body: string): Buffer {
  const b = Buffer.from(body);
  return Buffer.concat([fileHeader({ path: name, size: b.length, mode: 0o644, mtime: new Date() }), b, padding(b.length)]);
}

function link(name: string, target: string, type: 'SymbolicLink' | 'Link'): Buffer {
  const h = new Header({ path: name, linkpath: target, type, mode: 0o777, size: 0, mtime: new Date() });
  h.encode();
  return h.block!;
}

test('a good archive extracts with checked hashes, every file 0600 whatever mode the archive records', async () => {
  const db = randomBytes(5000);
  const files = [kitFile('/etc/kubernetes/pki/ca.key', 'KEY', 0o600), kitFile('/etc/kubernetes/manifests/etcd.yaml', 'kind: Pod\n', 0o644)];
  const manifest = sampleManifest(db.length, files.map((f) => f.file));
  const tar = await collect(archiveChunks({ manifest, kit: files.map((f) => f.content), snapshot: chunked(fakeSnapshot(db), 1000) }));
  const s = await stored(tar, manifest);
  s.snapshot.sha256 = sha256(fakeSnapshot(db));
  s.snapshot.dbSha256 = sha256(db);
  const out = path.join(work, 'good');
  await extractBackup(deps, s, [key.identity], out);
  assert.deepEqual((await readdir(out, { recursive: true })).sort(), ['etc', 'etc/kubernetes', 'etc/kubernetes/manifests', 'etc/kubernetes/manifests/etcd.yaml', 'etc/kubernetes/pki', 'etc/kubernetes/pki/ca.key', 'etcd', 'etcd/snapshot.db', 'kit', 'manifest.json'].map((p) => (p.startsWith('etc/') || p === 'etc' ? `kit/${p}` : p)).sort());
  assert.equal((await stat(path.join(out, 'kit/etc/kubernetes/pki/ca.key'))).mode & 0o777, 0o600);
  assert.equal((await stat(path.join(out, 'kit/etc/kubernetes/manifests/etcd.yaml'))).mode & 0o777, 0o600, 'the archive said 0644: stored data does not choose a mode on the host');
  assert.deepEqual(await readFile(path.join(out, 'etcd/snapshot.db')), fakeSnapshot(db));
});

for (const [label, extra] of [
  ['a ../ path', entry('kit/../../escaped.txt', 'owned')],
  ['an absolute path', entry('/tmp/lifeboat-absolute-escape.txt', 'owned')],
  ['a symlink pointing outside', link('kit/link', '/etc/passwd', 'SymbolicLink')],
  ['a hard link pointing outside', link('kit/hard', '../../etc/shadow', 'Link')],
] as const) {
  test(`an entry with ${label} is refused and nothing is left behind`, async () => {
    const manifest = sampleManifest(100, []);
    const s = await stored(hostileTar(manifest, [extra]), manifest);
    const out = path.join(work, `hostile-${n}`, 'out');
    await assert.rejects(extractBackup(deps, s, [key.identity], out), UnsafePathError);
    await assert.rejects(stat(out), { code: 'ENOENT' });
    assert.deepEqual(await readdir(path.dirname(out)), []);
    await assert.rejects(stat('/tmp/lifeboat-absolute-escape.txt'), { code: 'ENOENT' });
  });
}

test('an existing non-empty directory is refused and left as it was', async () => {
  const manifest = sampleManifest(100, []);
  const s = await stored(hostileTar(manifest, []), manifest);
  const out = path.join(work, 'busy');
  await mkdir(out);
  await writeFile(path.join(out, 'precious'), 'keep me');
  await assert.rejects(extractBackup(deps, s, [key.identity], out), DestinationNotEmptyError);
  assert.equal(await readFile(path.join(out, 'precious'), 'utf8'), 'keep me');
});


test('a kit entry whose tar header declares more bytes than its manifest is refused before a byte of it reaches the sink', async () => {
  const declared = kitFile('/etc/kubernetes/pki/ca.crt', 'abc');
  const manifest = sampleManifest(100, [declared.file]);
  // The archive says 1 MiB for the file the manifest says is 3 bytes.
  const big = Buffer.alloc(1 << 20, 0x41);
  const oversized = Buffer.concat([fileHeader({ path: declared.file.entry, size: big.length, mode: 0o644, mtime: new Date() }), big, padding(big.length)]);
  const s = await stored(hostileTar(manifest, [oversized]), manifest);
  const received = new Map<string, number>();
  const sink = async (entry: { path: string }, body: AsyncIterable<Buffer>) => {
    for await (const chunk of body) received.set(entry.path, (received.get(entry.path) ?? 0) + chunk.length);
  };
  await assert.rejects(readArchive(await store.get(s.archive.key), s, createDecryptStream([key.identity]), sink), (err: unknown) => err instanceof IntegrityError && /is 1048576 bytes in the archive, but the manifest says 3/.test(err.message));
  assert.ok(received.has('manifest.json'), 'the manifest entry was read');
  assert.equal(received.get(declared.file.entry), undefined, 'no byte of the oversized entry');
  const out = path.join(work, 'oversized');
  await assert.rejects(extractBackup(deps, s, [key.identity], out), IntegrityError);
  await assert.rejects(stat(out), { code: 'ENOENT' });
});
