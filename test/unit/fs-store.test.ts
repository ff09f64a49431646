import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile, utimes, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { StoreError } from '../../src/errors/errors.ts';
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

test('fs: a put that cannot even start destroys its body, so the producer does not stall', async () => {
  const root = await freshRoot();
  const blocker = path.join(root, 'not-a-dir');
  await writeFile(blocker, 'x');
  const store = new FsStore(blocker);
  const body = new PassThrough();
  const seen: unknown[] = [];
  body.on('error', (err) => seen.push(err));
  await assert.rejects(store.put('c/k', body), StoreError);
  await new Promise((r) => setImmediate(r));
  assert.ok(seen[0] instanceof StoreError, 'the producer hears why');
  assert.ok(body.destroyed);
});
