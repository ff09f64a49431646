import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Value } from '@sinclair/typebox/value';
import { readSegmentEvents, zstdFrames } from '../../src/changes/commit.ts';
import { ChangeEventSchema, EventParser, eventLine, isChangeEvent, parseEvents } from '../../src/changes/format.ts';
import type { SegmentManifest } from '../../src/changes/manifest.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { ArchiveError } from '../../src/errors/errors.ts';
import { MemoryStore } from '../support/memory-store.ts';

const T0 = new Date('2026-11-24T03:30:00.123Z');
const lines = [
  eventLine({ revision: '7', op: 'put', key: Buffer.from([0, 1, 0xff]), value: Buffer.from('x'.repeat(300)), lease: '12345' }, T0),
  eventLine({ revision: '8', op: 'put', key: Buffer.from('/registry/pods/default/a'), value: Buffer.alloc(0) }, T0),
  eventLine({ revision: '8', op: 'delete', key: Buffer.from('/registry/pods/default/b') }, T0),
].join('');

test('the compiled check of an event line agrees with the TypeBox reference (Value.Check) on good lines and on each kind of bad one', () => {
  const good = JSON.parse(lines.split('\n')[0]!) as Record<string, unknown>;
  const docs: unknown[] = [good, { ...good, value: undefined }, { ...good, lease: undefined }, { rev: '9', time: T0.toISOString(), op: 'delete', key: 'L2E=' }, null, [], 'text', 7, {}];
  const bad: Record<string, unknown[]> = {
    rev: ['', '12a', '1'.repeat(21), 12, undefined],
    time: ['2026-11-24 03:30:00Z', '2026-11-24T03:30:00.1234567890Z', '', undefined],
    op: ['PUT', 'get', undefined],
    key: ['not base64!', 'L2E===', 5, undefined],
    value: ['a-b', 'L2E===', 3],
    lease: ['x', '-1', 5],
    extra: ['field'],
  };
  for (const [field, values] of Object.entries(bad)) for (const v of values) docs.push({ ...good, [field]: v });
  for (const doc of docs) assert.equal(isChangeEvent.Check(doc), Value.Check(ChangeEventSchema, doc), JSON.stringify(doc));
  assert.ok(docs.filter((d) => Value.Check(ChangeEventSchema, d)).length >= 4, 'good lines are among them');
});

test('a segment parsed a piece at a time, cut anywhere, gives the events and the errors of the whole text', () => {
  const whole = parseEvents(lines, 'seg');
  assert.equal(whole.length, 3);
  const bad = `${lines}{"rev":"9","op":"put"}\n`;
  const badError = (() => {
    try {
      parseEvents(bad, 'seg');
    } catch (err) {
      return err as Error;
    }
    assert.fail('the bad line was accepted');
  })();
  assert.ok(badError instanceof ArchiveError && /line 4 is not a change event: \/time /.test(badError.message), badError.message);
  for (const size of [1, 2, 3, 7, 64, 300, lines.length]) {
    const pieces = (text: string) => Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));
    const parser = new EventParser('seg');
    for (const p of pieces(lines)) parser.push(p);
    assert.deepEqual(parser.end(), whole, `pieces of ${size}`);
    const failing = new EventParser('seg');
    assert.throws(() => {
      for (const p of pieces(bad)) failing.push(p);
      failing.end();
    }, (err: unknown) => err instanceof ArchiveError && err.message === badError.message);
  }
  // A last line without its newline is a line; an empty line is not.
  assert.equal(parseEvents(lines.slice(0, -1), 'seg').length, 3);
  assert.throws(() => parseEvents(lines.replace('\n', '\n\n'), 'seg'), /line 2 is not JSON/);
  assert.deepEqual(parseEvents('', 'seg'), []);
});

const zstd = (data: Buffer, checksum = false) => zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_checksumFlag]: checksum ? 1 : 0 } });

test('zstd data is cut into its frames: compressed, raw and RLE blocks, checksums, empty frames; skippable frames are left out; a cut or foreign one is an ArchiveError', () => {
  const parts = [Buffer.from('x'.repeat(200_000)), randomBytes(150_000), Buffer.from(lines.repeat(50)), Buffer.alloc(0)];
  const frames = [zstd(parts[0]!), zstd(parts[1]!, true), zstd(parts[2]!), zstd(parts[3]!)];
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]), Buffer.from('abc')]);
  const data = Buffer.concat([frames[0]!, skippable, ...frames.slice(1)]);
  const found = zstdFrames(data, 'seg');
  assert.deepEqual(found, frames);
  assert.deepEqual(Buffer.concat(found.map((f) => zlib.zstdDecompressSync(f))), Buffer.concat(parts));
  assert.throws(() => zstdFrames(data.subarray(0, data.length - 1), 'seg'), (err: unknown) => err instanceof ArchiveError && /seg does not decompress: its zstd frame at byte \d+ is cut short/.test(err.message));
  assert.throws(() => zstdFrames(Buffer.from(lines), 'seg'), /seg does not decompress: no zstd frame at byte 0/);
});

test('a segment whose data is several zstd frames gives the events of them all', async () => {
  const key = await generateIdentity();
  const store = new MemoryStore();
  const text = Array.from({ length: 300 }, (_, i) => eventLine({ revision: String(10 + i), op: 'put', key: Buffer.from(`/registry/pods/a/p-${i}`), value: Buffer.from(`v${i}`.repeat(50)) }, T0).toString()).join('');
  const half = text.indexOf('\n', text.length / 2) + 1;
  // Two frames and a trailing empty one in one age stream, as zlib's streaming compressor may write them.
  const plain = Buffer.concat([zstd(Buffer.from(text.slice(0, half))), zstd(Buffer.from(text.slice(half))), zstd(Buffer.alloc(0))]);
  const stored: Buffer[] = [];
  await pipeline(Readable.from([plain]), createEncryptStream([key.recipient]), async (source: AsyncIterable<Buffer>) => {
    for await (const c of source) stored.push(c);
  });
  const object = Buffer.concat(stored);
  await store.put('c/changes/s/segment.jsonl.zst.age', Readable.from([object]));
  const manifest = { segmentId: 's', events: 300, firstRevision: '10', lastRevision: '309', data: { key: 'c/changes/s/segment.jsonl.zst.age', size: object.length, sha256: createHash('sha256').update(object).digest('hex') } } as unknown as SegmentManifest;
  const events = await readSegmentEvents({ store, decrypt: createDecryptStream }, manifest, [key.identity]);
  assert.deepEqual(events, parseEvents(text, 'x'));
});
