import type { Logger } from 'pino';
import { loadConfig } from '../config/load.ts';
import type { Config, LogLevel } from '../config/schema.ts';
import { createDecryptStream, createEncryptStream } from '../crypto/age.ts';
import { readIdentityFile } from '../crypto/identity-file.ts';
import { ConfigError } from '../errors/errors.ts';
import { Etcd3SnapshotSource } from '../etcd/etcd3-source.ts';
import { processExecutor, type Executor } from '../exec/executor.ts';
import { createLogger } from '../log/logger.ts';
import { loadSigning, type Signing } from '../signing/trust.ts';
import { Catalog, type RejectedBackup } from '../store/catalog.ts';
import { createStore } from '../store/create-store.ts';
import type { BackupStore } from '../store/store.ts';

export interface GlobalOptions {
  config?: string;
  logLevel?: LogLevel;
}

/** Everything a command needs, built once from the validated config. */
export interface Context {
  config: Config;
  log: Logger;
  store: BackupStore;
  /** The second copy's store, when secondaryStore is configured. */
  secondary: BackupStore | undefined;
  catalog: Catalog;
  /** The keys of config `signing`: what every read trusts, and the signer of new backups. */
  signing: Signing;
  exec: Executor;
  encrypt: typeof createEncryptStream;
  decrypt: typeof createDecryptStream;
}

export function createContext(options: GlobalOptions): Context {
  const config = loadConfig({ file: options.config });
  const log = createLogger(options.logLevel ?? config.log.level, { cluster: config.cluster, node: config.node });
  const store = createStore(config.store);
  const signing = loadSigning(config.signing);
  return {
    config,
    log,
    store,
    secondary: config.secondaryStore && createStore(config.secondaryStore),
    catalog: new Catalog(store, config.cluster, { trust: signing.trust, maxClockSkewSeconds: config.backup.maxClockSkewSeconds, onRejected: warnRejected }),
    signing,
    exec: processExecutor,
    encrypt: createEncryptStream,
    decrypt: createDecryptStream,
  };
}

/** A refused backup is left out of every listing; the person at the terminal is told why. */
function warnRejected(rejected: readonly RejectedBackup[]): void {
  for (const r of rejected) process.stderr.write(`lifeboat: warning: backup ${r.backupId} is refused and left out (${r.error.code}): ${r.error.message}\n`);
}

export function snapshotSource(ctx: Context): Etcd3SnapshotSource {
  return new Etcd3SnapshotSource(ctx.config.etcd, ctx.log);
}

/** Identities from `--identity FILE`, else `encryption.identityFile`; undefined when neither is set. */
export async function loadIdentities(ctx: Context, file: string | undefined): Promise<string[] | undefined> {
  const source = file ?? ctx.config.encryption.identityFile;
  if (source === undefined) return undefined;
  return readIdentityFile(source, file === undefined ? '/encryption/identityFile' : '--identity');
}

export function requireIdentities(identities: string[] | undefined, what: string): string[] {
  if (!identities) {
    throw new ConfigError('--identity', `${what} needs an age identity to decrypt the archive`, {
      hint: 'pass --identity FILE or set encryption.identityFile',
    });
  }
  return identities;
}

/**
 * Runs `work` with a signal that aborts on Ctrl-C or SIGTERM, so that long work (a drill, a
 * replay) stops and still cleans up; the handlers are gone afterwards.
 */
export async function untilInterrupted<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await work(abort.signal);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
