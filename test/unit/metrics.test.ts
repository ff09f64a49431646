import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register as globalRegistry } from 'prom-client';
import { resolveConfig } from '../../src/config/load.ts';
import { daemonCatalog, localStoreWarning, seedMetrics } from '../../src/daemon/daemon.ts';
import { createLogger } from '../../src/log/logger.ts';
import { DROPPED_DEFAULT_METRICS, FAILURE_REASONS, LifeboatMetrics } from '../../src/metrics/metrics.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { passedRecord } from '../../src/verify/record.ts';
import { putBackup } from '../support/backups.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_TRUST } from '../support/signing.ts';
import { signatureKey } from '../../src/store/layout.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    assert.ok(m, `unparseable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(metrics: LifeboatMetrics): Promise<Sample[]> {
  return samples(await metrics.render());
}

/** The one sample of `name` whose labels include `labels`; fails if there is not exactly one. */
function one(all: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0]!.value;
}

const identity = { cluster: 'prod', node: 'cp-1', version: '1.2.3' };

test('a fresh facade exports every label combination at zero, and build info', async () => {
  const all = await scrape(new LifeboatMetrics(identity));
  const lifeboat = all.filter((s) => s.name.startsWith('lifeboat_'));
  assert.ok(lifeboat.length > 0);
  for (const s of all) assert.equal(s.labels.cluster, 'prod', `${s.name} lacks the cluster label`);

  for (const result of ['success', 'failure']) {
    assert.equal(one(all, 'lifeboat_backup_total', { result }), 0);
    assert.equal(one(all, 'lifeboat_backup_duration_seconds_count', { result }), 0);
    for (const level of ['ciphertext', 'deep', 'drill']) assert.equal(one(all, 'lifeboat_verify_total', { result, level }), 0);
  }
  const reasons = all.filter((s) => s.name === 'lifeboat_backup_failures_total');
  assert.deepEqual(reasons.map((s) => s.labels.reason).sort(), [...FAILURE_REASONS].sort());
  assert.ok(reasons.some((s) => s.labels.reason === 'STORE_FAILED') && reasons.some((s) => s.labels.reason === 'unknown'));
  assert.ok(reasons.every((s) => s.value === 0));

  const storeOps = all.filter((s) => s.name === 'lifeboat_store_operations_total');
  for (const store of ['primary', 'secondary']) {
    for (const op of ['put', 'get', 'stat', 'list', 'delete', 'cleanup']) {
      for (const result of ['success', 'failure']) assert.equal(one(storeOps, 'lifeboat_store_operations_total', { store, op, result }), 0);
    }
    assert.equal(one(storeOps, 'lifeboat_store_operations_total', { store, op: 'get', result: 'not_found' }), 0);
    assert.equal(one(storeOps, 'lifeboat_store_operations_total', { store, op: 'put', result: 'aborted' }), 0);
  }
  assert.equal(storeOps.length, 2 * (6 * 2 + 2));

  for (const level of ['ciphertext', 'deep', 'drill']) {
    assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level }), 0);
    assert.equal(one(all, 'lifeboat_verify_last_attempt_timestamp_seconds', { level }), 0);
  }
  for (const schedule of ['backup', 'drill']) assert.equal(one(all, 'lifeboat_schedule_expected_interval_seconds', { schedule }), 0);
  for (const name of [
    'lifeboat_backup_size_bytes',
    'lifeboat_backup_last_duration_seconds',
    'lifeboat_backup_last_success_timestamp_seconds',
    'lifeboat_backup_last_attempt_timestamp_seconds',
    'lifeboat_backup_last_start_timestamp_seconds',
    'lifeboat_backup_in_progress',
    'lifeboat_store_orphans_cleaned_total',
    'lifeboat_retention_deleted_total',
    'lifeboat_is_leader',
    'lifeboat_etcd_db_size_bytes',
  ]) {
    assert.equal(one(all, name), 0, name);
  }
  assert.equal(one(all, 'lifeboat_build_info', { version: '1.2.3', node: 'cp-1' }), 1);
});

test('a failed backup leaves the last attempt later than the last success; a success makes them equal', async () => {
  const m = new LifeboatMetrics(identity);
  m.backupStarted(new Date(1_000_000));
  let all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_in_progress'), 1);
  assert.equal(one(all, 'lifeboat_backup_last_start_timestamp_seconds'), 1000);

  m.backupFinished({ result: 'success', durationSeconds: 42.5, sizeBytes: 123_456, now: new Date(1_042_500) });
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_in_progress'), 0);
  assert.equal(one(all, 'lifeboat_backup_total', { result: 'success' }), 1);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), 1042.5);
  assert.equal(one(all, 'lifeboat_backup_last_attempt_timestamp_seconds'), 1042.5);
  assert.equal(one(all, 'lifeboat_backup_size_bytes'), 123_456);
  assert.equal(one(all, 'lifeboat_backup_last_duration_seconds'), 42.5);
  assert.equal(one(all, 'lifeboat_backup_duration_seconds_bucket', { result: 'success', le: '30' }), 0);
  assert.equal(one(all, 'lifeboat_backup_duration_seconds_bucket', { result: 'success', le: '60' }), 1);
  assert.equal(one(all, 'lifeboat_backup_duration_seconds_sum', { result: 'success' }), 42.5);

  m.backupStarted(new Date(2_000_000));
  m.backupFinished({ result: 'failure', durationSeconds: 3, sizeBytes: 99, reason: 'STORE_FAILED', now: new Date(2_003_000) });
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_total', { result: 'failure' }), 1);
  assert.equal(one(all, 'lifeboat_backup_failures_total', { reason: 'STORE_FAILED' }), 1);
  assert.equal(one(all, 'lifeboat_backup_last_attempt_timestamp_seconds'), 2003);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), 1042.5);
  assert.equal(one(all, 'lifeboat_backup_size_bytes'), 123_456, 'a failure does not change the last archive size');
  assert.equal(one(all, 'lifeboat_backup_last_duration_seconds'), 42.5);
  assert.equal(one(all, 'lifeboat_backup_duration_seconds_count', { result: 'failure' }), 1);

  m.backupFinished({ result: 'failure', durationSeconds: 1 });
  m.backupFinished({ result: 'failure', durationSeconds: 1, reason: 'NOT_A_CODE' as never });
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_failures_total', { reason: 'unknown' }), 2, 'no reason, or one that is not an ErrorCode, is unknown');
  assert.equal(all.filter((s) => s.name === 'lifeboat_backup_failures_total').length, FAILURE_REASONS.length);
});

test('verifications count by level and result, with per-level timestamps', async () => {
  const m = new LifeboatMetrics(identity);
  m.verifyFinished({ result: 'success', level: 'deep', now: new Date(5000) });
  m.verifyFinished({ result: 'failure', level: 'drill', now: new Date(6000) });
  m.verifyFinished({ result: 'success', level: 'drill', now: new Date(4000) });
  const all = await scrape(m);
  assert.equal(one(all, 'lifeboat_verify_total', { result: 'success', level: 'deep' }), 1);
  assert.equal(one(all, 'lifeboat_verify_total', { result: 'failure', level: 'drill' }), 1);
  assert.equal(one(all, 'lifeboat_verify_total', { result: 'success', level: 'ciphertext' }), 0);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'deep' }), 5);
  assert.equal(one(all, 'lifeboat_verify_last_attempt_timestamp_seconds', { level: 'deep' }), 5);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'drill' }), 4);
  assert.equal(one(all, 'lifeboat_verify_last_attempt_timestamp_seconds', { level: 'drill' }), 4);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'ciphertext' }), 0);
});

test('store operations, cleanup, retention, leadership, database size and schedule intervals', async () => {
  const m = new LifeboatMetrics(identity);
  m.storeOperation('primary', 'put', 'success');
  m.storeOperation('primary', 'put', 'success');
  m.storeOperation('secondary', 'list', 'failure');
  m.orphansCleaned(3);
  m.orphansCleaned(0);
  m.retentionDeleted(2);
  m.setLeader(true);
  m.setEtcdDbSize(1 << 30);
  m.setExpectedInterval(3600);
  m.setExpectedInterval(604800, 'drill');
  let all = await scrape(m);
  assert.equal(one(all, 'lifeboat_store_operations_total', { store: 'primary', op: 'put', result: 'success' }), 2);
  assert.equal(one(all, 'lifeboat_store_operations_total', { store: 'secondary', op: 'list', result: 'failure' }), 1);
  assert.equal(one(all, 'lifeboat_store_operations_total', { store: 'primary', op: 'list', result: 'failure' }), 0);
  assert.equal(one(all, 'lifeboat_store_orphans_cleaned_total'), 3);
  assert.equal(one(all, 'lifeboat_retention_deleted_total'), 2);
  assert.equal(one(all, 'lifeboat_is_leader'), 1);
  assert.equal(one(all, 'lifeboat_etcd_db_size_bytes'), 1 << 30);
  assert.equal(one(all, 'lifeboat_schedule_expected_interval_seconds', { schedule: 'backup' }), 3600);
  assert.equal(one(all, 'lifeboat_schedule_expected_interval_seconds', { schedule: 'drill' }), 604800);

  m.setLeader(false);
  m.setExpectedInterval(undefined);
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_is_leader'), 0);
  assert.equal(one(all, 'lifeboat_schedule_expected_interval_seconds', { schedule: 'backup' }), 0, 'a schedule that is off exports 0');
});

test('the store kinds are exported; a daemon in a pod with only a directory store gets one loud warning, and none otherwise', async () => {
  const m = new LifeboatMetrics(identity);
  m.setStoreKind('primary', 'fs');
  m.setStoreKind('secondary', 's3');
  const all = await scrape(m);
  assert.equal(one(all, 'lifeboat_store_info', { store: 'primary', kind: 'fs' }), 1);
  assert.equal(one(all, 'lifeboat_store_info', { store: 'secondary', kind: 's3' }), 1);

  const inPod = { KUBERNETES_SERVICE_HOST: '10.96.0.1' };
  const fsInPod = resolveConfig({ cluster: 'prod' }, 'config', inPod);
  assert.equal(fsInPod.runtime.inPod, true);
  assert.match(localStoreWarning(fsInPod) ?? '', /^backups stay on this node's disk \(store\.fs\.dir \/var\/lib\/lifeboat\/backups\): a lost node takes its backups with it/);
  assert.equal(localStoreWarning(resolveConfig({ cluster: 'prod' })), undefined, 'outside a pod the directory may be a mount');
  const s3 = { s3: { endpoint: 'https://rgw.example', bucket: 'lifeboat-backups', accessKeyId: 'a', secretAccessKey: 'b' } };
  assert.equal(localStoreWarning(resolveConfig({ cluster: 'prod', store: s3 }, 'config', inPod)), undefined);
  assert.equal(localStoreWarning(resolveConfig({ cluster: 'prod', secondaryStore: s3 }, 'config', inPod)), undefined, 'a second copy in S3 leaves the node');
});

test('bad numbers are refused, naming what was wrong', () => {
  const m = new LifeboatMetrics(identity);
  assert.throws(() => m.orphansCleaned(-1), /orphans cleaned must be a finite number >= 0, got -1/);
  assert.throws(() => m.retentionDeleted(Number.NaN), RangeError);
  assert.throws(() => m.setEtcdDbSize(-5), /etcd database size/);
  assert.throws(() => m.setExpectedInterval(Number.POSITIVE_INFINITY), /expected backup interval/);
  assert.throws(() => m.backupFinished({ result: 'success', durationSeconds: -1 }), /durationSeconds/);
  assert.throws(() => m.backupStarted(new Date(Number.NaN)), /invalid date/);
});

test('seeding from the catalogue raises the last-success timestamps and never lowers them', async () => {
  const m = new LifeboatMetrics(identity);
  m.seedFromCatalogue({ lastBackupAt: new Date(10_000), lastBackupSizeBytes: 777, lastVerifiedAt: { drill: new Date(8000) } });
  let all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), 10);
  assert.equal(one(all, 'lifeboat_backup_size_bytes'), 777);
  assert.equal(one(all, 'lifeboat_backup_last_attempt_timestamp_seconds'), 0, 'seeding is no attempt: a seeded success never reads as a failure');
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'drill' }), 8);

  m.backupFinished({ result: 'success', durationSeconds: 1, sizeBytes: 5, now: new Date(20_000) });
  m.verifyFinished({ result: 'success', level: 'drill', now: new Date(30_000) });
  m.seedFromCatalogue({ lastBackupAt: new Date(15_000), lastBackupSizeBytes: 999, lastVerifiedAt: { drill: new Date(9000), deep: new Date(2000) } });
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), 20);
  assert.equal(one(all, 'lifeboat_backup_size_bytes'), 5);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'drill' }), 30);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'deep' }), 2);
});

test('seeding ignores a backup dated in the future, and the future-dated ones are counted', async () => {
  const now = new Date('2026-11-24T12:00:00.000Z');
  const store = new MemoryStore({ now: () => now });
  const good = await putBackup(store, 'prod', new Date('2026-11-24T11:00:00.000Z'));
  const future = await putBackup(store, 'prod', new Date('2027-11-24T11:00:00.000Z'), { archiveBytes: 4096 });
  const catalog = new Catalog(store, 'prod', { trust: TEST_TRUST, now: () => now });
  await catalog.recordVerification(passedRecord(good.backupId, 'drill', new Date('2026-11-24T11:30:00.000Z'), 1));
  await catalog.recordVerification(passedRecord(future.backupId, 'deep', new Date('2027-11-24T11:30:00.000Z'), 1));
  const m = new LifeboatMetrics(identity);
  assert.equal(one(await scrape(m), 'lifeboat_backup_future_dated'), 0);
  const config = resolveConfig({ cluster: 'prod', node: 'cp-1' });
  await seedMetrics(daemonCatalog(store, config, TEST_TRUST, m, createLogger('silent'), () => now), m, createLogger('silent'), () => now, config.backup.maxClockSkewSeconds);
  const all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), Date.parse(good.createdAt) / 1000);
  assert.equal(one(all, 'lifeboat_backup_size_bytes'), good.archive.size);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'drill' }), Date.parse('2026-11-24T11:30:00.000Z') / 1000);
  assert.equal(one(all, 'lifeboat_verify_last_success_timestamp_seconds', { level: 'deep' }), 0, 'a check dated in the future is not trusted either');
  assert.equal(one(all, 'lifeboat_backup_future_dated'), 1);
  await catalog.deleteBackup(future.backupId);
  await daemonCatalog(store, config, TEST_TRUST, m, createLogger('silent'), () => now).entries();
  assert.equal(one(await scrape(m), 'lifeboat_backup_future_dated'), 0);
});

test('seeding ignores a refused (unsigned) backup, even the newest, and counts it in lifeboat_backup_rejected', async () => {
  const now = new Date('2026-11-24T12:00:00.000Z');
  const store = new MemoryStore({ now: () => now });
  const good = await putBackup(store, 'prod', new Date('2026-11-24T10:00:00.000Z'));
  const forged = await putBackup(store, 'prod', new Date('2026-11-24T11:00:00.000Z'), { archiveBytes: 4096 });
  await store.delete(signatureKey('prod', forged.backupId));
  const m = new LifeboatMetrics(identity);
  assert.equal(one(await scrape(m), 'lifeboat_backup_rejected'), 0);
  const config = resolveConfig({ cluster: 'prod', node: 'cp-1' });
  await seedMetrics(daemonCatalog(store, config, TEST_TRUST, m, createLogger('silent'), () => now), m, createLogger('silent'), () => now, config.backup.maxClockSkewSeconds);
  const all = await scrape(m);
  assert.equal(one(all, 'lifeboat_backup_last_success_timestamp_seconds'), Date.parse(good.createdAt) / 1000, 'the unsigned newest does not count as a success');
  assert.equal(one(all, 'lifeboat_backup_rejected'), 1);
});

test('each facade owns its registry: instances share nothing and the global registry stays empty', async () => {
  const a = new LifeboatMetrics({ cluster: 'a', node: 'n', version: '1' });
  const b = new LifeboatMetrics({ cluster: 'b', node: 'n', version: '1' });
  a.backupFinished({ result: 'success', durationSeconds: 1 });
  assert.equal(one(await scrape(a), 'lifeboat_backup_total', { result: 'success' }), 1);
  assert.equal(one(await scrape(b), 'lifeboat_backup_total', { result: 'success' }), 0);
  assert.ok((await scrape(b)).every((s) => s.labels.cluster === 'b'));
  assert.equal(globalRegistry.getMetricsAsArray().length, 0);
});

test('the standard process and Node.js metrics are there, minus the gauges named like counters', async () => {
  const m = new LifeboatMetrics(identity);
  const text = await m.render();
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((t) => [t[1]!, t[2]!]));
  for (const name of ['process_cpu_seconds_total', 'process_start_time_seconds', 'process_resident_memory_bytes', 'process_open_fds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_active_handles', 'nodejs_gc_duration_seconds']) {
    assert.ok(types.has(name), `${name} missing`);
  }
  for (const name of DROPPED_DEFAULT_METRICS) assert.ok(!types.has(name), `${name} should be dropped`);
  for (const [name, type] of types) {
    if (name.endsWith('_total')) assert.equal(type, 'counter', `${name} ends in _total but is a ${type}`);
    if (type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} lacks _total`);
  }
  assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  const start = one(samples(text), 'process_start_time_seconds');
  assert.ok(Math.abs(start - (Date.now() / 1000 - process.uptime())) < 5);
});

test('the change log: captured revision and time, segments and their bytes, gaps, and the lag read at each scrape', async () => {
  const m = new LifeboatMetrics(identity);
  let all = await scrape(m);
  for (const name of ['lifeboat_changes_captured_revision', 'lifeboat_changes_captured_timestamp_seconds', 'lifeboat_changes_lag_seconds', 'lifeboat_changes_segments_total', 'lifeboat_changes_segment_bytes_total', 'lifeboat_changes_gaps_total']) {
    assert.equal(one(all, name), 0, `${name} starts at 0`);
  }
  let lag = 12.5;
  m.changes.setLagSource(() => lag);
  m.changes.captured('1043', new Date('2026-11-24T03:30:00.500Z'));
  m.changes.committed(2048);
  m.changes.committed(100);
  m.changes.gap();
  all = await scrape(m);
  assert.equal(one(all, 'lifeboat_changes_captured_revision'), 1043);
  assert.equal(one(all, 'lifeboat_changes_captured_timestamp_seconds'), Date.parse('2026-11-24T03:30:00.500Z') / 1000);
  assert.equal(one(all, 'lifeboat_changes_segments_total'), 2);
  assert.equal(one(all, 'lifeboat_changes_segment_bytes_total'), 2148);
  assert.equal(one(all, 'lifeboat_changes_gaps_total'), 1);
  assert.equal(one(all, 'lifeboat_changes_lag_seconds'), 12.5);
  lag = 0;
  assert.equal(one(await scrape(m), 'lifeboat_changes_lag_seconds'), 0, 'read again at the next scrape');
  assert.throws(() => m.changes.committed(-1), RangeError);
});

test('replays of the change log: the last one\'s events per second, and every event counted', async () => {
  const m = new LifeboatMetrics(identity);
  assert.equal(one(await scrape(m), 'lifeboat_changes_replay_events_per_second'), 0);
  m.changes.replayed(50_000, 2);
  m.changes.replayed(3_000, 0.5);
  const all = await scrape(m);
  assert.equal(one(all, 'lifeboat_changes_replay_events_per_second'), 6_000, 'the last replay');
  assert.equal(one(all, 'lifeboat_changes_replayed_events_total'), 53_000);
  assert.throws(() => m.changes.replayed(1.5, 1), RangeError);
  assert.throws(() => m.changes.replayed(1, Number.NaN), RangeError);
});
