import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { EtcdUnavailableError, NotFoundError, StoreError } from '../../src/errors/errors.ts';
import { InstrumentedStore } from '../../src/metrics/instrumented-store.ts';
import { LifeboatMetrics, type StoreName, type StoreOp, type StoreResult } from '../../src/metrics/metrics.ts';
import type { BackupStore, ObjectInfo } from '../../src/store/store.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { storeConformance } from '../support/store-conformance.ts';

/** Records what the decorator reports. */
class Recorder {
  readonly seen: string[] = [];
  storeOperation(store: StoreName, op: StoreOp, result: StoreResult): void {
    this.seen.push(`${store} ${op} ${result}`);
  }
}

storeConformance('instrumented memory', async () => new InstrumentedStore({ store: new MemoryStore(), name: 'primary', metrics: new Recorder() }));

test('every operation is counted once, with its result, and results pass through unchanged', async () => {
  const inner = new MemoryStore();
  const recorder = new Recorder();
  const store = new InstrumentedStore({ store: inner, name: 'secondary', metrics: recorder });
  assert.equal(store.description, 'memory:');

  assert.deepEqual(await store.put('c/a', Readable.from([Buffer.from('hello')])), { size: 5 });
  assert.equal(await text(await store.get('c/a')), 'hello');
  assert.equal((await store.stat('c/a'))?.size, 5);
  assert.equal(await store.stat('c/missing'), undefined);
  assert.deepEqual((await store.list('c/')).map((o) => o.key), ['c/a']);
  await store.delete('c/a');
  assert.equal(await store.removeIncomplete('c/', new Date()), 0);
  await assert.rejects(store.get('c/a'), NotFoundError);

  assert.deepEqual(recorder.seen, [
    'secondary put success',
    'secondary get success',
    'secondary stat success',
    'secondary stat success',
    'secondary list success',
    'secondary delete success',
    'secondary cleanup success',
    'secondary get not_found',
  ]);
});

/** A store whose every operation fails as a broken store does. */
class BrokenStore implements BackupStore {
  readonly description = 'broken:';
  readonly err = new StoreError('broken: connection refused');
  async put(_key: string, body: Readable): Promise<{ size: number }> {
    body.destroy(this.err);
    throw this.err;
  }
  async get(): Promise<Readable> {
    throw this.err;
  }
  async stat(): Promise<ObjectInfo | undefined> {
    throw this.err;
  }
  async list(): Promise<ObjectInfo[]> {
    throw this.err;
  }
  async delete(): Promise<void> {
    throw this.err;
  }
  async removeIncomplete(): Promise<number> {
    throw this.err;
  }
}

test('store failures count as failure and the error is rethrown as is', async () => {
  const inner = new BrokenStore();
  const recorder = new Recorder();
  const store = new InstrumentedStore({ store: inner, name: 'primary', metrics: recorder });
  const same = (err: unknown) => err === inner.err;
  const body = Readable.from([Buffer.from('x')]);
  const bodyError = new Promise((resolve) => body.once('error', resolve));
  await assert.rejects(store.put('k', body), same);
  assert.equal(await bodyError, inner.err, 'the body is destroyed by the store, as before');
  await assert.rejects(store.get('k'), same);
  await assert.rejects(store.stat('k'), same);
  await assert.rejects(store.list(''), same);
  await assert.rejects(store.delete('k'), same);
  await assert.rejects(store.removeIncomplete('', new Date()), same);
  assert.deepEqual(recorder.seen, ['put', 'get', 'stat', 'list', 'delete', 'cleanup'].map((op) => `primary ${op} failure`));
});

test('a put whose source fails, or that is cancelled, is aborted, not a store failure', async () => {
  const recorder = new Recorder();
  const store = new InstrumentedStore({ store: new MemoryStore(), name: 'primary', metrics: recorder });

  async function* etcdGoesAway(): AsyncGenerator<Buffer> {
    yield Buffer.from('partial');
    throw new EtcdUnavailableError('etcd member went away mid-snapshot');
  }
  await assert.rejects(store.put('k/a', Readable.from(etcdGoesAway())), EtcdUnavailableError);

  const controller = new AbortController();
  async function* slow(): AsyncGenerator<Buffer> {
    yield Buffer.from('x');
    controller.abort();
    await new Promise((r) => setTimeout(r, 20));
    yield Buffer.from('y');
  }
  await assert.rejects(store.put('k/b', Readable.from(slow()), { signal: controller.signal }));

  async function* plainBreak(): AsyncGenerator<Buffer> {
    yield Buffer.from('x');
    throw new Error('disk gone');
  }
  await assert.rejects(store.put('k/c', Readable.from(plainBreak())), /disk gone/);
  await assert.rejects(store.put('../escape', Readable.from([Buffer.from('x')])));

  assert.deepEqual(recorder.seen, ['primary put aborted', 'primary put aborted', 'primary put failure', 'primary put failure']);
});

test('wired to the facade, the counts show up in lifeboat_store_operations_total', async () => {
  const metrics = new LifeboatMetrics({ cluster: 'c', node: 'n', version: '0' });
  const store = new InstrumentedStore({ store: new MemoryStore(), name: 'primary', metrics });
  await store.put('k/a', Readable.from([Buffer.from('x')]));
  await store.put('k/b', Readable.from([Buffer.from('y')]));
  await assert.rejects(store.get('k/none'));
  const out = await metrics.render();
  assert.match(out, /^lifeboat_store_operations_total\{store="primary",op="put",result="success",cluster="c"\} 2$/m);
  assert.match(out, /^lifeboat_store_operations_total\{store="primary",op="get",result="not_found",cluster="c"\} 1$/m);
  assert.match(out, /^lifeboat_store_operations_total\{store="primary",op="get",result="failure",cluster="c"\} 0$/m);
});
