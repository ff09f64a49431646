import { createHash } from 'node:crypto';
import { SnapshotError } from '../errors/errors.ts';
import { TRAILER_BYTES } from './source.ts';

export interface SnapshotDigest {
  /** sha256 of the whole file, trailer included. */
  sha256: string;
  /** sha256 of the database, equal to the trailer. */
  dbSha256: string;
}

/**
 * Checks an etcd snapshot's sha256 trailer as its bytes pass: the first `dbSize` bytes are the
 * database, the last 32 must be their sha256. `etcdctl snapshot status` does not check this.
 */
export class SnapshotChecker {
  readonly #dbSize: number;
  readonly #db = createHash('sha256');
  readonly #file = createHash('sha256');
  readonly #trailer = Buffer.alloc(TRAILER_BYTES);
  #seen = 0;

  constructor(dbSize: number) {
    this.#dbSize = dbSize;
  }

  get bytes(): number {
    return this.#seen;
  }

  update(chunk: Buffer): void {
    this.#file.update(chunk);
    const end = this.#seen + chunk.length;
    if (end > this.#dbSize + TRAILER_BYTES) {
      throw new SnapshotError(`snapshot is longer than its ${this.#dbSize}-byte database and trailer`);
    }
    const dbPart = Math.max(0, Math.min(chunk.length, this.#dbSize - this.#seen));
    if (dbPart > 0) this.#db.update(chunk.subarray(0, dbPart));
    if (dbPart < chunk.length) chunk.copy(this.#trailer, this.#seen + dbPart - this.#dbSize, dbPart);
    this.#seen = end;
  }

  /** Throws SnapshotError when the snapshot is short or its trailer does not match. */
  finish(): SnapshotDigest {
    const expected = this.#dbSize + TRAILER_BYTES;
    if (this.#seen !== expected) {
      throw new SnapshotError(`snapshot is truncated: ${this.#seen} of ${expected} bytes`);
    }
    const dbSha256 = this.#db.digest('hex');
    const trailer = this.#trailer.toString('hex');
    if (trailer !== dbSha256) {
      throw new SnapshotError(`snapshot sha256 trailer mismatch: the trailer says ${trailer}, the database hashes to ${dbSha256}`);
    }
    return { sha256: this.#file.digest('hex'), dbSha256 };
  }
}

/** Passes the chunks through while checking them; the digest is set once the last chunk passed. */
export async function* checkedSnapshot(
  chunks: AsyncIterable<Buffer>,
  dbSize: number,
  onDigest: (digest: SnapshotDigest) => void,
): AsyncGenerator<Buffer> {
  const checker = new SnapshotChecker(dbSize);
  for await (const chunk of chunks) {
    checker.update(chunk);
    yield chunk;
  }
  onDigest(checker.finish());
}
