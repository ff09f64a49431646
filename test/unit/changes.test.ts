import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { commitSegment, readSegmentEvents, type SegmentBatch } from '../../src/changes/commit.ts';
import { eventLine, keyOf, parseEvents, type RawEvent } from '../../src/changes/format.ts';
import { checkChain, readTrustedSegment, segmentIds, type TrustedSegment } from '../../src/changes/manifest.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { ArchiveError, IntegrityError, SignatureError } from '../../src/errors/errors.ts';
import { segmentDataKey, segmentManifestKey } from '../../src/store/layout.ts';
import { quietLog } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const key = await generateIdentity();
const T0 = new Date('2026-11-24T03:30:00.000Z');

function batch(events: RawEvent[], at = T0): SegmentBatch {
  const lines = events.map((e, i) => eventLine(e, new Date(at.getTime() + i)));
  return { lines, plainBytes: lines.reduce((n, l) => n + l.length, 0), events: events.length, firstRevision: events[0]!.revision, lastRevision: events.at(-1)!.revision, firstTime: at, lastTime: new Date(at.getTime() + events.length - 1) };
}

const put = (revision: string, k: string, v: string, lease?: string): RawEvent => ({ revision, op: 'put', key: Buffer.from(k), value: Buffer.from(v), ...(lease ? { lease } : {}) });
const del = (revision: string, k: string): RawEvent => ({ revision, op: 'delete', key: Buffer.from(k) });

test('an event line round-trips: binary keys and values, empty values, leases, deletes', () => {
  const binary = Buffer.from([0, 1, 0xff, 0x0a]);
  const text = [eventLine({ revision: '7', op: 'put', key: binary, value: binary, lease: '12345' }, T0), eventLine(put('8', '/a', ''), T0), eventLine({ ...put('9', '/b', 'x'), lease: '0' }, T0), eventLine(del('9', '/c'), T0)].join('');
  const events = parseEvents(text, 'test');
  assert.deepEqual(Buffer.from(events[0]!.key, 'base64'), binary);
  assert.deepEqual(Buffer.from(events[0]!.value!, 'base64'), binary);
  assert.equal(events[0]!.lease, '12345');
  assert.equal(events[1]!.value, '');
  assert.equal(events[2]!.lease, undefined, 'lease 0 is no lease');
  assert.deepEqual(events[3], { rev: '9', time: T0.toISOString(), op: 'delete', key: Buffer.from('/c').toString('base64') });
  assert.equal(keyOf(events[3]!), '/c');
});

test('segment lines out of order, or not events, are refused with the line number', () => {
  const lines = [eventLine(put('9', '/a', 'x'), T0), eventLine(put('8', '/b', 'y'), T0)].join('');
  assert.throws(() => parseEvents(lines, 'seg'), (err: unknown) => err instanceof ArchiveError && /line 2 .*out of order/.test(err.message));
  assert.throws(() => parseEvents('{"rev":"1","op":"put"}\n', 'seg'), (err: unknown) => err instanceof ArchiveError && /line 1 is not a change event/.test(err.message));
  assert.throws(() => parseEvents('nope\n', 'seg'), /line 1 is not JSON/);
});

async function commitChain(store: MemoryStore): Promise<TrustedSegment[]> {
  const deps = { store, encrypt: createEncryptStream, signer: TEST_SIGNER, now: () => T0, log: quietLog };
  const settings = { cluster: 'c', node: 'n', recipients: [key.recipient], level: 3 };
  const a = await commitSegment(deps, settings, batch([put('10', '/a', '1'), put('11', '/b', '2'), del('11', '/c')]), {});
  const b = await commitSegment(deps, settings, batch([put('12', '/a', '3')]), { previous: a });
  // Revisions 13-19 were compacted away before they were captured.
  const c = await commitSegment(deps, settings, batch([del('20', '/a')]), { previous: b, gap: { from: '13', to: '19' } });
  return [a, b, c];
}

test('committed segments read back through the signature check, decrypt to their events, and chain', async () => {
  const store = new MemoryStore();
  const written = await commitChain(store);
  const ids = await segmentIds(store, 'c');
  assert.deepEqual(ids, written.map((s) => s.manifest.segmentId));
  const read = await Promise.all(ids.map((id) => readTrustedSegment(store, 'c', TEST_TRUST, id)));
  assert.deepEqual(read.map((r) => r.sha256), written.map((w) => w.sha256));
  assert.deepEqual(checkChain(read), { gaps: [{ from: '13', to: '19', before: ids[2] }] });
  const events = await readSegmentEvents({ store, decrypt: createDecryptStream }, read[0]!.manifest, [key.identity]);
  assert.deepEqual(events.map((e) => [e.rev, e.op, keyOf(e)]), [['10', 'put', '/a'], ['11', 'put', '/b'], ['11', 'delete', '/c']]);
  assert.equal(read[0]!.manifest.events, 3);
});

test('the chain shows a deleted segment, a replaced manifest, and an unrecorded gap', async () => {
  const store = new MemoryStore();
  const [a, b, c] = await commitChain(store);
  assert.throws(() => checkChain([a!, c!]), (err: unknown) => err instanceof IntegrityError && /follows .* but the segment before it in the store is/.test(err.message));
  assert.throws(() => checkChain([a!, { ...b!, sha256: 'f'.repeat(64) }, c!]), (err: unknown) => err instanceof IntegrityError && /a manifest was replaced/.test(err.message));
  const noGap = { ...c!, manifest: { ...c!.manifest } };
  delete noGap.manifest.gap;
  assert.throws(() => checkChain([a!, b!, noGap]), (err: unknown) => err instanceof IntegrityError && /starts at revision 20/.test(err.message));
  // The oldest segment may name one that retention deleted.
  assert.deepEqual(checkChain([b!, c!]).gaps.length, 1);
});

test('a segment manifest is refused unsigned, moved, or with changed data', async () => {
  const store = new MemoryStore();
  const [a, b] = await commitChain(store);
  const idA = a!.manifest.segmentId;
  const idB = b!.manifest.segmentId;
  // Manifest of B put where A is: signature still matches A's, so put B's signature too: location check refuses.
  const bytesB = Buffer.from(JSON.stringify(b!.manifest, null, 2) + '\n');
  await store.put(segmentManifestKey('c', idA), Readable.from([bytesB]));
  await store.put(`${segmentManifestKey('c', idA)}.sig`, Readable.from([TEST_SIGNER.sign(bytesB)]));
  await assert.rejects(readTrustedSegment(store, 'c', TEST_TRUST, idA), ArchiveError);
  await store.delete(`${segmentManifestKey('c', idA)}.sig`);
  await assert.rejects(readTrustedSegment(store, 'c', TEST_TRUST, idA), SignatureError);
  // Data swapped for other bytes: refused before decryption.
  await store.put(segmentDataKey('c', idB), Readable.from([Buffer.from('age-encryption.org/v1\n')]));
  await assert.rejects(readSegmentEvents({ store, decrypt: createDecryptStream }, b!.manifest, [key.identity]), IntegrityError);
});
