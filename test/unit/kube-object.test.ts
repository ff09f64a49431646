import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { KubeObjectError } from '../../src/errors/errors.ts';
import { decodeConfigMap } from '../../src/kit/kube-object.ts';
import { bytesField, CLUSTER_CONFIGURATION, configMapMessage, MAGIC, storedConfigMap, tag, varint, varintField } from '../support/kube-proto.ts';

/** kubeadm-config encoded by Kubernetes' own serializers (see the fixture's `about`). */
const real = JSON.parse(readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/kubeadm-config-configmap.json'), 'utf8')) as { clusterConfiguration: string; protobufHex: string; jsonHex: string };

/** Asserts that decoding fails with a KubeObjectError of `problem` whose message matches `re`. */
function rejects(value: Buffer, problem: KubeObjectError['problem'], re: RegExp): void {
  assert.throws(() => decodeConfigMap(value), (err: unknown) => {
    assert.ok(err instanceof KubeObjectError, `not a KubeObjectError: ${String(err)}`);
    assert.equal(err.code, 'KUBE_OBJECT_UNREADABLE');
    assert.equal(err.problem, problem, err.message);
    assert.match(err.message, re);
    return true;
  });
}

/** magic + runtime.Unknown built from the given fields. */
const unknown = (...fields: Buffer[]) => Buffer.concat([MAGIC, ...fields]);
const typeMeta = (kind = 'ConfigMap') => bytesField(1, Buffer.concat([bytesField(1, 'v1'), bytesField(2, kind)]));

test('a protobuf ConfigMap as the apiserver stores it decodes: type meta, metadata, data', () => {
  const value = storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION, other: 'x' } });
  const cm = decodeConfigMap(value);
  assert.equal(cm.encoding, 'protobuf');
  assert.equal(cm.apiVersion, 'v1');
  assert.equal(cm.name, 'kubeadm-config');
  assert.equal(cm.namespace, 'kube-system');
  assert.deepEqual([...cm.data], [['ClusterConfiguration', CLUSTER_CONFIGURATION], ['other', 'x']]);
  assert.equal(cm.binaryData.size, 0);
  assert.equal(cm.immutable, false);
});

test('values written by Kubernetes\' own protobuf and JSON serializers decode to the ClusterConfiguration they hold', () => {
  for (const [hex, encoding] of [[real.protobufHex, 'protobuf'], [real.jsonHex, 'json']] as const) {
    const cm = decodeConfigMap(Buffer.from(hex, 'hex'));
    assert.equal(cm.encoding, encoding);
    assert.equal(cm.apiVersion, 'v1');
    assert.deepEqual([cm.name, cm.namespace], ['kubeadm-config', 'kube-system']);
    assert.deepEqual([...cm.data.keys()], ['ClusterConfiguration']);
    assert.equal(cm.data.get('ClusterConfiguration'), real.clusterConfiguration);
    assert.match(real.clusterConfiguration, /^kind: ClusterConfiguration$/m);
  }
  // The real protobuf value has what the test encoder leaves out or adds: it is a separate witness.
  const pb = Buffer.from(real.protobufHex, 'hex');
  assert.ok(pb.subarray(0, 4).equals(MAGIC));
  assert.notDeepEqual(pb, storedConfigMap({ data: { ClusterConfiguration: real.clusterConfiguration } }));
});

test('without type meta, with binaryData, immutable, empty values and unknown fields of every wire type', () => {
  const extra = Buffer.concat([varintField(9, 300), tag(10, 1), Buffer.alloc(8, 7), tag(11, 5), Buffer.alloc(4, 9), bytesField(12, 'later')]);
  const raw = Buffer.concat([configMapMessage({ data: { a: '', 'b.yaml': 'é ✓ \u{1F6A2}' }, binaryData: { bin: Buffer.from([0, 255, 1]) }, immutable: true }), extra]);
  const cm = decodeConfigMap(unknown(bytesField(2, raw), extra));
  assert.equal(cm.apiVersion, undefined);
  assert.deepEqual(Object.fromEntries(cm.data), { a: '', 'b.yaml': 'é ✓ \u{1F6A2}' });
  assert.deepEqual(cm.binaryData.get('bin'), Buffer.from([0, 255, 1]));
  assert.equal(cm.immutable, true);
  assert.equal(decodeConfigMap(storedConfigMap({ noTypeMeta: true, data: { k: 'v' } })).data.get('k'), 'v');
});

test('a data key written twice keeps the last value, as protobuf maps do; a key named __proto__ is just a key', () => {
  const entry = (k: string, v: string) => bytesField(2, Buffer.concat([bytesField(1, k), bytesField(2, v)]));
  const cm = decodeConfigMap(unknown(typeMeta(), bytesField(2, Buffer.concat([entry('k', 'first'), entry('k', 'second'), entry('__proto__', 'p')]))));
  assert.equal(cm.data.get('k'), 'second');
  assert.equal(cm.data.get('__proto__'), 'p');
});

test('a JSON value (--storage-media-type=application/json) decodes too', () => {
  const doc = { kind: 'ConfigMap', apiVersion: 'v1', metadata: { name: 'kubeadm-config', namespace: 'kube-system', uid: 'u' }, data: { ClusterConfiguration: CLUSTER_CONFIGURATION }, binaryData: { b: Buffer.from('hi').toString('base64') } };
  const cm = decodeConfigMap(Buffer.from(`${JSON.stringify(doc)}\n`));
  assert.equal(cm.encoding, 'json');
  assert.equal(cm.name, 'kubeadm-config');
  assert.equal(cm.data.get('ClusterConfiguration'), CLUSTER_CONFIGURATION);
  assert.deepEqual(cm.binaryData.get('b'), Buffer.from('hi'));
  rejects(Buffer.from('{"kind":"ConfigMap","data":{"a":1}}'), 'malformed', /data\["a"\] is not a string/);
  rejects(Buffer.from('{"kind":"Secret","data":{}}'), 'malformed', /holds a "Secret", not a ConfigMap/);
  rejects(Buffer.from('{"kind":"ConfigMap","data":'), 'malformed', /not valid JSON/);
  rejects(Buffer.from('{"binaryData":{"b":"no!"}}'), 'malformed', /binaryData\["b"\] is not base64/);
  rejects(Buffer.from('{"metadata":[]}'), 'malformed', /metadata is not an object/);
  rejects(Buffer.from([0x7b, 0xff, 0x7d]), 'malformed', /not valid UTF-8/);
});

test('a value encrypted at rest says so and names the provider, and is not called corrupt', () => {
  rejects(Buffer.concat([Buffer.from('k8s:enc:aescbc:v1:key1:'), Buffer.from([0x8a, 0x01, 0xfe, 0x00])]), 'encrypted-at-rest', /encrypted at rest by the kube-apiserver \(k8s:enc:aescbc:v1:key1\)/);
  rejects(Buffer.from('k8s:enc:kms:v2:provider-one:\x00\x01'), 'encrypted-at-rest', /k8s:enc:kms:v2:provider-one/);
  rejects(Buffer.from('k8s:enc:\x00\x01'), 'encrypted-at-rest', /k8s:enc:\.\.\./);
});

test('another kind, another apiVersion, no raw object, an encoding Lifeboat does not read', () => {
  rejects(storedConfigMap({ kind: 'Secret' }), 'malformed', /holds a "Secret", not a ConfigMap/);
  rejects(storedConfigMap({ apiVersion: 'v2' }), 'malformed', /apiVersion "v2", not v1/);
  rejects(unknown(typeMeta()), 'malformed', /no raw object/);
  rejects(unknown(typeMeta(), bytesField(2, configMapMessage({})), bytesField(3, 'gzip')), 'unsupported', /content encoding "gzip"/);
  rejects(unknown(typeMeta(), bytesField(2, configMapMessage({})), bytesField(4, 'application/json')), 'unsupported', /content type "application\/json"/);
  rejects(Buffer.alloc(0), 'malformed', /empty/);
  rejects(Buffer.from('\x00\x01garbage'), 'malformed', /neither the protobuf magic/);
});

test('every truncation inside the raw object is reported as truncated', () => {
  const value = storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } });
  const rawField = bytesField(2, configMapMessage({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION } }));
  const rawStart = value.indexOf(rawField);
  assert.ok(rawStart > 0);
  for (let cut = rawStart + 1; cut < rawStart + rawField.length; cut++) {
    rejects(value.subarray(0, cut), 'malformed', /truncated/);
  }
});

test('truncated varints, bad wire types, field 0, overlong varints, wrong wire types and bad UTF-8 are named, with their offset', () => {
  rejects(unknown(Buffer.from([0x80])), 'malformed', /truncated varint \(a field tag\), at byte 4 in runtime\.Unknown/);
  rejects(unknown(typeMeta(), Buffer.from([0x12, 0xff])), 'malformed', /truncated varint \(the length of runtime\.Unknown\.raw/);
  rejects(unknown(tag(5, 3)), 'malformed', /field 5 has bad wire type 3 \(start-group\).*at byte 4/);
  rejects(unknown(tag(5, 6)), 'malformed', /bad wire type 6/);
  rejects(unknown(tag(5, 4)), 'malformed', /bad wire type 4 \(end-group\)/);
  rejects(unknown(Buffer.from([0x02, 0x00])), 'malformed', /field number 0/);
  rejects(unknown(tag(9, 0), Buffer.alloc(9, 0xff), Buffer.from([0x02])), 'malformed', /varint longer than 64 bits/);
  rejects(unknown(varint(2n ** 40n)), 'malformed', /field number \d+ \(more than 2\^29 - 1\)/);
  rejects(unknown(tag(2, 0), varint(1)), 'malformed', /runtime\.Unknown\.raw \(v1\.ConfigMap\) \(field 2\) has wire type 0 \(varint\), expected 2 \(length-delimited\)/);
  rejects(unknown(tag(9, 1), Buffer.alloc(5)), 'malformed', /truncated: field 9 \(fixed64\) needs 8 bytes, but only 5 are left/);
  rejects(unknown(bytesField(2, Buffer.concat([tag(4, 2), varint(1), Buffer.from('x')]))), 'malformed', /immutable \(field 4\) has wire type 2/);
  const badUtf8 = bytesField(2, Buffer.concat([bytesField(1, 'k'), bytesField(2, Buffer.from([0xc3, 0x28]))]));
  rejects(unknown(typeMeta(), bytesField(2, badUtf8)), 'malformed', /value of "k" \(field 2\) is not valid UTF-8.*in ConfigMap\.data entry/);
  // The offset is that of the whole value: the raw field's tag is at 4 + typeMeta's length.
  const tm = typeMeta();
  rejects(unknown(tm, tag(2, 2), varint(50), Buffer.alloc(3)), 'malformed', new RegExp(`says 50 bytes, but only 3 are left, at byte ${4 + tm.length + 1} in runtime\\.Unknown`));
});

test('property: random bytes, random protobuf after the magic and mutated real values never throw anything but a KubeObjectError', () => {
  const good = storedConfigMap({ data: { ClusterConfiguration: CLUSTER_CONFIGURATION.slice(0, 200) }, binaryData: { b: Buffer.from([1, 2]) }, immutable: false });
  const check = (bytes: Uint8Array) => {
    try {
      const cm = decodeConfigMap(bytes);
      assert.ok(cm.data instanceof Map && cm.binaryData instanceof Map);
    } catch (err) {
      if (!(err instanceof KubeObjectError)) throw err;
      assert.ok(['malformed', 'unsupported', 'encrypted-at-rest'].includes(err.problem));
      assert.ok(err.message.length > 0);
    }
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { numRuns: 2000 });
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => check(Buffer.concat([MAGIC, b]))), { numRuns: 3000 });
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), fc.nat(good.length), (edits, cut) => {
      const bytes = Buffer.from(good);
      for (const [at, b] of edits) bytes[at] = b;
      check(bytes.subarray(0, Math.max(cut, 1)));
    }),
    { numRuns: 3000 },
  );
  const realPb = Buffer.from(real.protobufHex, 'hex');
  fc.assert(
    fc.property(fc.nat(realPb.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(realPb.length), (at, b, cut) => {
      const bytes = Buffer.from(realPb);
      bytes[at] = b;
      check(bytes.subarray(0, Math.max(cut, 1)));
    }),
    { numRuns: 3000 },
  );
  fc.assert(fc.property(fc.jsonValue(), (v) => check(Buffer.from(`{"data":${JSON.stringify(v)}}`))), { numRuns: 500 });
});
