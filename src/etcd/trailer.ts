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
  /** One pass over the bytes: the database's digest is a copy of this state at dbSize. */
  readonly #file = createHash('sha256');
  #dbSha256: string | undefined;
  readonly #trailer = Buffer.alloc(TRAILER_BYTES);
  #seen = 0;
  /** Set by finish() once the trailer checked out. */
  digest: SnapshotDigest | undefined;

  constructor(dbSize: number) {
    this.#dbSize = dbSize;
    if (dbSize === 0) this.#dbSha256 = this.#file.copy().digest('hex');
  }

  get bytes(): number {
    return this.#seen;
  }

  update(chunk: Buffer): void {
    const end = this.#seen + chunk.length;
    if (end > this.#dbSize + TRAILER_BYTES) {
      throw new SnapshotError(`snapshot is longer than its ${this.#dbSize}-byte database and trailer`);
    }
    const dbPart = Math.max(0, Math.min(chunk.length, this.#dbSize - this.#seen));
    if (dbPart > 0) {
      this.#file.update(chunk.subarray(0, dbPart));
      if (this.#seen + dbPart === this.#dbSize) this.#dbSha256 = this.#file.copy().digest('hex');
    }
    if (dbPart < chunk.length) {
      const rest = chunk.subarray(dbPart);
      this.#file.update(rest);
      rest.copy(this.#trailer, this.#seen + dbPart - this.#dbSize);
    }
    this.#seen = end;
  }

  /** Throws SnapshotError when the snapshot is short or its trailer does not match. */
  finish(): SnapshotDigest {
    const expected = this.#dbSize + TRAILER_BYTES;
    if (this.#seen !== expected || this.#dbSha256 === undefined) {
      throw new SnapshotError(`snapshot is truncated: ${this.#seen} of ${expected} bytes`);
    }
    const trailer = this.#trailer.toString('hex');
    if (trailer !== this.#dbSha256) {
      throw new SnapshotError(`snapshot sha256 trailer mismatch: the trailer says ${trailer}, the database hashes to ${this.#dbSha256}`);
    }
    this.digest = { sha256: this.#file.digest('hex'), dbSha256: this.#dbSha256 };
    return this.digest;
  }
}

/**
 * Passes the chunks through the checker. The check runs before the last chunk is handed on
 * past the generator's end, so a bad trailer fails the stream that carries the snapshot.
 */
export async function* checkedSnapshot(chunks: AsyncIterable<Buffer>, checker: SnapshotChecker): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    checker.update(chunk);
    yield chunk;
  }
  checker.finish();
}
