import { createHash } from 'node:crypto';
import { FORMAT, FORMAT_VERSION, SNAPSHOT_ENTRY, type ArchiveManifest, type KitFile } from '../../src/archive/manifest.ts';
import type { KitContent } from '../../src/archive/writer.ts';
import type { BackupStore } from '../../src/store/store.ts';

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** The sha256 (hex) of what `store` holds at `key`, streamed. */
export async function storedSha256(store: Pick<BackupStore, 'get'>, key: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of await store.get(key)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A database and its snapshot file (database + sha256 trailer), as etcd streams it. */
export function fakeSnapshot(db: Buffer): Buffer {
  return Buffer.concat([db, createHash('sha256').update(db).digest()]);
}

export function kitFile(entryPath: string, content: string | Buffer, mode = 0o600): { file: KitFile; content: KitContent } {
  const body = Buffer.isBuffer(content) ? content : Buffer.from(content);
  const entry = `kit/${entryPath.replace(/^\//, '')}`;
  return {
    file: { entry, path: entryPath, role: 'pki', size: body.length, mode, sha256: sha256(body) },
    content: { entry, mode, content: body },
  };
}

export function sampleManifest(dbSize: number, files: KitFile[], id = '20261124T033000.000Z-r42'): ArchiveManifest {
  return {
    format: FORMAT,
    version: FORMAT_VERSION,
    backupId: id,
    cluster: 'test',
    node: 'node-1',
    createdAt: '2026-11-24T03:30:00.000Z',
    tool: { name: 'lifeboat', version: '0.0.0-test' },
    etcd: {
      memberId: '1',
      memberName: 'm1',
      endpoint: 'https://127.0.0.1:2379',
      revision: '42',
      version: '3.5.16',
      dbSize,
      dbSizeInUse: dbSize,
      leaderId: '1',
      raftTerm: '2',
      clusterId: '3',
      members: [{ id: '1', name: 'm1', peerURLs: ['https://127.0.0.1:2380'], clientURLs: ['https://127.0.0.1:2379'], isLearner: false }],
    },
    snapshot: { entry: SNAPSHOT_ENTRY, size: dbSize + 32 },
    kit: { hostRoot: '/', files, missing: [] },
  };
}

export async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

export async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}
