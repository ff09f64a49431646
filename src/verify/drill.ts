import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { StoredManifest } from '../archive/manifest.ts';
import { checkCiphertext, readArchive, type ArchiveReport } from '../archive/reader.ts';
import {
  CancelledError,
  ConfigError,
  IntegrityError,
  LifeboatError,
  ToolError,
} from '../errors/errors.ts';
import { startThrowawayEtcd, THROWAWAY_PEER_URL, type ThrowawayEtcd } from '../etcd/throwaway.ts';
import type { Executor } from '../exec/executor.ts';
import type { BackupStore } from '../store/store.ts';
import { etcd3Probe } from './etcd3-probe.ts';
import { makeScratch, recordEtcd, scratchFiles, sweepScratch } from './scratch.ts';
import { ciphertextDigest } from './verify.ts';

/**
 * A restore drill proves a backup restorable by restoring it:
 *
 * 1. download and decrypt the archive, 2. checking every hash on the way (readArchive) while
 *    the snapshot streams into a private scratch dir (mode 0700) — the archive is read once;
 * 3. `etcdutl snapshot restore` into the scratch dir;
 * 4. start a throwaway etcd (../etcd/throwaway.ts: no TCP port, only unix sockets in a 0700
 *    dir inside the scratch dir) and wait until it has a leader;
 * 5. check its revision against the manifest's, and its key counts at the manifest's revision
 *    against the manifest's `keyCount` and `registryKeyCount` (older manifests lack them: then
 *    keys must exist), and that keys under `/registry/` exist;
 * 6. stop that etcd and remove the whole scratch dir, on success, failure and abort alike.
 *    Should this process be killed outright, the next drill removes what it left (scratch.ts).
 *
 * The throwaway member has its own name, cluster token and unix-socket URLs, so it can never
 * talk to the real cluster, and no other user can talk to it. Disk: about twice the database
 * (the snapshot is deleted once restored, so the peak is the snapshot plus the restored copy)
 * plus etcd's 64 MiB WAL. Memory in this process stays bounded as in readArchive; the throwaway
 * etcd maps the database.
 */
export interface DrillDeps {
  store: BackupStore;
  /** An age decryptor for these identities. */
  decrypt: (identities: readonly string[]) => Transform;
  exec: Executor;
  log: Logger;
  /** Talks to the throwaway etcd at `endpoint`; the etcd3 client unless a test swaps it. */
  connect?: (endpoint: string) => DrillProbe;
}

/** What a drill asks of the throwaway etcd. The etcd3 implementation is ./etcd3-probe.ts. */
export interface DrillProbe {
  status(deadline: Date): Promise<{ revision: string; hasLeader: boolean }>;
  /** Keys at `revision`: all of them, and those under `/registry/`. */
  counts(revision: string, deadline: Date): Promise<{ keyCount: number; registryKeyCount: number }>;
  close(): void;
}

export interface DrillOptions {
  identities: readonly string[];
  /** The etcdutl binary (3.5+). */
  etcdutl: string;
  /** The etcd server binary. */
  etcd: string;
  /** Where the private scratch dir is made; the OS temp dir by default. */
  scratchDir?: string;
  /** How long the throwaway etcd may take to have a leader. */
  startTimeoutSeconds: number;
  signal?: AbortSignal;
  /** More flags for the throwaway etcd. */
  etcdArgs?: readonly string[];
  /** The backup's snapshot, already fetched and checked (a restore's): not read from the store again, and left in place. */
  snapshotFile?: string;
  /** Where the throwaway etcd's sockets go instead of the scratch dir (a short path), and the setting that places it. */
  sockets?: { dir: string; setting: string };
  /**
   * Work on the restored, checked etcd before it is stopped (a replay of the change log), with
   * the throwaway etcd's unix-socket endpoint: the drill's `replay` step.
   */
  replay?: (endpoint: string) => Promise<void>;
}

export type DrillStep = 'archive' | 'restore' | 'start' | 'check' | 'replay' | 'cleanup';

export interface DrillReport {
  backupId: string;
  level: 'drill';
  archive: { key: string; size: number; sha256: string };
  kitFiles: number;
  /** The restored etcd's revision (at least the manifest's). */
  revision: string;
  /** Keys in the restored etcd at the manifest's revision. */
  keyCount: number;
  /** Of those, under `/registry/`. */
  registryKeyCount: number;
  /** From the manifest; the counts are absent in manifests written before they were recorded. */
  expected: { revision: string; keyCount?: number; registryKeyCount?: number };
  /** Seconds per step. */
  /** `replay` only when the drill replayed the change log. */
  timings: Record<Exclude<DrillStep, 'replay'>, number> & { replay?: number };
  durationSeconds: number;
}

/** The throwaway member's name. */
const DRILL_MEMBER = 'drill';
const CALL_TIMEOUT_MS = 5_000;
const REGISTRY = '/registry/';
/** etcd preallocates a 64 MiB WAL segment; with some room for the rest. */
const ETCD_OVERHEAD_BYTES = 128 << 20;

export async function runDrill(deps: DrillDeps, stored: StoredManifest, options: DrillOptions): Promise<DrillReport> {
  const { log } = deps;
  const backupId = stored.backupId;
  const started = performance.now();
  const timings: DrillReport['timings'] = { archive: 0, restore: 0, start: 0, check: 0, cleanup: 0 };
  const connect = deps.connect ?? etcd3Probe;
  const expected = expectedOf(stored);
  const signal = options.signal;
  const checkAbort = () => {
    if (signal?.aborted) throw new CancelledError(`the drill of backup ${backupId} was cancelled`);
  };
  /** Runs one step and logs one line with its duration. */
  const step = async <T>(name: DrillStep, work: () => Promise<T>, fields: (result: T) => Record<string, unknown>, message: string): Promise<T> => {
    checkAbort();
    const t0 = performance.now();
    const result = await work();
    timings[name] = seconds(performance.now() - t0);
    log.info({ phase: `drill-${name}`, backupId, ...fields(result), durationMs: Math.round(performance.now() - t0) }, message);
    return result;
  };

  checkAbort();
  const scratchRoot = options.scratchDir ?? tmpdir();
  await sweepScratch(scratchRoot, log);
  await checkSpace(scratchRoot, stored);
  let dir: string;
  try {
    dir = await makeScratch(scratchRoot);
  } catch (err) {
    throw new ConfigError('/drill/scratchDir', `cannot make a scratch dir in ${scratchRoot}: ${errnoOf(err)}`);
  }
  const files = scratchFiles(dir);
  let etcdPid: number | undefined;
  let etcd: ThrowawayEtcd<DrillProbe> | undefined;
  let report: DrillReport;
  log.info({ phase: 'drill-started', backupId, revision: stored.etcd.revision, dbSize: stored.etcd.dbSize, scratch: dir }, 'restore drill started');

  try {
    // 1 + 2: one read of the archive, every hash checked, the snapshot written as it streams;
    // or the snapshot a restore already fetched and checked.
    const given = options.snapshotFile;
    const archive = given
      ? { ciphertext: { size: stored.archive.size, sha256: stored.archive.sha256 }, kitFiles: stored.kit.files.length }
      : await step(
          'archive',
          () => readAndCheck(deps, stored, options.identities, files.snapshot, signal),
          (r) => ({ bytes: r.ciphertext.size, kitFiles: r.kitFiles, snapshotBytes: r.snapshot.size }),
          'archive decrypted, every hash checked, snapshot written to scratch',
        );

    // 3: etcdutl snapshot restore, as a member of its own.
    await step(
      'restore',
      async () => {
        await restore(deps.exec, options.etcdutl, { snapshotFile: given ?? files.snapshot, dataDir: files.data, peerUrl: THROWAWAY_PEER_URL, backupId }, signal);
        // The restored data dir holds its own copy; this halves the peak disk use.
        if (!given) await rm(files.snapshot, { force: true });
      },
      () => ({ dataDir: files.data }),
      'snapshot restored with etcdutl',
    );

    // 4: the throwaway etcd, until it has a leader.
    etcd = await step(
      'start',
      () =>
        startThrowawayEtcd({
          exec: deps.exec,
          etcd: options.etcd,
          name: DRILL_MEMBER,
          dataDir: files.data,
          logFile: files.log,
          socketDir: options.sockets?.dir ?? files.sockets,
          socketSetting: options.sockets?.setting ?? '/drill/scratchDir',
          ...(options.etcdArgs ? { extraArgs: options.etcdArgs } : {}),
          timeoutSeconds: options.startTimeoutSeconds,
          timeoutSetting: 'drill.startTimeoutSeconds',
          ...(signal ? { signal } : {}),
          started: async (pid) => {
            etcdPid = pid;
            await recordEtcd(dir, pid);
          },
          connect,
          hasLeader: async (probe, deadline) => (await probe.status(deadline)).hasLeader,
        }),
      (t) => ({ pid: t.pid, clientUrl: t.endpoint }),
      'throwaway etcd is up and has a leader',
    );

    // 5: revision and key counts against the manifest.
    const found = await step(
      'check',
      () => check(etcd!.client, expected),
      (f) => ({ revision: f.revision, keyCount: f.keyCount, registryKeyCount: f.registryKeyCount, expected }),
      'restored etcd matches the manifest',
    );
    const replay = options.replay;
    if (replay) await step('replay', () => replay(etcd!.endpoint), () => ({}), 'the change log replayed');

    report = {
      backupId,
      level: 'drill',
      archive: { key: stored.archive.key, ...archive.ciphertext },
      kitFiles: archive.kitFiles,
      ...found,
      expected,
      timings,
      durationSeconds: 0,
    };
  } catch (err) {
    const line = { phase: 'drill-failed', backupId, code: (err as LifeboatError).code, err: (err as Error).message, durationMs: Math.round(performance.now() - started) };
    if (err instanceof CancelledError) log.warn(line, 'restore drill cancelled');
    else log.error(line, 'restore drill failed');
    throw err;
  } finally {
    // 6: on success, failure and abort alike.
    // (A throwaway etcd that failed to start was stopped by startThrowawayEtcd.)
    const t0 = performance.now();
    await etcd?.stop();
    try {
      await rm(dir, { recursive: true, force: true });
    } catch (err) {
      log.error({ phase: 'drill-cleanup', backupId, scratch: dir, err: errnoOf(err) }, 'could not remove the drill scratch dir; remove it by hand');
    }
    timings.cleanup = seconds(performance.now() - t0);
    log.info({ phase: 'drill-cleanup', backupId, pid: etcdPid, scratch: dir, durationMs: Math.round(performance.now() - t0) }, 'throwaway etcd stopped and scratch dir removed');
  }
  report.durationSeconds = seconds(performance.now() - started);
  log.info({ phase: 'drill-passed', backupId, revision: report.revision, keyCount: report.keyCount, registryKeyCount: report.registryKeyCount, durationMs: Math.round(performance.now() - started) }, 'restore drill passed');
  return report;
}

/** The manifest's expectations. */
function expectedOf(stored: StoredManifest): DrillReport['expected'] {
  const { revision, keyCount, registryKeyCount } = stored.etcd;
  return { revision, ...(keyCount === undefined ? {} : { keyCount }), ...(registryKeyCount === undefined ? {} : { registryKeyCount }) };
}

/** Fails early, naming the setting, when the scratch file system cannot hold the restore. */
async function checkSpace(root: string, stored: StoredManifest): Promise<void> {
  let free: number;
  try {
    const fs = await statfs(root);
    free = fs.bavail * fs.bsize;
  } catch (err) {
    throw new ConfigError('/drill/scratchDir', `cannot use ${root} for scratch: ${errnoOf(err)}`);
  }
  const needed = 2 * stored.snapshot.size + ETCD_OVERHEAD_BYTES;
  if (free < needed) {
    throw new ConfigError('/drill/scratchDir', `a drill of backup ${stored.backupId} needs about ${mib(needed)} MiB free in ${root} (the snapshot and its restored copy), but only ${mib(free)} MiB is free`, {
      hint: 'point drill.scratchDir at a larger file system',
    });
  }
}

/**
 * Reads the archive once through readArchive (ciphertext, age, inner manifest, kit files,
 * snapshot sha256 and trailer) and writes the snapshot to `file` (mode 0600) as it streams.
 * When reading fails for a reason that is not already an integrity error (age authentication,
 * a malformed archive), the stored object is hashed to tell a changed object (IntegrityError)
 * from a wrong key or a bad write: only this failure path reads the archive a second time.
 */
async function readAndCheck(deps: DrillDeps, stored: StoredManifest, identities: readonly string[], file: string, signal: AbortSignal | undefined): Promise<ArchiveReport> {
  const encrypted = await deps.store.get(stored.archive.key);
  const onAbort = () => encrypted.destroy(new CancelledError(`the drill of backup ${stored.backupId} was cancelled`));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await readArchive(encrypted, stored, deps.decrypt(identities), async (entry, body) => {
      if (entry.role !== 'snapshot') {
        for await (const _ of body) {
          // the reader hashes it
        }
        return;
      }
      try {
        await pipeline(Readable.from(body), createWriteStream(file, { mode: 0o600, flags: 'wx' }));
      } catch (err) {
        if (err instanceof LifeboatError) throw err;
        const code = (err as NodeJS.ErrnoException).code;
        if (typeof code === 'string' && code.startsWith('E')) {
          throw new ConfigError('/drill/scratchDir', `cannot write the snapshot to ${file}: ${code}`, { hint: 'point drill.scratchDir at a writable file system with room for twice the database' });
        }
        throw err;
      }
    });
  } catch (err) {
    if (err instanceof IntegrityError || err instanceof CancelledError || err instanceof ConfigError) throw err;
    if (signal?.aborted) throw new CancelledError(`the drill of backup ${stored.backupId} was cancelled`, { cause: err });
    let actual: { size: number; sha256: string };
    try {
      actual = await ciphertextDigest(deps.store, stored.archive.key);
    } catch {
      throw err;
    }
    try {
      checkCiphertext(stored, actual);
    } catch (mismatch) {
      if (mismatch instanceof IntegrityError) {
        throw new IntegrityError(mismatch.message, { cause: err, hint: 'this backup cannot be restored; take a new one, and find out what changed the stored object' });
      }
      throw mismatch;
    }
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

async function restore(
  exec: Executor,
  etcdutl: string,
  where: { snapshotFile: string; dataDir: string; peerUrl: string; backupId: string },
  signal: AbortSignal | undefined,
): Promise<void> {
  const args = [
    'snapshot', 'restore', where.snapshotFile,
    '--name', DRILL_MEMBER,
    '--initial-cluster', `${DRILL_MEMBER}=${where.peerUrl}`,
    '--initial-cluster-token', `lifeboat-drill-${randomBytes(6).toString('hex')}`,
    '--initial-advertise-peer-urls', where.peerUrl,
    '--data-dir', where.dataDir,
  ];
  try {
    await exec.run(etcdutl, args, { timeoutMs: 3_600_000, ...(signal ? { signal } : {}) });
  } catch (err) {
    if (err instanceof ToolError && err.hint === undefined) {
      throw new ToolError(`${err.message} (restoring backup ${where.backupId}, whose hashes all matched)`, {
        cause: err,
        hint: 'check that tools.etcdutl is etcdutl 3.5 or later and that drill.scratchDir has room',
      });
    }
    throw err;
  }
}

async function check(probe: DrillProbe, expected: DrillReport['expected']): Promise<{ revision: string; keyCount: number; registryKeyCount: number }> {
  const deadline = () => new Date(Date.now() + CALL_TIMEOUT_MS);
  let status: { revision: string };
  let counts: { keyCount: number; registryKeyCount: number };
  try {
    status = await probe.status(deadline());
  } catch (err) {
    throw new ToolError(`the throwaway etcd did not answer Status: ${firstLine(err)}`, { cause: err });
  }
  if (BigInt(status.revision) < BigInt(expected.revision)) {
    throw new IntegrityError(`the restored etcd is at revision ${status.revision}, older than the manifest's ${expected.revision}`);
  }
  try {
    counts = await probe.counts(expected.revision, deadline());
  } catch (err) {
    throw new ToolError(`the throwaway etcd could not count its keys at revision ${expected.revision}: ${firstLine(err)}`, { cause: err });
  }
  const at = `at revision ${expected.revision}`;
  if (expected.keyCount !== undefined && counts.keyCount !== expected.keyCount) {
    throw new IntegrityError(`the restored etcd holds ${counts.keyCount} keys ${at}, but the manifest says ${expected.keyCount}`);
  }
  if (expected.registryKeyCount !== undefined && counts.registryKeyCount !== expected.registryKeyCount) {
    throw new IntegrityError(`the restored etcd holds ${counts.registryKeyCount} keys under ${REGISTRY} ${at}, but the manifest says ${expected.registryKeyCount}`);
  }
  if (counts.keyCount === 0) throw new IntegrityError(`the restored etcd holds no keys ${at}`);
  if (counts.registryKeyCount === 0) {
    throw new IntegrityError(`the restored etcd holds no keys under ${REGISTRY} ${at}: this backup holds no Kubernetes objects`, {
      hint: 'check that etcd.endpoints name the cluster\'s own etcd',
    });
  }
  return { revision: status.revision, ...counts };
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

function seconds(ms: number): number {
  return Math.round(ms) / 1000;
}

function mib(bytes: number): number {
  return Math.ceil(bytes / (1 << 20));
}
