import { test } from 'node:test';
import assert from 'node:assert/strict';
import { archiveKey, assertBackupId, changesPrefix, committedSegmentIds, formatBackupId, formatSegmentId, manifestKey, parseBackupId, parseKey, parseSegmentId, parseSegmentKey, segmentDataKey, segmentManifestKey, segmentSignatureKey, signatureKey, verificationKey } from '../../src/store/layout.ts';
import { UnsafePathError } from '../../src/errors/errors.ts';

test('backup ids sort by time and round-trip', () => {
  const a = formatBackupId(new Date('2026-11-24T03:30:00.123Z'), '12345');
  const b = formatBackupId(new Date('2026-11-24T03:30:01.000Z'), '99');
  const c = formatBackupId(new Date('2027-01-01T00:00:00.000Z'), '1');
  assert.equal(a, '20261124T033000.123Z-r12345');
  assert.deepEqual([c, a, b].sort(), [a, b, c]);
  assert.deepEqual(parseBackupId(a), { createdAt: new Date('2026-11-24T03:30:00.123Z'), revision: '12345' });
});

test('keys round-trip through parseKey for every compression', () => {
  const id = formatBackupId(new Date('2026-11-24T03:30:00.000Z'), '7');
  for (const compression of ['zstd', 'gzip', 'none'] as const) {
    const key = archiveKey('prod-eu', id, compression);
    assert.deepEqual(parseKey(key), { cluster: 'prod-eu', id, kind: 'archive', compression });
  }
  assert.equal(archiveKey('prod-eu', id, 'zstd'), `prod-eu/backups/${id}/archive.tar.zst.age`);
  assert.equal(manifestKey('prod-eu', id), `prod-eu/backups/${id}/manifest.json`);
  assert.deepEqual(parseKey(manifestKey('prod-eu', id)), { cluster: 'prod-eu', id, kind: 'manifest' });
  assert.equal(signatureKey('prod-eu', id), `prod-eu/backups/${id}/manifest.json.sig`);
  assert.deepEqual(parseKey(signatureKey('prod-eu', id)), { cluster: 'prod-eu', id, kind: 'signature' });
  assert.equal(verificationKey('prod-eu', id), `prod-eu/backups/${id}/verification.json`);
  assert.deepEqual(parseKey(verificationKey('prod-eu', id)), { cluster: 'prod-eu', id, kind: 'verification' });
});

test('foreign and hostile keys and ids are refused', () => {
  const id = formatBackupId(new Date('2026-11-24T03:30:00.000Z'), '7');
  for (const key of [
    `prod/backups/${id}/archive.tar.bz2.age`,
    `prod/backups/${id}/manifest.json.tmp-1`,
    `prod/backups/${id}/verification.json.tmp-1`,
    `prod/backups/${id}/verification.jso`,
    `prod/other/${id}/manifest.json`,
    `Prod/backups/${id}/manifest.json`,
    `prod/backups/../manifest.json`,
    `prod/backups/${id}/x/manifest.json`,
    `prod/backups/20261324T033000.000Z-r1/manifest.json`,
  ]) {
    assert.equal(parseKey(key), undefined, key);
  }
  for (const bad of ['../etc', 'latest', '20261124T033000Z-r1', `${id}/..`, '']) {
    assert.throws(() => assertBackupId(bad), UnsafePathError, bad);
  }
  assert.throws(() => archiveKey('../x', id, 'zstd'), UnsafePathError);
  assert.throws(() => verificationKey('prod', '../x'), UnsafePathError);
});

test('change segment keys round-trip and sort by revision', () => {
  const id = formatSegmentId('1042', '1187');
  assert.equal(id, '00000000000000001042-00000000000000001187');
  assert.deepEqual(parseSegmentId(id), { firstRevision: '1042', lastRevision: '1187' });
  assert.equal(segmentDataKey('prod-eu', id), `prod-eu/changes/${id}/segment.jsonl.zst.age`);
  assert.deepEqual(parseSegmentKey(segmentDataKey('prod-eu', id)), { cluster: 'prod-eu', segmentId: id, kind: 'data' });
  assert.deepEqual(parseSegmentKey(segmentManifestKey('prod-eu', id)), { cluster: 'prod-eu', segmentId: id, kind: 'manifest' });
  assert.deepEqual(parseSegmentKey(segmentSignatureKey('prod-eu', id)), { cluster: 'prod-eu', segmentId: id, kind: 'signature' });
  assert.equal(changesPrefix('prod-eu'), 'prod-eu/changes/');
  // Numerically, 9 < 10 < 100: padding makes the ids sort the same way.
  const ids = [formatSegmentId('100', '120'), formatSegmentId('9', '9'), formatSegmentId('10', '99')];
  assert.deepEqual(committedSegmentIds(ids.map((i) => ({ key: segmentManifestKey('p', i) }))), [formatSegmentId('9', '9'), formatSegmentId('10', '99'), formatSegmentId('100', '120')]);
  // Change keys are not backup keys, and backup keys are not change keys: cleanup of one never touches the other.
  assert.equal(parseKey(segmentManifestKey('prod-eu', id)), undefined);
  assert.equal(parseSegmentKey(manifestKey('prod-eu', formatBackupId(new Date('2026-11-24T03:30:00.000Z'), '7'))), undefined);
});

test('foreign and hostile segment keys and ids are refused', () => {
  const id = formatSegmentId('5', '6');
  for (const key of [`p/changes/${id}/segment.jsonl.age`, `p/changes/5-6/manifest.json`, `p/changes/${id}/x/manifest.json`, `p/backups/${id}/manifest.json`, `p/changes/00000000000000000009-00000000000000000008/manifest.json`]) {
    assert.equal(parseSegmentKey(key), undefined, key);
  }
  assert.throws(() => formatSegmentId('9', '8'), UnsafePathError);
  assert.throws(() => formatSegmentId('-1', '8'), UnsafePathError);
  assert.throws(() => segmentDataKey('p', '../x'), UnsafePathError);
  assert.throws(() => changesPrefix('../x'), UnsafePathError);
});
