import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { SnapshotChecker } from '../../src/etcd/trailer.ts';
import { SnapshotError } from '../../src/errors/errors.ts';

function snapshotFile(db: Buffer): Buffer {
  return Buffer.concat([db, createHash('sha256').update(db).digest()]);
}

function feed(checker: SnapshotChecker, file: Buffer, chunk: number): void {
  for (let i = 0; i < file.length; i += chunk) checker.update(file.subarray(i, i + chunk));
}

test('a good snapshot passes whatever the chunking, and both digests are right', () => {
  const db = randomBytes(100_000);
  const file = snapshotFile(db);
  for (const chunk of [1, 7, 32, 4096, 32768, file.length]) {
    const checker = new SnapshotChecker(db.length);
    feed(checker, file, chunk);
    assert.deepEqual(checker.finish(), {
      sha256: createHash('sha256').update(file).digest('hex'),
      dbSha256: createHash('sha256').update(db).digest('hex'),
    });
  }
});

test('a flipped byte in the database or the trailer fails', () => {
  const db = randomBytes(5000);
  for (const at of [0, 2500, 4999, 5000, 5031]) {
    const file = snapshotFile(db);
    file[at] = (file[at] ?? 0) ^ 0x01;
    const checker = new SnapshotChecker(db.length);
    feed(checker, file, 1000);
    assert.throws(() => checker.finish(), (err: unknown) => err instanceof SnapshotError && /trailer mismatch/.test(err.message), `byte ${at}`);
  }
});

test('a short or long stream fails', () => {
  const db = randomBytes(5000);
  const file = snapshotFile(db);
  const short = new SnapshotChecker(db.length);
  feed(short, file.subarray(0, file.length - 1), 512);
  assert.throws(() => short.finish(), /truncated: 5031 of 5032/);
  const long = new SnapshotChecker(db.length);
  assert.throws(() => feed(long, Buffer.concat([file, Buffer.from('x')]), 512), SnapshotError);
});
