import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KIT_ROLES } from '../../src/archive/manifest.ts';
import { LifeboatMetrics } from '../../src/metrics/metrics.ts';

/** lifeboat_backup_kit_missing by role, from the facade's exposition text. */
async function kitMissing(m: LifeboatMetrics): Promise<Record<string, number>> {
  const text = await m.render();
  assert.match(text, /^# TYPE lifeboat_backup_kit_missing gauge$/m);
  const out: Record<string, number> = {};
  for (const [, role, value] of text.matchAll(/^lifeboat_backup_kit_missing\{role="([^"]+)",cluster="prod"\} (\S+)$/gm)) out[role!] = Number(value);
  return out;
}

const zero = Object.fromEntries(KIT_ROLES.map((r) => [r, 0]));
const identity = { cluster: 'prod', node: 'cp-1', version: '1.2.3' };

test('lifeboat_backup_kit_missing: every role starts at 0; the newest successful backup sets exactly the roles it lacks', async () => {
  const m = new LifeboatMetrics(identity);
  assert.deepEqual(await kitMissing(m), zero);
  assert.deepEqual(Object.keys(zero), ['pki', 'static-pod-manifest', 'cluster-configuration', 'encryption-provider-config', 'extra']);

  m.backupFinished({ result: 'success', durationSeconds: 1, kitMissing: ['cluster-configuration'], now: new Date(10_000) });
  assert.deepEqual(await kitMissing(m), { ...zero, 'cluster-configuration': 1 });
  // A failure commits nothing: the newest successful backup is still the one that lacks it.
  m.backupFinished({ result: 'failure', durationSeconds: 1, reason: 'ETCD_UNAVAILABLE', now: new Date(20_000) });
  assert.deepEqual(await kitMissing(m), { ...zero, 'cluster-configuration': 1 });
  m.backupFinished({ result: 'success', durationSeconds: 1, kitMissing: ['extra'], now: new Date(30_000) });
  assert.deepEqual(await kitMissing(m), { ...zero, extra: 1 });
  m.backupFinished({ result: 'success', durationSeconds: 1, now: new Date(40_000) });
  assert.deepEqual(await kitMissing(m), zero);
});

test('seeding from the catalogue sets the kit gauge only when the catalogue\'s newest backup is newer than what the process knows', async () => {
  const m = new LifeboatMetrics(identity);
  m.seedFromCatalogue({ lastBackupAt: new Date(10_000), lastBackupSizeBytes: 5, lastBackupKitMissing: ['cluster-configuration'] });
  assert.deepEqual(await kitMissing(m), { ...zero, 'cluster-configuration': 1 });
  m.backupFinished({ result: 'success', durationSeconds: 1, kitMissing: [], now: new Date(20_000) });
  assert.deepEqual(await kitMissing(m), zero);
  // An older backup from the catalogue does not overwrite what the newer one said.
  m.seedFromCatalogue({ lastBackupAt: new Date(15_000), lastBackupSizeBytes: 5, lastBackupKitMissing: ['cluster-configuration'] });
  assert.deepEqual(await kitMissing(m), zero);
  m.seedFromCatalogue({ lastBackupAt: new Date(25_000), lastBackupSizeBytes: 5, lastBackupKitMissing: ['cluster-configuration', 'extra'] });
  assert.deepEqual(await kitMissing(m), { ...zero, 'cluster-configuration': 1, extra: 1 });
});
