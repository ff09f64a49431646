import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text, buffer } from 'node:stream/consumers';
import { randomBytes } from 'node:crypto';
import { NotFoundError, UnsafePathError } from '../../src/errors/errors.ts';
import type { BackupStore } from '../../src/store/store.ts';

/**
 * The behaviour every BackupStore must have. Each store's test file calls this with a factory
 * that returns a fresh, empty store.
 */
export function storeConformance(name: string, fresh: () => Promise<BackupStore>): void {
  test(`${name}: put, stat, get, list and delete`, async () => {
    const store = await fresh();
    const body = randomBytes(300_000);
    const put = await store.put('c/backups/a/archive', Readable.from([body.subarray(0, 1000), body.subarray(1000)]));
    assert.equal(put.size, body.length);
    await store.put('c/backups/a/manifest.json', Readable.from([Buffer.from('{}')]));
    await store.put('c/backups/b/manifest.json', Readable.from([Buffer.from('{"b":1}')]));
    await store.put('other/x', Readable.from([Buffer.from('x')]));
    assert.equal((await store.stat('c/backups/a/archive'))?.size, body.length);
    assert.equal(await store.stat('c/backups/zzz'), undefined);
    assert.deepEqual(await buffer(await store.get('c/backups/a/archive')), body);
    assert.deepEqual((await store.list('c/backups/')).map((o) => o.key), ['c/backups/a/archive', 'c/backups/a/manifest.json', 'c/backups/b/manifest.json']);
    assert.deepEqual((await store.list('c/backups/a/')).map((o) => o.key), ['c/backups/a/archive', 'c/backups/a/manifest.json']);
    await store.delete('c/backups/a/archive');
    await store.delete('c/backups/a/archive'); // deleting a missing key is not an error
    assert.equal(await store.stat('c/backups/a/archive'), undefined);
    await assert.rejects(store.get('c/backups/a/archive'), NotFoundError);
  });

  test(`${name}: a put overwrites, and an empty object is an object`, async () => {
    const store = await fresh();
    await store.put('k/one', Readable.from([Buffer.from('first')]));
    await store.put('k/one', Readable.from([Buffer.from('second')]));
    assert.equal(await text(await store.get('k/one')), 'second');
    await store.put('k/empty', Readable.from([]));
    assert.equal((await store.stat('k/empty'))?.size, 0);
  });

  test(`${name}: a failed put leaves nothing visible and nothing to clean up`, async () => {
    const store = await fresh();
    async function* failing(): AsyncGenerator<Buffer> {
      yield randomBytes(100_000);
      throw new Error('source broke');
    }
    await assert.rejects(store.put('k/broken', Readable.from(failing())), /source broke/);
    assert.equal(await store.stat('k/broken'), undefined);
    assert.deepEqual(await store.list('k/'), []);
    assert.equal(await store.removeIncomplete('k/', new Date(Date.now() + 60_000)), 0);
  });

  test(`${name}: an aborted put leaves nothing visible`, async () => {
    const store = await fresh();
    const controller = new AbortController();
    async function* slow(): AsyncGenerator<Buffer> {
      yield randomBytes(10_000);
      controller.abort();
      await new Promise((r) => setTimeout(r, 50));
      yield randomBytes(10_000);
    }
    await assert.rejects(store.put('k/aborted', Readable.from(slow()), { signal: controller.signal }));
    assert.equal(await store.stat('k/aborted'), undefined);
    assert.deepEqual(await store.list('k/'), []);
  });

  test(`${name}: keys that are not clean relative paths are refused`, async () => {
    const store = await fresh();
    for (const key of ['../x', 'a/../../x', '/abs', 'a//b', '']) {
      await assert.rejects(store.put(key, Readable.from([Buffer.from('x')])), UnsafePathError, key);
    }
  });
}
