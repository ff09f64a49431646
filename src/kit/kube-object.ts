import { KubeObjectError } from '../errors/errors.ts';

/**
 * Decodes a ConfigMap as the kube-apiserver stores it in etcd, without Kubernetes' libraries.
 *
 * The default storage encoding (k8s.io/apimachinery/pkg/runtime/serializer/protobuf) is the four
 * magic bytes `k8s\0` followed by a protobuf `runtime.Unknown`:
 *
 *   1: typeMeta {1: apiVersion, 2: kind}   2: raw (the object)   3: contentEncoding   4: contentType
 *
 * where `raw` is a `v1.ConfigMap`: 1: metadata (ObjectMeta; its name 1 and namespace 3 are read),
 * 2: data (map<string,string>, i.e. repeated {1: key, 2: value}), 3: binaryData
 * (map<string,bytes>), 4: immutable. An apiserver run with `--storage-media-type=application/json`
 * stores the object as JSON instead. A value that starts with `k8s:enc:` was encrypted at rest by
 * the apiserver's EncryptionConfiguration and cannot be read without its key.
 *
 * Every malformed input ends in a KubeObjectError naming what is wrong and, for protobuf, the byte
 * offset in the value where it was found. Each step of the reader consumes at least one byte, so
 * no input makes it loop forever.
 */
export interface ConfigMapValue {
  /** How the apiserver stored it. */
  encoding: 'protobuf' | 'json';
  /** From the type meta when the value carries one (`v1`). */
  apiVersion: string | undefined;
  name: string | undefined;
  namespace: string | undefined;
  data: Map<string, string>;
  binaryData: Map<string, Buffer>;
  immutable: boolean;
}

/** The magic number of kube-apiserver's protobuf storage encoding. */
export const PROTOBUF_PREFIX = Buffer.from([0x6b, 0x38, 0x73, 0x00]);
/** The prefix of a value encrypted at rest, followed by `<provider>:<version>:<key name>:`. */
export const ENCRYPTED_PREFIX = 'k8s:enc:';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const WIRE = { varint: 0, fixed64: 1, bytes: 2, startGroup: 3, endGroup: 4, fixed32: 5 } as const;
const WIRE_NAMES = ['varint', 'fixed64', 'length-delimited', 'start-group', 'end-group', 'fixed32', 'wire type 6', 'wire type 7'];

export function decodeConfigMap(value: Uint8Array): ConfigMapValue {
  const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (bytes.length === 0) throw malformed('the value is empty');
  if (bytes.subarray(0, ENCRYPTED_PREFIX.length).toString('latin1') === ENCRYPTED_PREFIX) {
    throw new KubeObjectError('encrypted-at-rest', `the value is encrypted at rest by the kube-apiserver (${encryptionProvider(bytes)}); only the apiserver's key decrypts it`);
  }
  if (bytes.subarray(0, PROTOBUF_PREFIX.length).equals(PROTOBUF_PREFIX)) return decodeProtobuf(bytes);
  if (bytes[0] === 0x7b /* { */) return decodeJson(bytes);
  throw malformed(`the value starts with ${JSON.stringify(bytes.subarray(0, 8).toString('latin1'))}: neither the protobuf magic "k8s\\u0000", nor JSON, nor "${ENCRYPTED_PREFIX}"`);
}

/** `aescbc:v1:key1` of `k8s:enc:aescbc:v1:key1:<ciphertext>`, as far as it is printable. */
function encryptionProvider(bytes: Buffer): string {
  const rest = bytes.subarray(ENCRYPTED_PREFIX.length, ENCRYPTED_PREFIX.length + 80).toString('latin1');
  const fields = rest.split(':').slice(0, 3);
  const printable = fields.every((f) => /^[\w.-]{1,40}$/.test(f)) && fields.length === 3;
  return printable ? `${ENCRYPTED_PREFIX}${fields.join(':')}` : `${ENCRYPTED_PREFIX}...`;
}

function decodeProtobuf(bytes: Buffer): ConfigMapValue {
  const unknown = new ProtoReader(bytes.subarray(PROTOBUF_PREFIX.length), PROTOBUF_PREFIX.length, 'runtime.Unknown');
  let apiVersion: string | undefined;
  let kind: string | undefined;
  let raw: ProtoReader | undefined;
  let contentEncoding = '';
  let contentType = '';
  for (let f = unknown.field(); f; f = unknown.field()) {
    if (f.number === 1) {
      const typeMeta = unknown.message(f, 'runtime.Unknown.typeMeta (runtime.TypeMeta)');
      for (let t = typeMeta.field(); t; t = typeMeta.field()) {
        if (t.number === 1) apiVersion = typeMeta.string(t, 'apiVersion');
        else if (t.number === 2) kind = typeMeta.string(t, 'kind');
        else typeMeta.skip(t);
      }
    } else if (f.number === 2) raw = unknown.message(f, 'runtime.Unknown.raw (v1.ConfigMap)');
    else if (f.number === 3) contentEncoding = unknown.string(f, 'contentEncoding');
    else if (f.number === 4) contentType = unknown.string(f, 'contentType');
    else unknown.skip(f);
  }
  if (kind !== undefined && kind !== 'ConfigMap') throw malformed(`the value holds a ${JSON.stringify(kind)}, not a ConfigMap`);
  if (apiVersion !== undefined && apiVersion !== '' && apiVersion !== 'v1') throw malformed(`the ConfigMap has apiVersion ${JSON.stringify(apiVersion)}, not v1`);
  if (contentEncoding !== '') throw new KubeObjectError('unsupported', `the value has content encoding ${JSON.stringify(contentEncoding)}; only unencoded objects are read`);
  if (contentType !== '' && contentType !== 'application/vnd.kubernetes.protobuf') {
    throw new KubeObjectError('unsupported', `the value has content type ${JSON.stringify(contentType)}; only application/vnd.kubernetes.protobuf is read`);
  }
  if (!raw) throw malformed('runtime.Unknown has no raw object (field 2)');

  const result: ConfigMapValue = { encoding: 'protobuf', apiVersion, name: undefined, namespace: undefined, data: new Map(), binaryData: new Map(), immutable: false };
  for (let f = raw.field(); f; f = raw.field()) {
    if (f.number === 1) {
      const meta = raw.message(f, 'ConfigMap.metadata (ObjectMeta)');
      for (let m = meta.field(); m; m = meta.field()) {
        if (m.number === 1) result.name = meta.string(m, 'name');
        else if (m.number === 3) result.namespace = meta.string(m, 'namespace');
        else meta.skip(m);
      }
    } else if (f.number === 2 || f.number === 3) {
      const binary = f.number === 3;
      const entry = raw.message(f, binary ? 'ConfigMap.binaryData entry' : 'ConfigMap.data entry');
      let key = '';
      let text = '';
      let blob = Buffer.alloc(0);
      for (let e = entry.field(); e; e = entry.field()) {
        if (e.number === 1) key = entry.string(e, 'key');
        else if (e.number === 2 && binary) blob = Buffer.from(entry.bytes(e, 'value'));
        else if (e.number === 2) text = entry.string(e, `value of ${JSON.stringify(key)}`);
        else entry.skip(e);
      }
      if (binary) result.binaryData.set(key, blob);
      else result.data.set(key, text);
    } else if (f.number === 4) {
      result.immutable = raw.varint(f, 'immutable') !== 0;
    } else raw.skip(f);
  }
  return result;
}

function decodeJson(bytes: Buffer): ConfigMapValue {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw malformed('the JSON value is not valid UTF-8');
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw malformed(`the value is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw malformed('the JSON value is not an object');
  const { kind, apiVersion, metadata, data, binaryData, immutable } = doc;
  if (kind !== undefined && kind !== 'ConfigMap') throw malformed(`the value holds a ${JSON.stringify(kind)}, not a ConfigMap`);
  if (apiVersion !== undefined && apiVersion !== 'v1') throw malformed(`the ConfigMap has apiVersion ${JSON.stringify(apiVersion)}, not v1`);
  const meta = metadata === undefined || metadata === null ? {} : metadata;
  if (!isObject(meta)) throw malformed('metadata is not an object');
  const { name, namespace } = meta;
  if (name !== undefined && typeof name !== 'string') throw malformed('metadata.name is not a string');
  if (namespace !== undefined && typeof namespace !== 'string') throw malformed('metadata.namespace is not a string');
  if (immutable !== undefined && immutable !== null && typeof immutable !== 'boolean') throw malformed('immutable is not a boolean');
  const result: ConfigMapValue = {
    encoding: 'json',
    apiVersion: typeof apiVersion === 'string' ? apiVersion : undefined,
    name,
    namespace,
    data: new Map(),
    binaryData: new Map(),
    immutable: immutable === true,
  };
  for (const [k, v] of entriesOf(data, 'data')) {
    if (typeof v !== 'string') throw malformed(`data[${JSON.stringify(k)}] is not a string`);
    result.data.set(k, v);
  }
  for (const [k, v] of entriesOf(binaryData, 'binaryData')) {
    if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) throw malformed(`binaryData[${JSON.stringify(k)}] is not base64`);
    result.binaryData.set(k, Buffer.from(v, 'base64'));
  }
  return result;
}

function entriesOf(value: unknown, field: string): [string, unknown][] {
  if (value === undefined || value === null) return [];
  if (!isObject(value)) throw malformed(`${field} is not an object`);
  return Object.entries(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function malformed(detail: string): KubeObjectError {
  return new KubeObjectError('malformed', detail);
}

interface Field {
  number: number;
  wire: number;
  /** Offset of the tag in the whole value. */
  at: number;
}

/**
 * A protobuf message: fields one after another, each a varint tag (field number << 3 | wire
 * type) and its payload. `base` is the message's offset in the whole value, for error messages.
 */
class ProtoReader {
  readonly #buf: Buffer;
  readonly #base: number;
  readonly #what: string;
  #pos = 0;

  constructor(buf: Buffer, base: number, what: string) {
    this.#buf = buf;
    this.#base = base;
    this.#what = what;
  }

  /** The next field's tag, or undefined at the end of the message. */
  field(): Field | undefined {
    if (this.#pos >= this.#buf.length) return undefined;
    const at = this.#base + this.#pos;
    const tag = this.#varint('a field tag');
    const wire = tag % 8;
    const number = Math.floor(tag / 8);
    if (number === 0) throw this.#error(at, 'field number 0 (not a valid protobuf field)');
    if (number > 0x1fffffff) throw this.#error(at, `field number ${number} (more than 2^29 - 1)`);
    if (wire === WIRE.startGroup || wire === WIRE.endGroup || wire > WIRE.fixed32) {
      throw this.#error(at, `field ${number} has bad wire type ${wire} (${WIRE_NAMES[wire]}); Kubernetes objects use varint, fixed32, fixed64 and length-delimited only`);
    }
    return { number, wire, at };
  }

  /** Skips a field this decoder does not need. */
  skip(f: Field): void {
    if (f.wire === WIRE.varint) this.#varint(`field ${f.number}`);
    else if (f.wire === WIRE.fixed64) this.#take(8, `field ${f.number} (fixed64)`);
    else if (f.wire === WIRE.fixed32) this.#take(4, `field ${f.number} (fixed32)`);
    else this.#lengthDelimited(f, `field ${f.number}`);
  }

  bytes(f: Field, name: string): Buffer {
    this.#expect(f, WIRE.bytes, name);
    return this.#lengthDelimited(f, name);
  }

  string(f: Field, name: string): string {
    const at = this.#base + this.#pos;
    const bytes = this.bytes(f, name);
    try {
      return utf8.decode(bytes);
    } catch {
      throw this.#error(at, `${name} (field ${f.number}) is not valid UTF-8`);
    }
  }

  /** An embedded message, read with its own reader (offsets stay those of the whole value). */
  message(f: Field, what: string): ProtoReader {
    this.#expect(f, WIRE.bytes, what);
    const bytes = this.#lengthDelimited(f, what);
    return new ProtoReader(bytes, this.#base + this.#pos - bytes.length, what);
  }

  varint(f: Field, name: string): number {
    this.#expect(f, WIRE.varint, name);
    return this.#varint(name);
  }

  #expect(f: Field, wire: number, name: string): void {
    if (f.wire !== wire) {
      throw this.#error(f.at, `${name} (field ${f.number}) has wire type ${f.wire} (${WIRE_NAMES[f.wire]}), expected ${wire} (${WIRE_NAMES[wire]})`);
    }
  }

  #lengthDelimited(f: Field, name: string): Buffer {
    const at = this.#base + this.#pos;
    const length = this.#varint(`the length of ${name}`);
    const left = this.#buf.length - this.#pos;
    if (length > left) throw this.#error(at, `truncated: ${name} (field ${f.number}) says ${length} bytes, but only ${left} are left`);
    return this.#take(length, name);
  }

  #take(n: number, name: string): Buffer {
    const left = this.#buf.length - this.#pos;
    if (n > left) throw this.#error(this.#base + this.#pos, `truncated: ${name} needs ${n} bytes, but only ${left} are left`);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /**
   * A base-128 varint of at most 10 bytes (64 bits). Exact up to 2^53; larger values (never a
   * valid tag or length here) stay larger than any buffer, so they fail the length checks.
   */
  #varint(name: string): number {
    const at = this.#base + this.#pos;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.#pos >= this.#buf.length) throw this.#error(at, `truncated varint (${name})`);
      const b = this.#buf[this.#pos++]!;
      if (i === 9 && b > 1) throw this.#error(at, `varint longer than 64 bits (${name})`);
      value += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return value;
    }
    throw this.#error(at, `varint longer than 10 bytes (${name})`);
  }

  #error(at: number, detail: string): KubeObjectError {
    return malformed(`${detail}, at byte ${at} in ${this.#what}`);
  }
}
