import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ArchiveError } from '../errors/errors.ts';

/**
 * A change-log segment, once `age -d` and `zstd -d` have opened it, is JSON lines: one line per
 * etcd event, in revision order (one revision holds several events when a transaction changed
 * several keys). Keys and values are base64, since etcd's are bytes:
 *
 *   {"rev":"1043","time":"2026-11-24T03:30:00.123Z","op":"put","key":"L3JlZ2lzdHJ5L...","value":"azhzAAo...","lease":"7587871234"}
 *   {"rev":"1044","time":"2026-11-24T03:30:00.150Z","op":"delete","key":"L3JlZ2lzdHJ5L..."}
 *
 * `rev` is the etcd revision (a string: etcd's are 64-bit), `time` when the leader's watch
 * received it, `lease` the lease id the key was put with (absent for none).
 */
export const Revision = Type.String({ pattern: '^[0-9]{1,20}$' });
export const Timestamp = Type.String({ pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$' });
const Base64 = Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$' });

export const ChangeEventSchema = Type.Object(
  {
    rev: Revision,
    time: Timestamp,
    op: Type.Union([Type.Literal('put'), Type.Literal('delete')]),
    key: Base64,
    value: Type.Optional(Base64),
    lease: Type.Optional(Revision),
  },
  { additionalProperties: false },
);
export type ChangeEvent = Static<typeof ChangeEventSchema>;

export interface RawEvent {
  revision: string;
  op: 'put' | 'delete';
  key: Buffer;
  value?: Buffer;
  /** etcd's lease id; '0' (or absent) for none. */
  lease?: string;
}

/** One line of a segment, with its newline. */
export function eventLine(event: RawEvent, receivedAt: Date): Buffer {
  const line: ChangeEvent = { rev: event.revision, time: receivedAt.toISOString(), op: event.op, key: event.key.toString('base64') };
  if (event.op === 'put') line.value = (event.value ?? Buffer.alloc(0)).toString('base64');
  if (event.op === 'put' && event.lease !== undefined && event.lease !== '0') line.lease = event.lease;
  return Buffer.from(`${JSON.stringify(line)}\n`);
}

/** The events of a segment's plaintext; ArchiveError naming the first line that is not an event, or out of revision order. */
export function parseEvents(text: string, what: string): ChangeEvent[] {
  const events: ChangeEvent[] = [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let last = -1n;
  for (const [i, line] of lines.entries()) {
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch {
      throw new ArchiveError(`${what} line ${i + 1} is not JSON`);
    }
    const first = Value.Errors(ChangeEventSchema, doc).First();
    if (first) throw new ArchiveError(`${what} line ${i + 1} is not a change event: ${first.path || '/'} ${first.message}`);
    const event = doc as ChangeEvent;
    if (BigInt(event.rev) < last) throw new ArchiveError(`${what} line ${i + 1} has revision ${event.rev} after revision ${last}: events are out of order`);
    last = BigInt(event.rev);
    events.push(event);
  }
  return events;
}

/** The key of an event as text (Kubernetes keys are UTF-8 paths). */
export function keyOf(event: ChangeEvent): string {
  return Buffer.from(event.key, 'base64').toString('utf8');
}
