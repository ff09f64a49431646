import type { Transform } from 'node:stream';
import type { Logger } from 'pino';
import { ArchiveError, SignatureError } from '../errors/errors.ts';
import type { ManifestSigner, ManifestTrust } from '../signing/trust.ts';
import type { BackupStore } from '../store/store.ts';
import { commitSegment, type CommitSettings, type SegmentBatch } from './commit.ts';
import { eventLine, type RawEvent } from './format.ts';
import { readTrustedSegment, segmentIds, type TrustedSegment } from './manifest.ts';
import type { OpenWatch, WatchMessage } from './watch.ts';

export interface CaptureDeps {
  store: BackupStore;
  trust: ManifestTrust;
  signer: ManifestSigner | undefined;
  encrypt: (recipients: readonly string[]) => Transform;
  openWatch: OpenWatch;
  /** The revision of the newest committed full backup: where capture starts when no segment exists. */
  newestBackupRevision: () => Promise<string | undefined>;
  /** Told of revisions etcd compacted before they were captured: the daemon takes a full backup at once. */
  onGap?: (gap: Gap) => void;
  /** etcd has set the watch up: from now on the capture receives what etcd commits. */
  onWatching?: () => void;
  onCaptured?: (revision: string, at: Date) => void;
  onCommitted?: (segment: TrustedSegment) => void;
  /** Throws unless this process may still write the change log; asked before each manifest. */
  fence?: () => void;
  now: () => Date;
  log: Logger;
}

export interface CaptureSettings extends CommitSettings {
  segmentSeconds: number;
  maxSegmentBytes: number;
}

export interface Gap {
  from: string;
  to: string;
}

/**
 * The leader's watch over the whole keyspace, cut into committed segments (./commit.ts) every
 * `segmentSeconds` after a segment's first event, or as soon as its lines reach
 * `maxSegmentBytes`. It starts at the last committed segment's last revision + 1 (else the
 * newest full backup's revision + 1), so a new leader, or this one after a failure, continues
 * where the log ends: nothing is lost and nothing is written twice.
 *
 * Memory is bounded whatever the write rate: the segment buffer holds at most maxSegmentBytes
 * of lines plus one revision's (segments are cut between revisions; a revision is at most
 * etcd's --max-request-bytes, 1.5 MiB by default, about 2 MiB as base64 lines), while a segment
 * is committed the watch is not read (one response may wait, gRPC flow control holds the rest),
 * and a watch response is at most 16 MiB (the receive limit).
 */
export class ChangeCapture {
  readonly #deps: CaptureDeps;
  readonly #settings: CaptureSettings;
  #batch: SegmentBatch | undefined;
  #previous: TrustedSegment | undefined;
  #gap: Gap | undefined;
  /** The next revision the log expects; undefined until known (no segment and no backup). */
  #next: bigint | undefined;

  constructor(deps: CaptureDeps, settings: CaptureSettings) {
    this.#deps = deps;
    this.#settings = settings;
  }

  /** Seconds since the oldest event not yet committed was received; 0 when every event is. */
  lagSeconds(): number {
    return this.#batch ? Math.max(0, (this.#deps.now().getTime() - this.#batch.firstTime.getTime()) / 1000) : 0;
  }

  /**
   * Captures until `signal` aborts (then commits what is buffered) or the watch fails (then the
   * buffer is dropped: a new run captures it again from etcd's history).
   */
  async run(signal: AbortSignal): Promise<void> {
    this.#batch = undefined;
    this.#gap = undefined;
    await this.#resume();
    while (!signal.aborted) {
      const start = this.#next?.toString();
      const watch = await this.#deps.openWatch(start);
      this.#deps.log.info({ phase: 'changes-watching', startRevision: start ?? 'now', previous: this.#previous?.manifest.segmentId }, 'capturing the change log');
      try {
        const compacted = await this.#watch(watch.messages, signal);
        if (compacted !== undefined) await this.#compacted(compacted, start);
      } finally {
        watch.close();
      }
    }
    await this.#flush();
  }

  /** Reads the watch until it aborts (undefined) or etcd says the start was compacted (its compact revision). */
  async #watch(messages: AsyncIterator<WatchMessage>, signal: AbortSignal): Promise<string | undefined> {
    let pending = messages.next();
    try {
      return await this.#read(messages, () => pending, (p) => (pending = p), signal);
    } finally {
      // Closing the watch fails the read in flight: nobody waits for it.
      pending.catch(() => undefined);
    }
  }

  async #read(messages: AsyncIterator<WatchMessage>, current: () => Promise<IteratorResult<WatchMessage>>, set: (p: Promise<IteratorResult<WatchMessage>>) => void, signal: AbortSignal): Promise<string | undefined> {
    for (;;) {
      const pending = current();
      const wait = this.#batch ? this.#batch.firstTime.getTime() + this.#settings.segmentSeconds * 1000 - this.#deps.now().getTime() : undefined;
      const got = await race(pending, wait, signal);
      if (got === 'aborted') return undefined;
      if (got === 'due') {
        await this.#flush();
        continue;
      }
      if (got.done) return undefined;
      set(messages.next());
      const message = got.value;
      if ('watching' in message) {
        this.#deps.onWatching?.();
        continue;
      }
      if ('compactRevision' in message) return message.compactRevision;
      await this.#take(message.events);
    }
  }

  /** Adds whole revisions to the segment, committing it first when it is full. */
  async #take(events: RawEvent[]): Promise<void> {
    const at = this.#deps.now();
    let i = 0;
    while (i < events.length) {
      const revision = events[i]!.revision;
      let j = i;
      while (j < events.length && events[j]!.revision === revision) j++;
      if (this.#next !== undefined && BigInt(revision) < this.#next) {
        i = j; // already in the log
        continue;
      }
      if (this.#batch && this.#batch.plainBytes >= this.#settings.maxSegmentBytes) await this.#flush();
      const lines = events.slice(i, j).map((e) => eventLine(e, at));
      const bytes = lines.reduce((n, l) => n + l.length, 0);
      const batch = (this.#batch ??= { lines: [], plainBytes: 0, events: 0, firstRevision: revision, lastRevision: revision, firstTime: at, lastTime: at });
      batch.lines.push(...lines);
      batch.plainBytes += bytes;
      batch.events += lines.length;
      batch.lastRevision = revision;
      batch.lastTime = at;
      this.#next = BigInt(revision) + 1n;
      this.#deps.onCaptured?.(revision, at);
      i = j;
    }
    if (this.#batch && this.#batch.plainBytes >= this.#settings.maxSegmentBytes) await this.#flush();
  }

  async #compacted(compactRevision: string, start: string | undefined): Promise<void> {
    await this.#flush();
    const from = this.#next?.toString() ?? start ?? compactRevision;
    const gap = { from: this.#gap?.from ?? from, to: (BigInt(compactRevision) - 1n).toString() };
    if (BigInt(gap.to) >= BigInt(gap.from)) {
      this.#gap = gap;
      this.#deps.log.warn({ phase: 'changes-gap', gapFrom: gap.from, gapTo: gap.to }, `etcd compacted revisions ${gap.from}-${gap.to} before the change log captured them; a full backup is asked for now`);
      this.#deps.onGap?.(gap);
    }
    this.#next = BigInt(compactRevision);
  }

  async #flush(): Promise<void> {
    const batch = this.#batch;
    if (!batch) return;
    const segment = await commitSegment(this.#deps, this.#settings, batch, { previous: this.#previous, gap: this.#gap });
    this.#batch = undefined;
    this.#gap = undefined;
    this.#previous = segment;
    this.#deps.log.info({ phase: 'changes-committed', segmentId: segment.manifest.segmentId, events: batch.events, plainBytes: batch.plainBytes, storedBytes: segment.manifest.data.size, gap: segment.manifest.gap }, 'change segment committed');
    this.#deps.onCommitted?.(segment);
  }

  /** The newest accepted segment (refused ones are skipped, with a warning), else the newest backup. */
  async #resume(): Promise<void> {
    const { store, trust, log } = this.#deps;
    const ids = await segmentIds(store, this.#settings.cluster);
    for (const id of ids.reverse()) {
      try {
        this.#previous = await readTrustedSegment(store, this.#settings.cluster, trust, id);
        this.#next = BigInt(this.#previous.manifest.lastRevision) + 1n;
        return;
      } catch (err) {
        if (!(err instanceof SignatureError || err instanceof ArchiveError)) throw err;
        log.warn({ segmentId: id, code: err.code, err: err.message }, 'a change segment in the store is refused; the log continues after the newest accepted one');
      }
    }
    this.#previous = undefined;
    const revision = await this.#deps.newestBackupRevision();
    this.#next = revision === undefined ? undefined : BigInt(revision) + 1n;
  }
}

type Raced<T> = IteratorResult<T> | 'due' | 'aborted';

/** The next message, or 'due' after `waitMs` (none: never), or 'aborted'. */
async function race<T>(next: Promise<IteratorResult<T>>, waitMs: number | undefined, signal: AbortSignal): Promise<Raced<T>> {
  if (signal.aborted) return 'aborted';
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race<Raced<T>>([
      next,
      new Promise<'aborted'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, { once: true });
      }),
      ...(waitMs === undefined ? [] : [new Promise<'due'>((resolve) => (timer = setTimeout(() => resolve('due'), Math.max(0, waitMs))))]),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
