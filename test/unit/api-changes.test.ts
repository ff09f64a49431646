import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { commitSegment, type SegmentBatch } from '../../src/changes/commit.ts';
import { eventLine, type RawEvent } from '../../src/changes/format.ts';
import type { TrustedSegment } from '../../src/changes/manifest.ts';
import { createDecryptStream, createEncryptStream, generateIdentity } from '../../src/crypto/age.ts';
import { changesApi } from '../../src/daemon/api-deps.ts';
import { segmentManifestKey } from '../../src/store/layout.ts';
import { apiTestbed, bearer, type ApiTestbed, type StartedApi } from '../support/api-testbed.ts';
import { quietLog } from '../support/lifeboat.ts';
import { MemoryStore } from '../support/memory-store.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

const key = await generateIdentity();
const T0 = Date.parse('2026-11-24T03:30:00.000Z');
const at = (s: number) => new Date(T0 + s * 1000);
let bed: ApiTestbed | undefined;
let store: MemoryStore;

const put = (revision: number, k: string): RawEvent => ({ revision: String(revision), op: 'put', key: Buffer.from(k), value: Buffer.from(`value of ${k}`) });
const del = (revision: number, k: string): RawEvent => ({ revision: String(revision), op: 'delete', key: Buffer.from(k) });

/** One segment of `events`, the i-th received at second `second + i`. */
function batch(events: RawEvent[], second: number): SegmentBatch {
  const lines = events.map((e, i) => eventLine(e, at(second + i)));
  return { lines, plainBytes: lines.reduce((n, l) => n + l.length, 0), events: events.length, firstRevision: events[0]!.revision, lastRevision: events.at(-1)!.revision, firstTime: at(second), lastTime: at(second + events.length - 1) };
}

before(async () => {
  bed = await apiTestbed('lifeboat-api-changes-');
  store = new MemoryStore();
  const deps = { store, encrypt: createEncryptStream, signer: TEST_SIGNER, now: () => at(0), log: quietLog };
  const settings = { cluster: 'test', node: 'node-a', recipients: [key.recipient], level: 3 };
  const a = await commitSegment(deps, settings, batch([put(11, '/registry/namespaces/team-a'), put(12, '/registry/pods/team-a/web'), del(13, '/registry/pods/team-a/old')], 0), {});
  // Revision 14 is a transaction of three events; 15-19 were compacted away before capture.
  const b: TrustedSegment = await commitSegment(deps, settings, batch([put(14, '/registry/pods/team-a/x'), put(14, '/registry/pods/team-a/y'), del(14, '/registry/pods/team-a/web')], 60), { previous: a });
  await commitSegment(deps, settings, batch([del(20, '/registry/namespaces/team-a'), put(21, '/registry/namespaces/team-b')], 120), { previous: b, gap: { from: '15', to: '19' } });
});

after(async () => {
  await bed?.close();
});

async function started(options: { identities?: string[] } = { identities: [key.identity] }): Promise<StartedApi> {
  const s = await bed!.start();
  s.fakes.deps.changes = changesApi({ store, trust: TEST_TRUST, decrypt: createDecryptStream }, 'test', async () => options.identities);
  return s;
}

const get = (s: StartedApi, url: string, role: 'viewer' | 'operator' = 'viewer') => s.servers.api.inject({ method: 'GET', url, headers: bearer(role) });

interface Page {
  events: { revision: string; op: string; key: string; time: string; valueBytes?: number }[];
  gaps: unknown[];
  segments: { read: number; total: number };
  next?: string;
}

test('GET /v1/changes: the whole log for a viewer, oldest first, with its gap; the filters of `lifeboat changes log`', async () => {
  const s = await started();
  const all = await get(s, '/v1/changes');
  assert.equal(all.statusCode, 200, all.body);
  const page = all.json<Page>();
  assert.deepEqual(page.events.map((e) => `${e.revision} ${e.op} ${e.key}`), [
    '11 put /registry/namespaces/team-a',
    '12 put /registry/pods/team-a/web',
    '13 delete /registry/pods/team-a/old',
    '14 put /registry/pods/team-a/x',
    '14 put /registry/pods/team-a/y',
    '14 delete /registry/pods/team-a/web',
    '20 delete /registry/namespaces/team-a',
    '21 put /registry/namespaces/team-b',
  ]);
  assert.equal(page.events[0]!.valueBytes, 'value of /registry/namespaces/team-a'.length);
  assert.equal(page.events[0]!.time, at(0).toISOString());
  assert.deepEqual(page.gaps, [{ from: '15', to: '19', before: '00000000000000000020-00000000000000000021' }]);
  assert.deepEqual(page.segments, { read: 3, total: 3 });
  assert.equal(page.next, undefined);

  const deletes = (await get(s, '/v1/changes?prefix=/registry/namespaces/&deleted=true')).json<Page>();
  assert.deepEqual(deletes.events.map((e) => `${e.revision} ${e.key}`), ['20 /registry/namespaces/team-a']);

  // The time filters skip the segments outside them without decrypting them.
  const window = (await get(s, `/v1/changes?since=${encodeURIComponent(at(60).toISOString())}&until=${encodeURIComponent(at(62).toISOString())}`)).json<Page>();
  assert.deepEqual(window.events.map((e) => e.revision), ['14', '14']);
  assert.deepEqual(window.segments, { read: 1, total: 3 });
});

test('GET /v1/changes pages by revision and never splits a transaction', async () => {
  const s = await started();
  const first = (await get(s, '/v1/changes?limit=4')).json<Page>();
  assert.deepEqual(first.events.map((e) => e.revision), ['11', '12', '13', '14', '14', '14'], 'revision 14 is whole');
  assert.equal(first.next, '14');
  const second = (await get(s, `/v1/changes?limit=4&after=${first.next}`)).json<Page>();
  assert.deepEqual(second.events.map((e) => e.revision), ['20', '21']);
  assert.equal(second.next, undefined, 'nothing more');
  assert.equal(second.segments.read, 1, 'the segments before `after` are not decrypted');
  const exact = (await get(s, '/v1/changes?limit=2&after=14')).json<Page>();
  assert.equal(exact.next, undefined, 'a page that ends with the log has no next');
});

test('GET /v1/changes: bad queries are 400 naming the field; no identity or a broken chain is an error, never a partial log', async () => {
  const s = await started();
  for (const [query, field] of [['limit=0', '/query/limit'], ['after=x', '/query/after'], ['since=yesterday', '/query/since'], ['deleted=maybe', '/query/deleted'], ['color=red', '/query/color']] as const) {
    const res = await get(s, `/v1/changes?${query}`);
    assert.equal(res.statusCode, 400, `${query}: ${res.body}`);
    assert.equal(res.json<{ field: string }>().field, field, query);
  }
  const noKey = await get(await started({}), '/v1/changes');
  assert.equal(noKey.statusCode, 400, noKey.body);
  assert.deepEqual([noKey.json<{ code: string }>().code, noKey.json<{ field: string }>().field], ['CONFIG_INVALID', '/encryption/identityFile']);
  assert.equal((await s.servers.api.inject({ method: 'GET', url: '/v1/changes' })).statusCode, 401, 'credentials are needed');

  // The middle segment's manifest is edited: its signature fails, and the whole log is refused.
  const middle = segmentManifestKey('test', '00000000000000000014-00000000000000000014');
  const saved = store.objects.get(middle)!;
  await store.put(middle, Readable.from([Buffer.from(saved.body.toString().replace('"node-a"', '"node-x"'))]));
  try {
    const broken = await get(s, '/v1/changes');
    assert.equal(broken.statusCode, 500, broken.body);
    assert.equal(broken.json<{ code: string }>().code, 'SIGNATURE_INVALID');
    assert.doesNotMatch(broken.body, /team-b/);
  } finally {
    store.objects.set(middle, saved);
  }
  assert.equal((await get(s, '/v1/changes')).statusCode, 200);
});

test('the OpenAPI document names the route listChanges', async () => {
  const s = await started();
  const doc = (await s.servers.api.inject({ method: 'GET', url: '/openapi.json' })).json<{ paths: Record<string, Record<string, { operationId?: string; parameters?: { name: string }[] }>> }>();
  const op = doc.paths['/v1/changes']?.get;
  assert.equal(op?.operationId, 'listChanges');
  assert.deepEqual(op?.parameters?.map((p) => p.name).sort(), ['after', 'deleted', 'limit', 'prefix', 'since', 'until']);
});
