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
 * Joins small chunks into blocks of at least `size` bytes (the last may be smaller). zlib
 * streams pay a thread-pool round trip per write: fed etcd's 32 KiB messages, zstd runs at
 * about half the speed it reaches on 1 MiB writes. Holds at most one block.
 */
export async function* coalesce(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of source) {
    parts.push(chunk);
    length += chunk.length;
    if (length >= size) {
      yield parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, length);
      parts = [];
      length = 0;
    }
  }
  if (length > 0) yield Buffer.concat(parts, length);
}
