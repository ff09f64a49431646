import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LifeboatError, NotFoundError, StoreError } from '../errors/errors.ts';
import { syncDir } from './durable-file.ts';
import { assertObjectKey } from './layout.ts';
import type { BackupStore, ObjectInfo, PutOptions } from './store.ts';

const TEMP_MARK = '.tmp-';

/**
 * A directory as a store. Keys map to files below `root`. Writes go to a temp file beside the
 * target (mode 0600), are fsynced, renamed into place, and the directory is fsynced, so a key
 * is either absent or complete, even across a power cut. A directory has no Object Lock: `retain`
 * is ignored, and `stat` reports no retention.
 */
export class FsStore implements BackupStore {
  readonly description: string;
  readonly #root: string;

  constructor(root: string) {
    this.#root = path.resolve(root);
    this.description = `fs:${this.#root}`;
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<{ size: number }> {
    const file = this.#path(key);
    const dir = path.dirname(file);
    const temp = `${file}${TEMP_MARK}${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const out = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
      await pipeline(body, out, options.signal ? { signal: options.signal } : {});
      const handle = await open(temp, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      await syncDir(dir);
      return { size: (await stat(file)).size };
    } catch (err) {
      const wrapped = this.#wrap(err, `write ${key}`);
      // A body nobody reads would stall its producer forever.
      if (!body.destroyed) body.destroy(wrapped);
      await rm(temp, { force: true }).catch(() => undefined); // best effort; removeIncomplete() catches the rest
      await this.#pruneEmptyDirs(dir);
      throw wrapped;
    }
  }

  async get(key: string): Promise<Readable> {
    const file = this.#path(key);
    try {
      const handle = await open(file, 'r');
      return handle.createReadStream();
    } catch (err) {
      throw this.#wrap(err, `read ${key}`);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.#path(key));
      return s.isFile() ? { key, size: s.size, modified: s.mtime } : undefined;
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return undefined;
      throw this.#wrap(err, `stat ${key}`);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for (const entry of await this.#walk(prefix)) {
      if (!entry.key.includes(TEMP_MARK)) out.push(entry);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const file = this.#path(key);
    try {
      await unlink(file);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw this.#wrap(err, `delete ${key}`);
    }
    await this.#pruneEmptyDirs(path.dirname(file));
  }

  async removeIncomplete(prefix: string, olderThan: Date): Promise<number> {
    let removed = 0;
    for (const entry of await this.#walk(prefix)) {
      if (entry.key.includes(TEMP_MARK) && entry.modified < olderThan) {
        await rm(this.#path(entry.key), { force: true });
        removed += 1;
      }
    }
    return removed;
  }

  /** Every file under the directory part of `prefix` whose key starts with `prefix`. */
  async #walk(prefix: string): Promise<ObjectInfo[]> {
    const dirKey = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const start = dirKey === '' ? this.#root : this.#path(dirKey);
    const out: ObjectInfo[] = [];
    const visit = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return;
        throw this.#wrap(err, `list ${prefix}`);
      }
      for (const e of entries) {
        const full = path.join(dir, e.name);
        if (e.isDirectory()) await visit(full);
        else if (e.isFile()) {
          const key = path.relative(this.#root, full).split(path.sep).join('/');
          if (!key.startsWith(prefix)) continue;
          try {
            const s = await stat(full);
            out.push({ key, size: s.size, modified: s.mtime });
          } catch (err) {
            if (!isErrno(err, 'ENOENT')) throw this.#wrap(err, `list ${prefix}`);
          }
        }
      }
    };
    await visit(start);
    return out;
  }

  async #pruneEmptyDirs(dir: string): Promise<void> {
    let current = dir;
    while (current.startsWith(this.#root + path.sep)) {
      try {
        await rmdir(current);
      } catch {
        return; // not empty, or gone
      }
      current = path.dirname(current);
    }
  }

  #path(key: string): string {
    return path.join(this.#root, ...assertObjectKey(key).split('/'));
  }

  #wrap(err: unknown, what: string): Error {
    if (err instanceof LifeboatError) return err;
    if (!(err instanceof Error)) return new StoreError(`${this.description}: ${what}: ${String(err)}`);
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof (err as NodeJS.ErrnoException).syscall !== 'string') return err; // not an I/O error of ours
    if (code === 'ENOENT') return new NotFoundError(`${this.description}: ${what}: no such object`);
    const hint =
      code === 'EACCES' || code === 'EPERM'
        ? `check that this user may write ${this.#root}`
        : code === 'ENOSPC'
          ? `the file system of ${this.#root} is full`
          : undefined;
    return new StoreError(`${this.description}: ${what}: ${err.message}`, { cause: err, ...(hint ? { hint } : {}) });
  }
}

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}
