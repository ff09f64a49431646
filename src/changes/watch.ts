import type { IWatchResponse } from 'etcd3';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { EtcdUnavailableError } from '../errors/errors.ts';
import { etcdClient } from '../etcd/client.ts';
import type { RawEvent } from './format.ts';

/**
 * What the watch delivers: that etcd has set the watch up (its first answer), the events of one
 * response (whole revisions), or that the start revision was compacted.
 */
export type WatchMessage = { watching: true } | { events: RawEvent[] } | { compactRevision: string };

export interface ChangeWatch {
  messages: AsyncIterator<WatchMessage>;
  close(): void;
}

/** Opens a watch over the whole keyspace from `startRevision` (inclusive); from now when undefined. */
export type OpenWatch = (startRevision: string | undefined) => Promise<ChangeWatch>;

/**
 * A watch response larger than this fails the stream. The watch asks etcd to fragment: a
 * catch-up response batches up to 1,000 revisions, which can be far larger; fragmented, each
 * part is at most etcd's --max-request-bytes (1.5 MiB by default).
 */
const MAX_RESPONSE_BYTES = 16 << 20;

/**
 * One etcd3 client (all endpoints) and its raw gRPC watch: the etcd3 watcher hides the
 * compact revision of a compacted start, which the change log records as a gap.
 */
export function etcdWatcher(config: Config['etcd'], log: Logger): { open: OpenWatch; close: () => void } {
  const client = etcdClient({ endpoints: config.endpoints, tls: config.tls, dialTimeoutMs: config.dialTimeoutMs, maxResponseBytes: MAX_RESPONSE_BYTES });
  const open: OpenWatch = async (startRevision) => {
    const stream = await client.watchClient.watch();
    let failed: Error | undefined;
    stream.on('error', (err) => {
      failed = err;
    });
    // The key range [\0, \0) is every key.
    stream.write({ create_request: { key: Buffer.from([0]), range_end: Buffer.from([0]), fragment: true, ...(startRevision === undefined ? {} : { start_revision: startRevision }) } });
    log.debug({ startRevision }, 'change watch opened');
    return { messages: messages(stream as unknown as AsyncIterable<IWatchResponse>, () => failed), close: () => stream.cancel() };
  };
  return { open, close: () => client.close() };
}

/**
 * The watch's messages. Each carries whole revisions: of a fragment, the events of its last
 * revision are held back until the next fragment (or the response's last) shows where that
 * revision ends. Memory: one fragment and one revision's events.
 */
async function* messages(stream: AsyncIterable<IWatchResponse>, failed: () => Error | undefined): AsyncGenerator<WatchMessage> {
  let held: RawEvent[] = [];
  try {
    for await (const res of stream) {
      if (res.compact_revision && res.compact_revision !== '0') {
        yield { compactRevision: String(res.compact_revision) };
        return;
      }
      if (res.canceled) throw new EtcdUnavailableError(`etcd cancelled the change watch: ${res.cancel_reason || 'no reason given'}`);
      if (res.created) yield { watching: true };
      const events = held.concat(
        res.events.map((e): RawEvent => ({
          revision: String(e.kv.mod_revision),
          op: e.type === 'Delete' ? 'delete' : 'put',
          key: e.kv.key,
          ...(e.type === 'Delete' ? {} : { value: e.kv.value, lease: String(e.kv.lease ?? '0') }),
        })),
      );
      held = [];
      if (res.fragment && events.length > 0) {
        const last = events.at(-1)!.revision;
        const cut = events.findIndex((e) => e.revision === last);
        held = events.slice(cut);
        if (cut > 0) yield { events: events.slice(0, cut) };
        continue;
      }
      if (events.length > 0) yield { events };
    }
  } catch (err) {
    if (err instanceof EtcdUnavailableError) throw err;
    throw new EtcdUnavailableError(`the change watch failed: ${(err as Error).message}`, { cause: err });
  }
  const err = failed();
  throw new EtcdUnavailableError(`the change watch ended${err ? `: ${err.message}` : ''}`);
}
