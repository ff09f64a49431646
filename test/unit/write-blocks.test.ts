import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { writeBlocks } from '../../src/archive/writer.ts';

/** A consumer that copies each write after a delay, as zlib does, and remembers what it got. */
class SlowCopy extends Writable {
  readonly blocks: Buffer[] = [];
  readonly arrays = new Set<ArrayBufferLike>();
  readonly fail: ((n: number) => Error | undefined) | undefined;

  constructor(fail?: (n: number) => Error | undefined) {
    super();
    this.fail = fail;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.arrays.add(chunk.buffer);
    const err = this.fail?.(this.blocks.length);
    setTimeout(() => {
      this.blocks.push(Buffer.from(chunk));
      callback(err);
    }, 1 + Math.floor(Math.random() * 3));
  }
}

async function* chunked(data: Buffer, size: () => number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length;) {
    const n = Math.max(1, size());
    yield data.subarray(i, i + n);
    i += n;
  }
}

test('blocks of exactly `size` bytes (the last shorter), the bytes unchanged, at most `depth` buffers reused', async () => {
  for (const [length, depth] of [[0, 3], [1, 3], [4096, 3], [4097, 2], [50_000, 3], [100_000, 1]] as const) {
    const data = randomBytes(length);
    const dest = new SlowCopy();
    const finished = new Promise((resolve) => dest.on('finish', resolve));
    await writeBlocks(chunked(data, () => Math.floor(Math.random() * 3000)), dest, 4096, depth);
    await finished;
    assert.ok(Buffer.concat(dest.blocks).equals(data), `${length} bytes`);
    assert.deepEqual(dest.blocks.slice(0, -1).map((b) => b.length), dest.blocks.slice(0, -1).map(() => 4096));
    assert.ok(dest.arrays.size <= depth, `${length}: ${dest.arrays.size} buffers for depth ${depth}`);
  }
});

test('into zstd: the compressed stream decompresses to the input', async () => {
  const data = Buffer.concat(Array.from({ length: 40 }, (_, i) => Buffer.alloc(50_000, i % 7)));
  const zstd = zlib.createZstdCompress();
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      out.push(chunk);
      cb();
    },
  });
  await Promise.all([writeBlocks(chunked(data, () => 32 * 1024), zstd, 256 * 1024), pipeline(zstd, sink)]);
  assert.ok(zlib.zstdDecompressSync(Buffer.concat(out)).equals(data));
});

test('a failing source destroys the destination with its error', async () => {
  async function* failing(): AsyncGenerator<Buffer> {
    yield randomBytes(10_000);
    throw new Error('snapshot broke');
  }
  const dest = new SlowCopy();
  dest.on('error', () => undefined);
  await assert.rejects(writeBlocks(failing(), dest, 4096), /snapshot broke/);
  assert.ok(dest.destroyed);
  assert.match(String(dest.errored), /snapshot broke/);
});

test('a failing destination stops reading and closes the source', async () => {
  let closed = false;
  let read = 0;
  async function* endless(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        read += 1;
        yield randomBytes(1000);
      }
    } finally {
      closed = true;
    }
  }
  const dest = new SlowCopy((n) => (n === 2 ? new Error('disk full') : undefined));
  dest.on('error', () => undefined);
  await assert.rejects(writeBlocks(endless(), dest, 4096), /disk full/);
  assert.ok(closed, 'the source was closed');
  assert.ok(read < 100, `${read} chunks read`);
});
