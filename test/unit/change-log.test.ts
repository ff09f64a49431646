import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Gap } from '../../src/changes/capture.ts';
import type { RawEvent } from '../../src/changes/format.ts';
import { checkChain, readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import type { ChangeWatch, OpenWatch, WatchMessage } from '../../src/changes/watch.ts';
import { createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { ChangeLogService, changeLogService, type CaptureHooks, type Timer } from '../../src/daemon/change-log.ts';
import { FencedStore } from '../../src/daemon/fenced-store.ts';
import { EtcdUnavailableError, NotFoundError, NotLeaderError, StoreError } from '../../src/errors/errors.ts';
import type { JobRequest, Submitted } from '../../src/jobs/job.ts';
import { LifeboatMetrics } from '../../src/metrics/metrics.ts';
import { until } from '../support/daemon.ts';
import { quietLog } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNING, TEST_TRUST } from '../support/signing.ts';

const key = await generateIdentity();

/** A clock that moves only when told to, or by the time a retry waits. */
function fakeTimer(start = Date.parse('2026-11-24T03:30:00.000Z')) {
  const state = { ms: start, sleeps: [] as number[] };
  const timer: Timer = {
    now: () => new Date(state.ms),
    sleep: async (ms) => {
      state.sleeps.push(ms);
      state.ms += ms;
      await new Promise((r) => setImmediate(r));
    },
  };
  return { state, timer };
}

/** A capture the test drives: each run waits for the test to end it, and says when it started. */
function scriptedCapture() {
  const runs: { signal: AbortSignal; fail: (err: Error) => void }[] = [];
  let lag = 0;
  let hooks: CaptureHooks | undefined;
  const make = (h: CaptureHooks) => {
    hooks = h;
    return {
      lagSeconds: () => lag,
      run: (signal: AbortSignal) =>
        new Promise<void>((resolve, reject) => {
          runs.push({ signal, fail: reject });
          signal.addEventListener('abort', () => resolve(), { once: true });
        }),
    };
  };
  return { make, runs, setLag: (s: number) => (lag = s), hooks: () => hooks! };
}

function leadership(leading = true) {
  const state = { leading };
  return { state, isLeader: () => state.leading };
}

test('only the leader captures; a failure is retried with capped exponential backoff; the lag counts from when it stopped watching', async () => {
  const { state: clock, timer } = fakeTimer();
  const capture = scriptedCapture();
  const lead = leadership(false);
  const service = new ChangeLogService({ makeCapture: capture.make, isLeader: lead.isLeader, timer, log: quietLog, backoff: { minMs: 1000, maxMs: 4000 } });
  service.leadership(false);
  assert.equal(capture.runs.length, 0, 'a follower does not capture');
  assert.equal(service.lagSeconds(), 0, 'a follower reports no lag');

  lead.state.leading = true;
  service.leadership(true);
  service.leadership(true);
  await until('the capture runs', () => capture.runs.length === 1);
  clock.ms += 3000;
  assert.equal(service.lagSeconds(), 3, 'not watching yet: the lag counts from the start of the term');
  capture.hooks().onWatching();
  assert.equal(service.lagSeconds(), 0, 'watching, nothing buffered: caught up');
  capture.setLag(2);
  assert.equal(service.lagSeconds(), 2, 'the oldest uncommitted change is 2 s old');

  // The store fails: the buffered change (2 s old) is dropped, and the retries wait 1, 2, 4, 4 s.
  for (let i = 0; i < 4; i++) {
    capture.runs.at(-1)!.fail(new StoreError('store unreachable'));
    await until(`retry ${i + 1}`, () => capture.runs.length === i + 2);
  }
  assert.deepEqual(clock.sleeps, [1000, 2000, 4000, 4000]);
  assert.equal(service.lagSeconds(), 2 + 11, 'down since the oldest change it had not committed');
  capture.hooks().onCommitted(undefined as never);
  capture.runs.at(-1)!.fail(new EtcdUnavailableError('etcd unavailable'));
  await until('the retry after a commit', () => capture.runs.length === 6);
  assert.equal(clock.sleeps.at(-1), 1000, 'a committed segment starts the backoff over');
  capture.hooks().onWatching();
  capture.setLag(0);
  assert.equal(service.lagSeconds(), 0);

  // Leadership lost: the run is aborted and not retried.
  lead.state.leading = false;
  service.leadership(false);
  assert.equal(capture.runs.at(-1)!.signal.aborted, true);
  await until('the loop ends', () => !service.running);
  assert.equal(capture.runs.length, 6);
  assert.equal(service.lagSeconds(), 0, 'no longer the leader: no lag reported');

  // A fence refusal ends the run without a retry too.
  lead.state.leading = true;
  service.leadership(true);
  await until('the capture runs again', () => capture.runs.length === 7);
  const sleeps = clock.sleeps.length;
  lead.state.leading = false;
  capture.runs.at(-1)!.fail(new NotLeaderError(undefined, 'not the leader'));
  await until('the loop ends', () => !service.running);
  assert.equal(capture.runs.length, 7, 'not retried');
  assert.equal(clock.sleeps.length, sleeps, 'no retry delay either');
  await service.stop();
});

/** etcd's history as the watch serves it: revisions from a start, compaction, a watch that fails on demand. */
class FakeEtcd {
  revision = 10n;
  compacted = 0n;
  readonly history: RawEvent[] = [];
  readonly opens: (string | undefined)[] = [];
  #wake = new Set<() => void>();
  #broken: Error | undefined;

  put(k: string, v: string): void {
    this.revision += 1n;
    this.history.push({ revision: this.revision.toString(), op: 'put', key: Buffer.from(k), value: Buffer.from(v) });
    this.#notify();
  }

  /** Every open watch fails, and opening fails, until `heal`. */
  break(err: Error): void {
    this.#broken = err;
    this.#notify();
  }

  heal(): void {
    this.#broken = undefined;
  }

  #notify(): void {
    for (const wake of this.#wake) wake();
    this.#wake.clear();
  }

  open: OpenWatch = async (start) => {
    this.opens.push(start);
    if (this.#broken) throw this.#broken;
    const state = { closed: false };
    const watch: ChangeWatch = {
      messages: this.#messages(start, state),
      close: () => {
        state.closed = true;
        this.#notify();
      },
    };
    return watch;
  };

  async *#messages(start: string | undefined, state: { closed: boolean }): AsyncGenerator<WatchMessage> {
    yield { watching: true };
    let next = start === undefined ? this.revision + 1n : BigInt(start);
    if (next < this.compacted) {
      yield { compactRevision: this.compacted.toString() };
      return;
    }
    for (;;) {
      if (this.#broken) throw this.#broken;
      if (state.closed) throw new EtcdUnavailableError('watch closed');
      const events = this.history.filter((e) => BigInt(e.revision) >= next);
      if (events.length > 0) {
        next = BigInt(events.at(-1)!.revision) + 1n;
        yield { events };
        continue;
      }
      await new Promise<void>((resolve) => this.#wake.add(resolve));
    }
  }
}

/** One daemon's change log on `store`: a real ChangeCapture behind the fence, with `etcd` and `lead` faked. */
function daemonChangeLog(name: string, store: MemoryStore, etcd: FakeEtcd, lead: ReturnType<typeof leadership>, backupRevision: string | undefined) {
  const { state: clock, timer } = fakeTimer();
  const submitted: JobRequest[] = [];
  const metrics = new LifeboatMetrics({ cluster: 'c', node: name, version: 'test' });
  const fence = () => {
    if (!lead.isLeader()) throw new NotLeaderError(undefined, `${name} no longer leads`);
  };
  const service = changeLogService({
    config: { cluster: 'c', node: name, changes: { enabled: true, segmentSeconds: 0.05, maxSegmentBytes: 1024, replayLeaseTtlSeconds: 3600 }, compression: { algorithm: 'zstd', level: 3 }, encryption: { recipients: [key.recipient] } },
    store: new FencedStore(store, fence) as unknown as MemoryStore,
    signing: TEST_SIGNING,
    latestBackup: async () => {
      if (backupRevision === undefined) throw new NotFoundError('no backup');
      return { etcd: { revision: backupRevision } };
    },
    openWatch: etcd.open,
    encrypt: createEncryptStream,
    isLeader: lead.isLeader,
    fence,
    submit: (request) => {
      submitted.push(request);
      return { job: { id: `job-${submitted.length}` }, created: true } as unknown as Submitted;
    },
    metrics: metrics.changes,
    timer,
    log: quietLog,
  });
  return { service, submitted, metrics, clock };
}

async function chainOf(store: MemoryStore) {
  const segments = [];
  for (const id of await segmentIds(store, 'c')) segments.push(await readTrustedSegment(store, 'c', TEST_TRUST, id));
  return { segments, report: checkChain(segments) };
}

async function committedThrough(store: MemoryStore, revision: bigint): Promise<boolean> {
  const last = (await segmentIds(store, 'c')).at(-1);
  return last !== undefined && BigInt((await readTrustedSegment(store, 'c', TEST_TRUST, last)).manifest.lastRevision) >= revision;
}

test('a leader captures after the newest backup; a failed etcd is retried; the next leader continues from the last committed segment: no revision missing or repeated', async () => {
  const store = new MemoryStore();
  const etcd = new FakeEtcd();
  const leadA = leadership(true);
  const a = daemonChangeLog('cp-1', store, etcd, leadA, '10');
  a.service.leadership(true);
  for (let i = 0; i < 20; i++) etcd.put(`/registry/a/${i}`, 'x'.repeat(100));
  await until('cp-1 commits through 30', () => committedThrough(store, 30n));
  assert.equal(etcd.opens[0], '11', 'the first capture starts after the newest backup');

  etcd.break(new EtcdUnavailableError('etcd unavailable'));
  await until('cp-1 retries', () => etcd.opens.length >= 3);
  etcd.heal();
  for (let i = 0; i < 5; i++) etcd.put(`/registry/b/${i}`, 'y');
  await until('cp-1 commits through 35 after the failure', () => committedThrough(store, 35n));
  assert.ok(etcd.opens.slice(1).every((s) => s === '31'), `a retry resumes after the last committed segment: ${etcd.opens.join(',')}`);

  // cp-1 stops (committing what it holds); cp-2 leads next.
  await a.service.stop();
  const b = daemonChangeLog('cp-2', store, etcd, leadership(true), '10');
  for (let i = 0; i < 5; i++) etcd.put(`/registry/c/${i}`, 'z');
  b.service.leadership(true);
  await until('cp-2 commits through 40', () => committedThrough(store, 40n));
  assert.equal(etcd.opens.at(-1), '36', 'the new leader continues after the last committed segment');
  await b.service.stop();

  const { segments, report } = await chainOf(store);
  assert.deepEqual(report.gaps, []);
  assert.equal(segments[0]!.manifest.firstRevision, '11');
  assert.equal(segments.at(-1)!.manifest.lastRevision, '40');
  assert.equal(segments.reduce((n, s) => n + s.manifest.events, 0), 30, 'every revision once');
  assert.deepEqual(new Set(segments.map((s) => s.manifest.node)), new Set(['cp-1', 'cp-2']));
  const text = await a.metrics.render();
  assert.match(text, /^lifeboat_changes_captured_revision\{cluster="c"\} 35$/m);
  assert.match(text, /^lifeboat_changes_segments_total\{cluster="c"\} [1-9]/m);
});

test('a leader that lost its term commits nothing: the fence refuses the segment manifest, and the next leader captures those changes', async () => {
  const store = new MemoryStore();
  const etcd = new FakeEtcd();
  const lead = leadership(true);
  const a = daemonChangeLog('cp-1', store, etcd, lead, '10');
  a.service.leadership(true);
  await until('cp-1 watches', () => etcd.opens.length === 1);
  lead.state.leading = false;
  etcd.put('/registry/late', 'v');
  // The segment falls due after its term ended: the manifest is refused and nothing is committed.
  await until('cp-1 stops', () => !a.service.running);
  assert.deepEqual(await segmentIds(store, 'c'), []);
  assert.deepEqual([...store.objects.keys()], [], 'the uncommitted data object was removed');

  const b = daemonChangeLog('cp-2', store, etcd, leadership(true), '10');
  b.service.leadership(true);
  await until('cp-2 commits the change', () => committedThrough(store, 11n));
  await b.service.stop();
  const { segments } = await chainOf(store);
  assert.equal(segments[0]!.manifest.node, 'cp-2');
  assert.equal(segments[0]!.manifest.firstRevision, '11');
});

test('revisions compacted before they were captured: the gap is in the chain, counted, and a full backup is asked of the job owner at once', async () => {
  const store = new MemoryStore();
  const etcd = new FakeEtcd();
  for (let i = 0; i < 10; i++) etcd.put(`/registry/old/${i}`, 'o');
  etcd.compacted = 16n; // revisions 11-15 are gone
  const a = daemonChangeLog('cp-1', store, etcd, leadership(true), '10');
  a.service.leadership(true);
  await until('the gap is seen', () => a.submitted.length === 1);
  assert.deepEqual(a.submitted[0], { kind: 'backup', trigger: 'change-log', requestedBy: 'change-log' });
  await until('the rest is committed', () => committedThrough(store, 20n));
  await a.service.stop();
  const { segments, report } = await chainOf(store);
  assert.deepEqual(report.gaps, [{ from: '11', to: '15', before: segments[0]!.manifest.segmentId }]);
  assert.equal(segments[0]!.manifest.firstRevision, '16');
  assert.match(await a.metrics.render(), /^lifeboat_changes_gaps_total\{cluster="c"\} 1$/m);
});

test('a store that cannot be reached is retried, and nothing is committed until it answers', async () => {
  const memory = new MemoryStore();
  let down = true;
  const store = Object.assign(Object.create(memory) as MemoryStore, {
    list: async (prefix: string) => {
      if (down) throw new StoreError('store unreachable');
      return memory.list(prefix);
    },
  });
  const etcd = new FakeEtcd();
  etcd.put('/registry/x', '1');
  const a = daemonChangeLog('cp-1', store, etcd, leadership(true), '10');
  a.service.leadership(true);
  await until('three attempts', () => a.clock.sleeps.length >= 3);
  assert.deepEqual(a.clock.sleeps.slice(0, 3), [1000, 2000, 4000]);
  assert.equal(etcd.opens.length, 0, 'no watch before the log knows where it ends');
  assert.ok(a.service.lagSeconds() >= 7, `the lag grows while the store is down: ${a.service.lagSeconds()}`);
  down = false;
  await until('committed once the store answers', () => committedThrough(memory, 11n));
  await a.service.stop();
  const captured: Gap[] = (await chainOf(memory)).report.gaps;
  assert.deepEqual(captured, []);
});
