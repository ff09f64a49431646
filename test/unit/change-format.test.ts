import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Value } from '@sinclair/typebox/value';
import { ChangeEventSchema, EventParser, eventLine, isChangeEvent, parseEvents } from '../../src/changes/format.ts';
import { ArchiveError } from '../../src/errors/errors.ts';

const T0 = new Date('2026-11-24T03:30:00.123Z');
const lines = [
  eventLine({ revision: '7', op: 'put', key: Buffer.from([0, 1, 0xff]), value: Buffer.from('x'.repeat(300)), lease: '12345' }, T0),
  eventLine({ revision: '8', op: 'put', key: Buffer.from('/registry/pods/default/a'), value: Buffer.alloc(0) }, T0),
  eventLine({ revision: '8', op: 'delete', key: Buffer.from('/registry/pods/default/b') }, T0),
].join('');

test('the compiled check of an event line agrees with the TypeBox reference (Value.Check) on good lines and on each kind of bad one', () => {
  const good = JSON.parse(lines.split('\n')[0]!) as Record<string, unknown>;
  const docs: unknown[] = [good, { ...good, value: undefined }, { ...good, lease: undefined }, { rev: '9', time: T0.toISOString(), op: 'delete', key: 'L2E=' }, null, [], 'text', 7, {}];
  const bad: Record<string, unknown[]> = {
    rev: ['', '12a', '1'.repeat(21), 12, undefined],
    time: ['2026-11-24 03:30:00Z', '2026-11-24T03:30:00.1234567890Z', '', undefined],
    op: ['PUT', 'get', undefined],
    key: ['not base64!', 'L2E===', 5, undefined],
    value: ['a-b', 'L2E===', 3],
    lease: ['x', '-1', 5],
    extra: ['field'],
  };
  for (const [field, values] of Object.entries(bad)) for (const v of values) docs.push({ ...good, [field]: v });
  for (const doc of docs) assert.equal(isChangeEvent.Check(doc), Value.Check(ChangeEventSchema, doc), JSON.stringify(doc));
  assert.ok(docs.filter((d) => Value.Check(ChangeEventSchema, d)).length >= 4, 'good lines are among them');
});

test('a segment parsed a piece at a time, cut anywhere, gives the events and the errors of the whole text', () => {
  const whole = parseEvents(lines, 'seg');
  assert.equal(whole.length, 3);
  const bad = `${lines}{"rev":"9","op":"put"}\n`;
  const badError = (() => {
    try {
      parseEvents(bad, 'seg');
    } catch (err) {
      return err as Error;
    }
    assert.fail('the bad line was accepted');
  })();
  assert.ok(badError instanceof ArchiveError && /line 4 is not a change event: \/time /.test(badError.message), badError.message);
  for (const size of [1, 2, 3, 7, 64, 300, lines.length]) {
    const pieces = (text: string) => Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));
    const parser = new EventParser('seg');
    for (const p of pieces(lines)) parser.push(p);
    assert.deepEqual(parser.end(), whole, `pieces of ${size}`);
    const failing = new EventParser('seg');
    assert.throws(() => {
      for (const p of pieces(bad)) failing.push(p);
      failing.end();
    }, (err: unknown) => err instanceof ArchiveError && err.message === badError.message);
  }
  // A last line without its newline is a line; an empty line is not.
  assert.equal(parseEvents(lines.slice(0, -1), 'seg').length, 3);
  assert.throws(() => parseEvents(lines.replace('\n', '\n\n'), 'seg'), /line 2 is not JSON/);
  assert.deepEqual(parseEvents('', 'seg'), []);
});
