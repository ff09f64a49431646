import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newestReachable } from '../../src/changes/drill-replay.ts';
import { SEGMENT_FORMAT, SEGMENT_FORMAT_VERSION, type SegmentManifest } from '../../src/changes/manifest.ts';

/** A segment manifest of revisions first..last, with a gap before it when given. */
function segment(first: number, last: number, gap?: [number, number]): SegmentManifest {
  return {
    format: SEGMENT_FORMAT,
    version: SEGMENT_FORMAT_VERSION,
    segmentId: `s-${first}`,
    cluster: 'it',
    node: 'n',
    createdAt: '2026-12-06T10:00:00Z',
    firstRevision: String(first),
    lastRevision: String(last),
    firstTime: '2026-12-06T10:00:00Z',
    lastTime: '2026-12-06T10:00:01Z',
    events: last - first + 1,
    data: { key: 'k', size: 1, sha256: '0'.repeat(64), plainBytes: 1, compression: { algorithm: 'zstd', level: 3 }, encryption: { format: 'age', recipients: [] } },
    ...(gap ? { gap: { from: String(gap[0]), to: String(gap[1]) } } : {}),
  };
}

test('a drill replays from the backup to the end of the last segment before any gap', () => {
  const log = [segment(90, 99), segment(100, 120), segment(121, 150), segment(171, 180, [151, 170]), segment(181, 200)];
  assert.equal(newestReachable('95', log), '150', 'a segment that straddles the backup counts; the gap stops it');
  assert.equal(newestReachable('175', log), '200', 'a backup inside the segment after the gap reaches the end');
  assert.equal(newestReachable('170', log), '200', 'the gap\'s own backup, taken at its end');
});

test('nothing to replay: no segment after the backup, or a gap right after it', () => {
  const log = [segment(100, 120), segment(141, 150, [121, 140])];
  assert.deepEqual(newestReachable('150', log), { skipped: "the change log holds no revision after this backup's (150)" });
  assert.deepEqual(newestReachable('120', log), { skipped: 'revisions 121-140 right after this backup are not in the change log (etcd compacted them before they were captured)' });
  assert.deepEqual(newestReachable('130', log), { skipped: 'revisions 121-140 right after this backup are not in the change log (etcd compacted them before they were captured)' });
  assert.deepEqual(newestReachable('5', []), { skipped: "the change log holds no revision after this backup's (5)" });
});
