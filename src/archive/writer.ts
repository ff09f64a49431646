import type { Writable } from 'node:stream';
import { SnapshotError } from '../errors/errors.ts';
import { END_OF_ARCHIVE, fileHeader, padding } from './tar.ts';
import { manifestJson, MANIFEST_ENTRY, SNAPSHOT_ENTRY, type ArchiveManifest } from './manifest.ts';

export interface KitContent {
  entry: string;
  mode: number;
  content: Buffer;
}

export interface ArchiveParts {
  manifest: ArchiveManifest;
  /** The kit files, read whole (each is small and capped); their hashes are in the manifest. */
  kit: readonly KitContent[];
  /** The snapshot: exactly `manifest.snapshot.size` bytes. */
  snapshot: AsyncIterable<Buffer>;
}

/**
 * The plaintext archive as a stream of chunks: manifest, kit, snapshot, end marker. Nothing is
 * buffered beyond one snapshot chunk; pull-driven, so it runs at the pace of the slowest stage.
 */
export async function* archiveChunks(parts: ArchiveParts): AsyncGenerator<Buffer> {
  const mtime = new Date(parts.manifest.createdAt);
  const manifest = Buffer.from(manifestJson(parts.manifest));
  yield* entry(MANIFEST_ENTRY, 0o644, mtime, manifest);
  for (const file of parts.kit) yield* entry(file.entry, file.mode, mtime, file.content);

  const size = parts.manifest.snapshot.size;
  yield fileHeader({ path: SNAPSHOT_ENTRY, size, mode: 0o600, mtime });
  let written = 0;
  for await (const chunk of parts.snapshot) {
    written += chunk.length;
    if (written > size) throw new SnapshotError(`etcd sent more snapshot bytes than announced (${size})`);
    yield chunk;
  }
  if (written !== size) throw new SnapshotError(`snapshot stream ended after ${written} of ${size} bytes`);
  yield padding(size);
  yield END_OF_ARCHIVE;
}

function* entry(path: string, mode: number, mtime: Date, content: Buffer): Generator<Buffer> {
  yield fileHeader({ path, size: content.length, mode, mtime });
  yield content;
  yield padding(content.length);
}

/**
 * Writes the chunks of `source` to `dest` in blocks of `size` bytes (the last may be smaller),
 * then ends `dest`. zlib streams pay a thread-pool round trip per write: fed etcd's 32 KiB
 * messages, zstd runs at about half the speed it reaches on 1 MiB writes.
 *
 * The blocks are `depth` buffers allocated once and reused: a block is refilled only after its
 * write callback ran, so `dest` must be done with a block by then. zlib streams are (they copy
 * their input into the codec before calling back), and so is the age encryptor; a stage that
 * passes its input on unchanged (a PassThrough) is not, and must not be `dest`. With the default
 * depth of 3, one block is being processed, one waits in `dest`, and one is filling: memory is
 * depth x size, and nothing is allocated per block (joining chunks into a new 1 MiB block each
 * time left V8 about a gigabyte per backup to collect).
 *
 * On failure (of `source`, or of `dest`) `dest` is destroyed with the error, `source` is closed,
 * and the error is rethrown.
 */
export async function writeBlocks(source: AsyncIterable<Buffer>, dest: Writable, size: number, depth = 3): Promise<void> {
  const free: Buffer[] = [];
  let made = 0;
  const writes: Promise<void>[] = [];
  const take = async (): Promise<Buffer> => {
    const reused = free.pop();
    if (reused) return reused;
    if (made < depth) {
      made += 1;
      return Buffer.allocUnsafeSlow(size);
    }
    // Writes finish in order: wait for the oldest until one gave its block back.
    while (free.length === 0) {
      const oldest = writes.shift();
      if (!oldest) throw new Error(`all ${depth} blocks are in use and none is being written`);
      await oldest;
    }
    return free.pop() as Buffer;
  };
  const write = (block: Buffer, length: number) => {
    const written = new Promise<void>((resolve, reject) => {
      dest.write(length === block.length ? block : block.subarray(0, length), (err) => {
        if (err) reject(err);
        else {
          free.push(block);
          resolve();
        }
      });
    });
    written.catch(() => undefined); // awaited in order below; a failure is seen there or via `dest`
    writes.push(written);
  };
  const closed = new Promise<never>((_, reject) => {
    dest.once('close', () => reject(dest.errored ?? new Error('the stream was closed before all blocks were written')));
  });
  closed.catch(() => undefined);
  try {
    let block = await Promise.race([take(), closed]);
    let fill = 0;
    for await (const chunk of source) {
      let offset = 0;
      while (offset < chunk.length) {
        if (fill === size) {
          write(block, fill);
          block = await Promise.race([take(), closed]);
          fill = 0;
        }
        const n = chunk.copy(block, fill, offset);
        fill += n;
        offset += n;
      }
    }
    if (fill > 0) write(block, fill);
    while (writes.length > 0) await Promise.race([writes.shift(), closed]);
    dest.end();
  } catch (err) {
    if (!dest.destroyed) dest.destroy(err as Error);
    throw err;
  }
}
