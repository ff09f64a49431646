import { Header, Pax } from 'tar';
import { ArchiveError } from '../errors/errors.ts';

/**
 * The tar layer of the archive: POSIX ustar headers (with a PAX header for long names), as GNU
 * tar reads them. Headers are encoded and decoded with node-tar's Header; the streaming around
 * them is ours, so entries of any size pass through with backpressure and no temp files.
 */
export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

export interface EntryHeader {
  path: string;
  size: number;
  mode: number;
  mtime: Date;
}

/** The header block(s) for a regular file: a PAX extended header first when the name needs it. */
export function fileHeader(entry: EntryHeader): Buffer {
  const data = { path: entry.path, mode: entry.mode, size: entry.size, mtime: entry.mtime, type: 'File' as const, uid: 0, gid: 0, uname: 'root', gname: 'root' };
  const header = new Header(data);
  const needPax = header.encode();
  if (!header.block) throw new ArchiveError(`cannot encode a tar header for ${entry.path}`);
  if (!needPax) return header.block;
  return Buffer.concat([new Pax({ path: entry.path, size: entry.size, mtime: entry.mtime }).encode(), header.block]);
}

/** Zero bytes that pad an entry of `size` bytes to a whole block. */
export function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rest);
}

export type EntryType = 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'Other';

export interface TarEntry {
  path: string;
  type: EntryType;
  size: number;
  mode: number;
  linkpath: string | undefined;
  /** Must be consumed (or abandoned, then it is skipped) before asking for the next entry. */
  body: AsyncIterable<Buffer>;
}

/** Reads exact byte counts from an async iterable of chunks without copying large bodies. */
class ByteSource {
  readonly #it: AsyncIterator<Buffer>;
  #pending: Buffer = Buffer.alloc(0);
  #done = false;
  offset = 0;

  constructor(source: AsyncIterable<Buffer>) {
    this.#it = source[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#pending.length === 0) {
      if (this.#done) return false;
      const next = await this.#it.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      this.#pending = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
    }
    return true;
  }

  /** Exactly n bytes; undefined only when the source ended before the first byte. */
  async readExact(n: number, what: string): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      if (!(await this.#fill())) {
        if (got === 0) return undefined;
        throw new ArchiveError(`archive is truncated: ${what} ends after ${got} of ${n} bytes at offset ${this.offset}`);
      }
      const take = this.#pending.subarray(0, n - got);
      this.#pending = this.#pending.subarray(take.length);
      parts.push(take);
      got += take.length;
      this.offset += take.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }

  async *read(n: number, what: string): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (!(await this.#fill())) {
        throw new ArchiveError(`archive is truncated: ${what} ends after ${n - left} of ${n} bytes`);
      }
      const take = this.#pending.subarray(0, left);
      this.#pending = this.#pending.subarray(take.length);
      left -= take.length;
      this.offset += take.length;
      yield take;
    }
  }

  async skip(n: number, what: string): Promise<void> {
    for await (const _ of this.read(n, what)) {
      // discard
    }
  }
}

const MAX_PAX_BYTES = 1 << 20;

/**
 * Parses a tar stream into entries. Strict: a bad checksum, a truncated entry or a missing
 * end-of-archive marker is an ArchiveError. PAX extended headers are applied; global ones are
 * rejected (Lifeboat never writes them).
 */
export async function* readTar(source: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const bytes = new ByteSource(source);
  let extended: Pax | undefined;
  for (;;) {
    const at = bytes.offset;
    const block = await bytes.readExact(BLOCK, 'a tar header');
    if (block === undefined) throw new ArchiveError('archive is truncated: the end-of-archive marker is missing');
    if (block.every((b) => b === 0)) return; // end of archive; what follows is record padding
    const header = new Header(block, 0, extended);
    extended = undefined;
    if (!header.cksumValid) throw new ArchiveError(`archive is corrupt: bad tar header checksum at offset ${at}`);
    const size = header.size ?? 0;
    if (!Number.isSafeInteger(size) || size < 0) throw new ArchiveError(`archive is corrupt: bad entry size at offset ${at}`);
    const path = header.path ?? '';
    const what = `entry ${JSON.stringify(path)}`;
    const kind = header.type;
    if (kind === 'ExtendedHeader' || kind === 'OldExtendedHeader') {
      if (size > MAX_PAX_BYTES) throw new ArchiveError(`archive is corrupt: PAX header of ${size} bytes at offset ${at}`);
      const body = (await bytes.readExact(size, 'a PAX header')) ?? Buffer.alloc(0);
      await bytes.skip(padding(size).length, 'a PAX header');
      extended = Pax.parse(body.toString('utf8'));
      continue;
    }
    if (kind === 'GlobalExtendedHeader') throw new ArchiveError(`archive has a global PAX header at offset ${at}: not a Lifeboat archive`);
    const type: EntryType =
      kind === 'File' || kind === 'OldFile' || kind === 'ContiguousFile'
        ? 'File'
        : kind === 'Directory' || kind === 'SymbolicLink' || kind === 'Link'
          ? kind
          : 'Other';
    let left = size;
    const body = (async function* () {
      for await (const chunk of bytes.read(left, what)) {
        left -= chunk.length;
        yield chunk;
      }
    })();
    yield { path, type, size, mode: header.mode ?? 0, linkpath: header.linkpath || undefined, body };
    if (left > 0) await bytes.skip(left, what);
    await bytes.skip(padding(size).length, what);
  }
}
