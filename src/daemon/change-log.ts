import type { Transform } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { ChangeCapture, type Gap } from '../changes/capture.ts';
import type { TrustedSegment } from '../changes/manifest.ts';
import type { OpenWatch } from '../changes/watch.ts';
import type { Config } from '../config/schema.ts';
import { LifeboatError, NotFoundError, NotLeaderError } from '../errors/errors.ts';
import type { JobRequest, Submitted } from '../jobs/job.ts';
import type { ChangeLogMetrics } from '../metrics/change-metrics.ts';
import { backupSigner, type Signing } from '../signing/trust.ts';
import type { BackupStore } from '../store/store.ts';

/** Where time decides what the change log does: the lag it reports, and how long it waits to retry. */
export interface Timer {
  now(): Date;
  /** Resolves after `ms`, or as soon as `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realTimer: Timer = {
  now: () => new Date(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }).catch(() => undefined),
};

/** What the service runs: ../changes/capture.ts's ChangeCapture. */
export interface CaptureRun {
  /** Captures until `signal` aborts (then commits what is buffered); rejects when etcd or the store fails. */
  run(signal: AbortSignal): Promise<void>;
  /** Seconds since the oldest change not yet committed was received; 0 when there is none. */
  lagSeconds(): number;
}

/** What the capture tells the service. */
export interface CaptureHooks {
  onWatching(): void;
  onCommitted(segment: TrustedSegment): void;
}

export interface ChangeLogServiceDeps {
  makeCapture: (hooks: CaptureHooks) => CaptureRun;
  isLeader: () => boolean;
  timer: Timer;
  log: Logger;
  /** Retry delays after a failure: from minMs, doubling, at most maxMs. */
  backoff?: { minMs: number; maxMs: number };
}

const BACKOFF = { minMs: 1000, maxMs: 30_000 };

/**
 * Runs the change-log capture on the elected leader, and only there: `leadership(true)` starts it
 * (it resumes after the last committed segment), `leadership(false)` stops it (what is buffered
 * is committed if this instance still leads, else dropped: the next leader captures it again
 * from etcd). Segment manifests are fenced like backup manifests (FencedStore), so a leader that
 * has just lost its term does not commit one. A failure (store or etcd unreachable) is retried
 * with capped exponential backoff, from the last committed segment again; the delay starts over
 * once a segment is committed, or after a run that lasted longer than the longest delay.
 *
 * The lag (lifeboat_changes_lag_seconds, the log's RPO): on the leader, now minus the time since
 * which etcd may hold changes the store does not: the receive time of the oldest change not yet
 * committed or, while the capture is not watching (starting, failed, retrying), when it stopped
 * (for a new leader, when it began to lead); 0 when the watch is up and every change received is
 * committed, and 0 on a follower.
 */
export class ChangeLogService {
  readonly #deps: ChangeLogServiceDeps;
  readonly #capture: CaptureRun;
  readonly #backoff: { minMs: number; maxMs: number };
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #stopped = false;
  #active = false;
  #downSince: Date | undefined;
  #delayMs: number;

  constructor(deps: ChangeLogServiceDeps) {
    this.#deps = deps;
    this.#backoff = deps.backoff ?? BACKOFF;
    this.#delayMs = this.#backoff.minMs;
    this.#capture = deps.makeCapture({
      onWatching: () => {
        this.#downSince = undefined;
      },
      onCommitted: () => {
        this.#delayMs = this.#backoff.minMs;
      },
    });
  }

  /** The election's onChange: start capturing on becoming the leader, stop on losing it. */
  leadership(leading: boolean): void {
    if (!leading) {
      this.#abort?.abort();
      return;
    }
    if (this.#stopped || this.#loop) return;
    this.#loop = this.#run().finally(() => {
      this.#loop = undefined;
      // Leadership came back while the last run was ending.
      if (!this.#stopped && this.#deps.isLeader()) this.leadership(true);
    });
  }

  /** Stops capturing (committing what is buffered while this instance still leads); resolves once it has. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort?.abort();
    await this.#loop;
  }

  /** See the class comment. */
  lagSeconds(): number {
    if (!this.#active) return 0;
    const down = this.#downSince ? (this.#deps.timer.now().getTime() - this.#downSince.getTime()) / 1000 : 0;
    return Math.max(0, down, this.#capture.lagSeconds());
  }

  /** True while the capture loop runs (this instance leads, or is committing its last segment). */
  get running(): boolean {
    return this.#loop !== undefined;
  }

  async #run(): Promise<void> {
    const { timer, log, isLeader } = this.#deps;
    this.#active = true;
    this.#downSince = timer.now();
    this.#delayMs = this.#backoff.minMs;
    log.info({ phase: 'changes-start' }, 'this instance leads: capturing the change log');
    try {
      while (!this.#stopped && isLeader()) {
        const abort = new AbortController();
        this.#abort = abort;
        const started = timer.now().getTime();
        try {
          await this.#capture.run(abort.signal);
        } catch (err) {
          if (err instanceof NotLeaderError || abort.signal.aborted) {
            log.info({ phase: 'changes-stopped', err: (err as Error).message }, 'the change log stopped with leadership; what was not committed is captured again by the next leader');
            break;
          }
          const at = timer.now();
          this.#downSince ??= new Date(at.getTime() - this.#capture.lagSeconds() * 1000);
          if (at.getTime() - started > this.#backoff.maxMs) this.#delayMs = this.#backoff.minMs;
          const delay = this.#delayMs;
          this.#delayMs = Math.min(this.#backoff.maxMs, this.#delayMs * 2);
          log.warn({ phase: 'changes-failed', code: err instanceof LifeboatError ? err.code : 'UNEXPECTED', err: (err as Error).message, retryMs: delay }, 'the change log capture failed; it resumes after the last committed segment');
          await timer.sleep(delay, abort.signal);
        }
      }
    } finally {
      this.#abort = undefined;
      this.#active = false;
      this.#downSince = undefined;
      log.info({ phase: 'changes-stop' }, 'the change log capture stopped');
    }
  }
}

export interface ChangeLogParts {
  config: Pick<Config, 'cluster' | 'node' | 'changes' | 'compression'> & { encryption: Pick<Config['encryption'], 'recipients'> };
  /** The daemon's (fenced) primary store. */
  store: BackupStore;
  signing: Signing;
  /** The newest committed backup: where the log starts when the store has no segment. */
  latestBackup: () => Promise<{ etcd: { revision: string } }>;
  openWatch: OpenWatch;
  encrypt: (recipients: readonly string[]) => Transform;
  isLeader: () => boolean;
  /** Throws NotLeaderError unless this instance leads: asked before each segment manifest. */
  fence: () => void;
  /** The one job owner: a gap asks it for a full backup. */
  submit: (request: JobRequest) => Submitted;
  metrics: ChangeLogMetrics;
  timer: Timer;
  log: Logger;
}

/** The daemon's change log: a ChangeCapture of the leader's etcd into the primary store, run by a ChangeLogService. */
export function changeLogService(parts: ChangeLogParts): ChangeLogService {
  const { config, metrics, log } = parts;
  const service = new ChangeLogService({
    isLeader: parts.isLeader,
    timer: parts.timer,
    log,
    makeCapture: (hooks) =>
      new ChangeCapture(
        {
          store: parts.store,
          trust: parts.signing.trust,
          signer: backupSigner(parts.signing),
          encrypt: parts.encrypt,
          openWatch: parts.openWatch,
          newestBackupRevision: async () => {
            try {
              return (await parts.latestBackup()).etcd.revision;
            } catch (err) {
              if (err instanceof NotFoundError) return undefined;
              throw err;
            }
          },
          onGap: (gap) => requestBackup(parts, gap),
          onWatching: hooks.onWatching,
          onCaptured: (revision, at) => metrics.captured(revision, at),
          onCommitted: (segment) => {
            metrics.committed(segment.manifest.data.size);
            hooks.onCommitted(segment);
          },
          fence: parts.fence,
          now: () => parts.timer.now(),
          log,
        },
        {
          cluster: config.cluster,
          node: config.node,
          recipients: config.encryption.recipients,
          level: config.compression.algorithm === 'zstd' ? config.compression.level : 3,
          segmentSeconds: config.changes.segmentSeconds,
          maxSegmentBytes: config.changes.maxSegmentBytes,
        },
      ),
  });
  metrics.setLagSource(() => service.lagSeconds());
  return service;
}

/** Revisions were compacted before the log had them: a full backup now, through the job owner. */
function requestBackup(parts: ChangeLogParts, gap: Gap): void {
  parts.metrics.gap();
  try {
    const { job, created } = parts.submit({ kind: 'backup', trigger: 'change-log', requestedBy: 'change-log' });
    parts.log.warn({ phase: 'changes-gap-backup', gapFrom: gap.from, gapTo: gap.to, jobId: job.id, created }, 'the change log lost revisions to compaction: a full backup is queued');
  } catch (err) {
    parts.log.error({ phase: 'changes-gap-backup', gapFrom: gap.from, gapTo: gap.to, err: (err as Error).message }, 'the change log lost revisions to compaction, and the full backup could not be queued');
  }
}
