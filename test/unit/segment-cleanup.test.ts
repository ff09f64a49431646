import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { commitSegment } from '../../src/changes/commit.ts';
import { eventLine } from '../../src/changes/format.ts';
import { segmentIds } from '../../src/changes/manifest.ts';
import { createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { cleanupSegments } from '../../src/retention/segments.ts';
import { formatSegmentId, segmentDataKey, segmentSignatureKey } from '../../src/store/layout.ts';
import { quietLog } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNER } from '../support/signing.ts';

const key = await generateIdentity();
const HOUR = 3_600_000;
const T0 = Date.parse('2026-11-24T03:00:00.000Z');

test('cleanup removes what uncommitted segments left once they are old enough, never a committed segment nor one being committed', async () => {
  let now = new Date(T0);
  const store = new MemoryStore({ now: () => now });
  const line = eventLine({ revision: '11', op: 'put', key: Buffer.from('/a'), value: Buffer.from('1') }, now);
  const committed = await commitSegment(
    { store, encrypt: createEncryptStream, signer: TEST_SIGNER, now: () => now, log: quietLog },
    { cluster: 'c', node: 'n', recipients: [key.recipient], level: 3 },
    { lines: [line], plainBytes: line.length, events: 1, firstRevision: '11', lastRevision: '11', firstTime: now, lastTime: now },
    {},
  );
  // A leader killed between the data and the manifest of 12-20, and one with only the data of 21-30.
  const killed = formatSegmentId('12', '20');
  await store.put(segmentDataKey('c', killed), Readable.from([Buffer.from('data')]));
  await store.put(segmentSignatureKey('c', killed), Readable.from([Buffer.from('sig')]));
  now = new Date(T0 + 2 * HOUR);
  const young = formatSegmentId('21', '30');
  await store.put(segmentDataKey('c', young), Readable.from([Buffer.from('data')]));
  store.lock(segmentDataKey('c', killed), { retainUntil: new Date(T0 + 24 * HOUR) });

  const first = await cleanupSegments(store, 'c', new Date(now.getTime() - HOUR));
  assert.deepEqual(first, { orphans: [segmentSignatureKey('c', killed)], locked: [segmentDataKey('c', killed)], incomplete: 0 });
  store.lock(segmentDataKey('c', killed), {});
  now = new Date(T0 + 4 * HOUR);
  const second = await cleanupSegments(store, 'c', new Date(now.getTime() - HOUR));
  assert.deepEqual(second, { orphans: [segmentDataKey('c', killed), segmentDataKey('c', young)], incomplete: 0 });
  assert.deepEqual(await segmentIds(store, 'c'), [committed.manifest.segmentId], 'the committed segment stays');
  assert.deepEqual([...store.objects.keys()].filter((k) => k.includes('/changes/')).length, 3, 'with its data, signature and manifest');
});
