import { createHash } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import zlib from 'node:zlib';
import type { Logger } from 'pino';
import { createCompressor } from '../archive/compression.ts';
import { DigestStream } from '../archive/digest.ts';
import { ArchiveError, IntegrityError, rootCause } from '../errors/errors.ts';
import type { ManifestSigner } from '../signing/trust.ts';
import { formatSegmentId, segmentDataKey, segmentManifestKey, segmentSignatureKey } from '../store/layout.ts';
import type { BackupStore } from '../store/store.ts';
import { EventParser, type ChangeEvent } from './format.ts';
import { SEGMENT_FORMAT, SEGMENT_FORMAT_VERSION, segmentManifestJson, type SegmentManifest, type TrustedSegment } from './manifest.ts';

/** The events of one segment, as the capture buffered them: JSON lines (./format.ts). */
export interface SegmentBatch {
  lines: Buffer[];
  plainBytes: number;
  events: number;
  firstRevision: string;
  lastRevision: string;
  firstTime: Date;
  lastTime: Date;
}

export interface CommitDeps {
  store: BackupStore;
  encrypt: (recipients: readonly string[]) => Transform;
  signer: ManifestSigner | undefined;
  now: () => Date;
  log: Logger;
  /** Throws unless this process may still write the change log (the leader fence); asked right before the manifest is written. */
  fence?: () => void;
}

export interface CommitSettings {
  cluster: string;
  node: string;
  recipients: readonly string[];
  level: number;
}

/**
 * Stores one segment as a backup is stored (../backup/run.ts): the data object first
 * (JSON lines → zstd → age), its size checked against what was written, then the signature,
 * then the manifest, which commits it. On any failure nothing is committed: the manifest and
 * signature are deleted if their puts were tried, then the data.
 */
export async function commitSegment(deps: CommitDeps, settings: CommitSettings, batch: SegmentBatch, link: { previous?: TrustedSegment | undefined; gap?: { from: string; to: string } | undefined }): Promise<TrustedSegment> {
  const { store, log } = deps;
  const id = formatSegmentId(batch.firstRevision, batch.lastRevision);
  const key = segmentDataKey(settings.cluster, id);
  const stored = new DigestStream();
  const compressor = createCompressor({ algorithm: 'zstd', level: settings.level })!;
  let dataTried = false;
  let manifestTried = false;
  try {
    dataTried = true;
    const [produced, put] = await Promise.allSettled([pipeline([Readable.from(batch.lines), compressor, deps.encrypt(settings.recipients), stored]), store.put(key, stored, { retain: true })]);
    if (produced.status === 'rejected' || put.status === 'rejected') throw rootCause([produced, put]);
    const object = await store.stat(key);
    if (!object || object.size !== stored.bytes || put.value.size !== stored.bytes) {
      throw new IntegrityError(`stored change segment ${key} is ${object?.size ?? 'missing'} bytes, expected ${stored.bytes}`);
    }
    const manifest: SegmentManifest = {
      format: SEGMENT_FORMAT,
      version: SEGMENT_FORMAT_VERSION,
      segmentId: id,
      cluster: settings.cluster,
      node: settings.node,
      createdAt: deps.now().toISOString(),
      firstRevision: batch.firstRevision,
      lastRevision: batch.lastRevision,
      firstTime: batch.firstTime.toISOString(),
      lastTime: batch.lastTime.toISOString(),
      events: batch.events,
      data: { key, size: stored.bytes, sha256: stored.digest(), plainBytes: batch.plainBytes, compression: { algorithm: 'zstd', level: settings.level }, encryption: { format: 'age', recipients: [...settings.recipients] } },
      ...(link.previous ? { previous: { segmentId: link.previous.manifest.segmentId, sha256: link.previous.sha256 } } : {}),
      ...(link.gap ? { gap: link.gap } : {}),
    };
    const bytes = Buffer.from(segmentManifestJson(manifest));
    deps.fence?.();
    manifestTried = true;
    if (deps.signer) await store.put(segmentSignatureKey(settings.cluster, id), Readable.from([deps.signer.sign(bytes)]), { retain: true });
    await store.put(segmentManifestKey(settings.cluster, id), Readable.from([bytes]), { retain: true });
    return { manifest, sha256: createHash('sha256').update(bytes).digest('hex'), verdict: deps.signer ? { signed: true, keyId: deps.signer.keyId } : { signed: false } };
  } catch (err) {
    const keys = [...(manifestTried ? [segmentManifestKey(settings.cluster, id), segmentSignatureKey(settings.cluster, id)] : []), ...(dataTried ? [key] : [])];
    for (const k of keys) {
      try {
        await store.delete(k);
      } catch (deleteErr) {
        log.error({ key: k, err: String(deleteErr) }, 'could not delete part of the failed change segment; it is left uncommitted');
        break;
      }
    }
    throw err;
  }
}

/**
 * The events of a committed segment: its data object is checked against the manifest's size and
 * sha256 (IntegrityError) before a line is parsed, then decrypted (age authenticates every
 * chunk), decompressed a zstd frame at a time (see zstdFrames) and parsed a piece at a time. A
 * segment is at most changes.maxSegmentBytes of lines, so its events are returned whole.
 */
export async function readSegmentEvents(deps: { store: BackupStore; decrypt: (identities: readonly string[]) => Transform }, manifest: SegmentManifest, identities: readonly string[]): Promise<ChangeEvent[]> {
  const digest = new DigestStream();
  const chunks: Buffer[] = [];
  await pipeline(await deps.store.get(manifest.data.key), digest, collect(chunks));
  const sha = digest.digest();
  if (digest.bytes !== manifest.data.size || sha !== manifest.data.sha256) {
    throw new IntegrityError(`change segment ${manifest.data.key} is ${digest.bytes} bytes with sha256 ${sha}, but its manifest says ${manifest.data.size} bytes with sha256 ${manifest.data.sha256}: it was changed`);
  }
  const compressed: Buffer[] = [];
  await pipeline(Readable.from(chunks), deps.decrypt(identities), collect(compressed));
  const what = `change segment ${manifest.segmentId}`;
  const parser = new EventParser(what);
  const decoder = new StringDecoder('utf8');
  for (const frame of zstdFrames(Buffer.concat(compressed), what)) {
    // Pieces of 64 KiB: fewer hand-offs than zlib's 16 KiB, and strings small enough for V8's regular heap.
    await pipeline(Readable.from([frame]), zlib.createZstdDecompress({ chunkSize: PLAIN_PIECE }), async (source: AsyncIterable<Buffer>) => {
      for await (const piece of source) parser.push(decoder.write(piece));
    });
  }
  parser.push(decoder.end());
  const events = parser.end();
  if (events.length !== manifest.events || events[0]?.rev !== manifest.firstRevision || events.at(-1)?.rev !== manifest.lastRevision) {
    throw new IntegrityError(`change segment ${manifest.segmentId} holds ${events.length} events (${events[0]?.rev}-${events.at(-1)?.rev}), but its manifest says ${manifest.events} (${manifest.firstRevision}-${manifest.lastRevision})`);
  }
  return events;
}

const PLAIN_PIECE = 64 << 10;
const ZSTD_MAGIC = 0xfd2fb528;

/**
 * The zstd frames of `data` (RFC 8878), each whole; skippable frames are left out. Node's zstd
 * decoder, given several frames in one write, stops after the first and drops the rest, or
 * closes before its end (nodejs/node#64741), and zlib's streaming compressor ends most of what
 * it writes with a second, empty frame: so each frame is decompressed on its own.
 */
export function zstdFrames(data: Buffer, what: string): Buffer[] {
  const frames: Buffer[] = [];
  let at = 0;
  const need = (bytes: number) => {
    if (at + bytes > data.length) throw new ArchiveError(`${what} does not decompress: its zstd frame at byte ${at} is cut short`);
  };
  while (at < data.length) {
    need(4);
    const magic = data.readUInt32LE(at);
    if (magic >>> 4 === 0x184d2a5) {
      need(8);
      const skip = 8 + data.readUInt32LE(at + 4);
      need(skip);
      at += skip;
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw new ArchiveError(`${what} does not decompress: no zstd frame at byte ${at}`);
    const start = at;
    need(5);
    const descriptor = data[at + 4]!;
    const singleSegment = (descriptor >> 5) & 1;
    const contentSizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6]!;
    const dictionaryBytes = [0, 1, 2, 4][descriptor & 3]!;
    const header = 5 + (singleSegment ? 0 : 1) + dictionaryBytes + contentSizeBytes;
    need(header);
    at += header;
    for (let last = false; !last; ) {
      need(3);
      const block = data.readUIntLE(at, 3);
      last = (block & 1) === 1;
      const type = (block >> 1) & 3;
      if (type === 3) throw new ArchiveError(`${what} does not decompress: a zstd block of the reserved type at byte ${at}`);
      const size = 3 + (type === 1 ? 1 : block >>> 3); // an RLE block holds its one byte
      need(size);
      at += size;
    }
    const checksum = descriptor & 4 ? 4 : 0;
    need(checksum);
    at += checksum;
    frames.push(data.subarray(start, at));
  }
  return frames;
}

function collect(into: Buffer[]): (source: AsyncIterable<Buffer>) => Promise<void> {
  return async (source) => {
    for await (const chunk of source) into.push(chunk);
  };
}
