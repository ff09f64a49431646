import type { Readable } from 'node:stream';
import { LifeboatError } from '../errors/errors.ts';
import type { BackupStore, ObjectInfo, PutOptions } from '../store/store.ts';
import type { StoreName, StoreOp, StoreResult } from './metrics.ts';

/** The one verb of the metrics facade that a store needs. */
export interface StoreOperationSink {
  storeOperation(store: StoreName, op: StoreOp, result: StoreResult): void;
}

export interface InstrumentedStoreDeps {
  store: BackupStore;
  /** Which of the configured stores this is, the `store` label. */
  name: StoreName;
  metrics: StoreOperationSink;
}

/**
 * A BackupStore that counts every operation of the store it wraps into
 * lifeboat_store_operations_total and otherwise changes nothing: same results, same errors,
 * same streams. `removeIncomplete` counts as `cleanup`.
 *
 * Results: a `get` of a missing key is `not_found` (the store answered); a `put` that stopped
 * because its signal fired or its body's producer failed (a LifeboatError that is not the
 * store's own) is `aborted`; every other error is `failure`, which is what the store-errors
 * alert watches.
 */
export class InstrumentedStore implements BackupStore {
  readonly #deps: InstrumentedStoreDeps;

  constructor(deps: InstrumentedStoreDeps) {
    this.#deps = deps;
  }

  get description(): string {
    return this.#deps.store.description;
  }

  put(key: string, body: Readable, options?: PutOptions): Promise<{ size: number }> {
    return this.#count('put', () => this.#deps.store.put(key, body, options), (err) =>
      options?.signal?.aborted || isForeign(err) ? 'aborted' : 'failure',
    );
  }

  get(key: string): Promise<Readable> {
    return this.#count('get', () => this.#deps.store.get(key), (err) => (err instanceof LifeboatError && err.code === 'NOT_FOUND' ? 'not_found' : 'failure'));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.#count('stat', () => this.#deps.store.stat(key));
  }

  list(prefix: string): Promise<ObjectInfo[]> {
    return this.#count('list', () => this.#deps.store.list(prefix));
  }

  delete(key: string): Promise<void> {
    return this.#count('delete', () => this.#deps.store.delete(key));
  }

  removeIncomplete(prefix: string, olderThan: Date): Promise<number> {
    return this.#count('cleanup', () => this.#deps.store.removeIncomplete(prefix, olderThan));
  }

  async #count<T>(op: StoreOp, run: () => Promise<T>, classify: (err: unknown) => StoreResult = () => 'failure'): Promise<T> {
    const { metrics, name } = this.#deps;
    try {
      const value = await run();
      metrics.storeOperation(name, op, 'success');
      return value;
    } catch (err) {
      metrics.storeOperation(name, op, classify(err));
      throw err;
    }
  }
}

/**
 * A Lifeboat error that the store passed through rather than raised: the body's producer failed
 * (etcd went away, the snapshot was bad) or the write was cancelled. Stores raise StoreError for
 * their own failures, and UnsafePathError for a key they refuse.
 */
function isForeign(err: unknown): boolean {
  return err instanceof LifeboatError && err.code !== 'STORE_FAILED' && err.code !== 'UNSAFE_PATH';
}
