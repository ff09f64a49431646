import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile, utimes, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { FsStore } from '../../src/store/fs-store.ts';
import { storeConformance } from '../support/store-conformance.ts';

const roots: string[] = [];
test.after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

async function freshRoot(): Promise<string> {
  const root = await mkdtemp(path.join(tmpdir(), 'lifeboat-fs-store-'));
  roots.push(root);
  return root;
}

storeConformance('fs', async () => new FsStore(await freshRoot()));

test('fs: objects are written 0600 in 0700 directories', async () => {
  const root = await freshRoot();
  const store = new FsStore(root);
  await store.put('c/backups/a/archive', Readable.from([Buffer.from('secret')]));
  assert.equal((await stat(path.join(root, 'c/backups/a/archive'))).mode & 0o777, 0o600);
  assert.equal((await stat(path.join(root, 'c/backups/a'))).mode & 0o777, 0o700);
});

test('fs: temp files of a crashed put are invisible, and removed once old enough', async () => {
  const root = await freshRoot();
  const store = new FsStore(root);
  await store.put('c/backups/a/manifest.json', Readable.from([Buffer.from('{}')]));
  const temp = path.join(root, 'c/backups/a/archive.tmp-999-deadbeef');
  await writeFile(temp, 'partial');
  const hourAgo = new Date(Date.now() - 3600_000);
  await utimes(temp, hourAgo, hourAgo);
  assert.deepEqual((await store.list('c/')).map((o) => o.key), ['c/backups/a/manifest.json']);
  assert.equal(await store.removeIncomplete('c/', new Date(Date.now() - 7200_000)), 0, 'younger than the threshold');
  assert.equal(await store.removeIncomplete('c/', new Date(Date.now() - 60_000)), 1);
  assert.deepEqual(await readdir(path.join(root, 'c/backups/a')), ['manifest.json']);
});
