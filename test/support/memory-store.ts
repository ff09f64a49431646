import type { Readable } from 'node:stream';
import { Readable as NodeReadable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { NotFoundError } from '../../src/errors/errors.ts';
import { assertObjectKey } from '../../src/store/layout.ts';
import type { BackupStore, ObjectInfo, PutOptions } from '../../src/store/store.ts';

/** An in-memory BackupStore, for unit tests of what sits on top of a store. */
export class MemoryStore implements BackupStore {
  readonly description = 'memory:';
  readonly objects = new Map<string, { body: Buffer; modified: Date }>();

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    assertObjectKey(key);
    const onAbort = () => body.destroy(new Error('aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const bytes = await buffer(body);
      if (options.signal?.aborted) throw new Error('aborted');
      this.objects.set(key, { body: bytes, modified: new Date() });
      return { size: bytes.length };
    } catch (err) {
      if (!body.destroyed) body.destroy(err as Error);
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async get(key: string): Promise<Readable> {
    const o = this.objects.get(key);
    if (!o) throw new NotFoundError(`memory: ${key}: no such object`);
    return NodeReadable.from([o.body]);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { key, size: o.body.length, modified: o.modified } : undefined;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort().map((k) => ({ key: k, size: this.objects.get(k)!.body.length, modified: this.objects.get(k)!.modified }));
  }

  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }

  async removeIncomplete(): Promise<number> {
    return 0;
  }
}
