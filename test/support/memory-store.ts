import type { Readable } from 'node:stream';
import { Readable as NodeReadable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { NotFoundError, ObjectLockedError } from '../../src/errors/errors.ts';
import { assertObjectKey } from '../../src/store/layout.ts';
import { isLocked, type BackupStore, type ObjectInfo, type PutOptions } from '../../src/store/store.ts';

export interface MemoryLock {
  retainUntil?: Date;
  legalHold?: boolean;
}

export interface MemoryStoreOptions {
  /** Like store.s3.objectLock: puts with `retain` are locked for this many days. */
  retentionDays?: number;
  /** The clock for retention; default the real one. */
  now?: () => Date;
}

/**
 * An in-memory BackupStore, for unit tests of what sits on top of a store. It keeps Object Lock
 * the way S3 does: a locked object (retention in the future, or a legal hold) is not deleted, and
 * `delete` fails with ObjectLockedError; `stat` reports the lock.
 */
export class MemoryStore implements BackupStore {
  readonly description = 'memory:';
  readonly objects = new Map<string, { body: Buffer; modified: Date; lock?: MemoryLock }>();
  readonly options: MemoryStoreOptions;

  constructor(options: MemoryStoreOptions = {}) {
    this.options = options;
  }

  now(): Date {
    return this.options.now?.() ?? new Date();
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    assertObjectKey(key);
    const onAbort = () => body.destroy(new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const bytes = await buffer(body);
      if (options.signal?.aborted) throw new Error('aborted');
      const days = this.options.retentionDays;
      const now = this.now();
      const lock = options.retain && days !== undefined ? { retainUntil: new Date(now.getTime() + days * 86_400_000) } : undefined;
      this.objects.set(key, { body: bytes, modified: now, ...(lock ? { lock } : {}) });
      return { size: bytes.length };
    } catch (err) {
      if (!body.destroyed) body.destroy(err as Error);
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Puts Object Lock retention and/or a legal hold on an existing object (replacing its lock). */
  lock(key: string, lock: MemoryLock): void {
    const o = this.objects.get(key);
    if (!o) throw new NotFoundError(`memory: ${key}: no such object`);
    o.lock = { ...lock };
  }

  async get(key: string): Promise<Readable> {
    const o = this.objects.get(key);
    if (!o) throw new NotFoundError(`memory: ${key}: no such object`);
    return NodeReadable.from([o.body]);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { key, size: o.body.length, modified: o.modified, ...o.lock } : undefined;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort().map((k) => ({ key: k, size: this.objects.get(k)!.body.length, modified: this.objects.get(k)!.modified }));
  }

  async delete(key: string): Promise<void> {
    const lock = this.objects.get(key)?.lock;
    if (lock && isLocked(lock, this.now())) {
      throw new ObjectLockedError(key, lock, `memory: ${key} is locked${lock.retainUntil ? ` until ${lock.retainUntil.toISOString()}` : ''}${lock.legalHold ? ' (legal hold)' : ''}`);
    }
    this.objects.delete(key);
  }

  async removeIncomplete(): Promise<number> {
    return 0;
  }
}
