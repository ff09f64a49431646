import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, symlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { archiveChunks } from '../../src/archive/writer.ts';
import { readTar } from '../../src/archive/tar.ts';
import { ArchiveError, SnapshotError } from '../../src/errors/errors.ts';
import { chunked, collect, fakeSnapshot, kitFile, sampleManifest } from '../support/fixtures.ts';

const longPath = `/etc/kubernetes/${'very-long-directory-name/'.repeat(6)}extra-file.yaml`;

async function sampleArchive(snapshot: Buffer) {
  const files = [kitFile('/etc/kubernetes/pki/ca.key', 'KEY'), kitFile(longPath, 'extra: true\n', 0o644), kitFile('/etc/kubernetes/empty', '')];
  const manifest = sampleManifest(snapshot.length - 32, files.map((f) => f.file));
  const tar = await collect(archiveChunks({ manifest, kit: files.map((f) => f.content), snapshot: chunked(snapshot, 32768) }));
  return { tar, manifest, files };
}

test('GNU tar reads what the writer writes: names (PAX for long ones), modes and bytes', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-tar-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const snapshot = fakeSnapshot(randomBytes(100_000));
  const { tar } = await sampleArchive(snapshot);
  assert.equal(tar.length % 512, 0);
  const listing = execFileSync('tar', ['-tf', '-'], { input: tar }).toString().trim().split('\n');
  assert.deepEqual(listing, ['manifest.json', 'kit/etc/kubernetes/pki/ca.key', `kit${longPath}`, 'kit/etc/kubernetes/empty', 'etcd/snapshot.db']);
  execFileSync('tar', ['-xf', '-', '-C', dir], { input: tar });
  assert.deepEqual(readFileSync(path.join(dir, 'etcd/snapshot.db')), snapshot);
  assert.equal(readFileSync(path.join(dir, `kit${longPath}`), 'utf8'), 'extra: true\n');
  assert.equal(JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')).backupId, '20261124T033000.000Z-r42');
  const verbose = execFileSync('tar', ['-tvf', '-'], { input: tar }).toString();
  assert.match(verbose, /^-rw------- root\/root\s+3 .* kit\/etc\/kubernetes\/pki\/ca\.key$/m);
});

test('readTar reads back every entry whatever the chunking', async () => {
  const snapshot = fakeSnapshot(randomBytes(70_000));
  const { tar, files } = await sampleArchive(snapshot);
  for (const size of [1, 511, 512, 4096, tar.length]) {
    const seen: [string, Buffer][] = [];
    for await (const entry of readTar(chunked(tar, size))) seen.push([entry.path, await collect(entry.body)]);
    assert.deepEqual(seen.map(([p]) => p), ['manifest.json', ...files.map((f) => f.file.entry), 'etcd/snapshot.db']);
    assert.deepEqual(seen.at(-1)?.[1], snapshot);
  }
});

test('readTar skips bodies the consumer does not read', async () => {
  const { tar } = await sampleArchive(fakeSnapshot(randomBytes(3000)));
  const names: string[] = [];
  for await (const entry of readTar(chunked(tar, 100))) names.push(entry.path);
  assert.equal(names.length, 5);
});

test('readTar reads GNU tar archives, links included, so callers can refuse them', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-tar-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'in'));
  writeFileSync(path.join(dir, 'in', 'a'), 'A');
  symlinkSync('/etc/passwd', path.join(dir, 'in', 'link'));
  const tar = execFileSync('tar', ['-cf', '-', '-C', dir, 'in']);
  const entries: [string, string, string | undefined][] = [];
  for await (const e of readTar(chunked(tar, 1000))) entries.push([e.path, e.type, e.linkpath]);
  assert.deepEqual(entries.sort(), [['in/', 'Directory', undefined], ['in/a', 'File', undefined], ['in/link', 'SymbolicLink', '/etc/passwd']].sort());
});

test('readTar refuses truncated archives and bad header checksums', async () => {
  const { tar } = await sampleArchive(fakeSnapshot(randomBytes(3000)));
  for (const cut of [100, 512, 2000, tar.length - 1024]) {
    await assert.rejects(collectAll(tar.subarray(0, cut)), (err: unknown) => err instanceof ArchiveError && /truncated/.test(err.message), `cut at ${cut}`);
  }
  const bad = Buffer.from(tar);
  bad[10] = 0x41;
  await assert.rejects(collectAll(bad), /bad tar header checksum at offset 0/);
});

test('the writer refuses a snapshot shorter or longer than announced', async () => {
  const snapshot = fakeSnapshot(randomBytes(3000));
  const manifest = sampleManifest(3000, []);
  await assert.rejects(collect(archiveChunks({ manifest, kit: [], snapshot: chunked(snapshot.subarray(0, 3000), 1000) })), SnapshotError);
  await assert.rejects(collect(archiveChunks({ manifest, kit: [], snapshot: chunked(Buffer.concat([snapshot, snapshot]), 1000) })), SnapshotError);
});

async function collectAll(tar: Buffer): Promise<void> {
  for await (const e of readTar(chunked(tar, 700))) await collect(e.body);
}
