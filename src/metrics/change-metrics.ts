import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * The change log's series (../changes/, run by ../daemon/change-log.ts), on the registry of
 * LifeboatMetrics. Only the leader captures, so on a follower every series stays where it was
 * when this process last led (0 if it never did) and the lag is 0: alerts take the max per
 * cluster.
 */
export class ChangeLogMetrics {
  readonly #revision: Gauge;
  readonly #capturedAt: Gauge;
  readonly #segments: Counter;
  readonly #bytes: Counter;
  readonly #gaps: Counter;
  readonly #replayRate: Gauge;
  readonly #replayed: Counter;
  #lagSource: () => number = () => 0;

  constructor(registers: Registry[]) {
    this.#revision = new Gauge({
      name: 'lifeboat_changes_captured_revision',
      help: 'The last etcd revision the change log captured (received by the leader\'s watch; committed within changes.segmentSeconds); 0 before the first.',
      registers,
    });
    this.#capturedAt = new Gauge({
      name: 'lifeboat_changes_captured_timestamp_seconds',
      help: 'Unix time at which the leader\'s watch received lifeboat_changes_captured_revision; 0 before the first.',
      registers,
    });
    const lag = (): number => this.#lagSource();
    new Gauge({
      name: 'lifeboat_changes_lag_seconds',
      help: 'How far the committed change log is behind etcd (its RPO), on the leader: now minus the time since which etcd may hold changes the store does not, that is the receive time of the oldest change not yet committed, or, while the capture is not watching (starting, failed, retrying), when it stopped; 0 when the watch is up and every change received is committed, and 0 on followers and with changes.enabled off.',
      registers,
      collect() {
        this.set(lag());
      },
    });
    this.#segments = new Counter({
      name: 'lifeboat_changes_segments_total',
      help: 'Change-log segments committed (data, signature and manifest written).',
      registers,
    });
    this.#bytes = new Counter({
      name: 'lifeboat_changes_segment_bytes_total',
      help: 'Stored (compressed and encrypted) bytes of the change-log segments committed.',
      registers,
    });
    this.#gaps = new Counter({
      name: 'lifeboat_changes_gaps_total',
      help: 'Times etcd had compacted revisions before the change log captured them: those revisions are lost from the log, and a full backup was asked for at once.',
      registers,
    });
    this.#replayRate = new Gauge({
      name: 'lifeboat_changes_replay_events_per_second',
      help: 'Events per second of the last replay of the change log on this node (a drill\'s, or a point-in-time restore\'s fetch): events applied over the replay\'s seconds, segments read and decrypted alongside; 0 before the first.',
      registers,
    });
    this.#replayed = new Counter({
      name: 'lifeboat_changes_replayed_events_total',
      help: 'Change-log events replayed on this node, by drills and point-in-time restores.',
      registers,
    });
    this.#replayRate.set(0);
    this.#revision.set(0);
    this.#capturedAt.set(0);
  }

  /** Where lifeboat_changes_lag_seconds is read from at each scrape (ChangeLogService.lagSeconds). */
  setLagSource(source: () => number): void {
    this.#lagSource = source;
  }

  /** The watch received `revision` at `at`. */
  captured(revision: string, at: Date): void {
    this.#revision.set(Number(revision));
    this.#capturedAt.set(at.getTime() / 1000);
  }

  /** A segment was committed; `storedBytes` is its data object's size. */
  committed(storedBytes: number): void {
    if (!Number.isFinite(storedBytes) || storedBytes < 0) throw new RangeError(`metrics: segment bytes must be a finite number >= 0, got ${storedBytes}`);
    this.#segments.inc();
    this.#bytes.inc(storedBytes);
  }

  /** A replay applied `events` in `seconds`. */
  replayed(events: number, seconds: number): void {
    if (!Number.isInteger(events) || events < 0 || !(seconds >= 0)) throw new RangeError(`metrics: a replay needs events >= 0 and seconds >= 0, got ${events} and ${seconds}`);
    this.#replayed.inc(events);
    this.#replayRate.set(seconds > 0 ? events / seconds : 0);
  }

  /** etcd had compacted revisions the log needed. */
  gap(): void {
    this.#gaps.inc();
  }
}
