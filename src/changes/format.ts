import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
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

/**
 * The schema compiled once: a replay checks every line of every segment, and the compiled check
 * is about five times faster than `Value.Check`. Only a line it refuses is checked again by
 * `Value.Errors`, for the message naming the field.
 */
export const isChangeEvent = TypeCompiler.Compile(ChangeEventSchema);

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
  const parser = new EventParser(what);
  parser.push(text);
  return parser.end();
}

/**
 * parseEvents a piece at a time, as the plaintext is decompressed (a line may span pieces), so
 * that a segment is never held as one large buffer and one large string: in this VM each fresh
 * multi-MiB allocation costs more than parsing it. Lines are checked as parseEvents says.
 */
export class EventParser {
  readonly #what: string;
  readonly #events: ChangeEvent[] = [];
  /** The start of a line whose newline has not arrived yet. */
  #carry = '';
  #line = 0;
  #last = -1n;

  constructor(what: string) {
    this.#what = what;
  }

  push(text: string): void {
    let nl = text.indexOf('\n');
    if (nl < 0) {
      this.#carry += text;
      return;
    }
    this.#add(this.#carry + text.slice(0, nl));
    let start = nl + 1;
    for (nl = text.indexOf('\n', start); nl >= 0; nl = text.indexOf('\n', start)) {
      this.#add(text.slice(start, nl));
      start = nl + 1;
    }
    this.#carry = text.slice(start);
  }

  /** The events; a last line without a newline is one too. */
  end(): ChangeEvent[] {
    if (this.#carry !== '') this.#add(this.#carry);
    this.#carry = '';
    return this.#events;
  }

  #add(line: string): void {
    const n = ++this.#line;
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch {
      throw new ArchiveError(`${this.#what} line ${n} is not JSON`);
    }
    if (!isChangeEvent.Check(doc)) {
      const first = Value.Errors(ChangeEventSchema, doc).First();
      throw new ArchiveError(`${this.#what} line ${n} is not a change event: ${first ? `${first.path || '/'} ${first.message}` : '/ does not match the schema'}`);
    }
    const rev = BigInt(doc.rev);
    if (rev < this.#last) throw new ArchiveError(`${this.#what} line ${n} has revision ${doc.rev} after revision ${this.#last}: events are out of order`);
    this.#last = rev;
    this.#events.push(doc);
  }
}

/** The key of an event as text (Kubernetes keys are UTF-8 paths). */
export function keyOf(event: ChangeEvent): string {
  return Buffer.from(event.key, 'base64').toString('utf8');
}
