import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';

/** The API's TLS files: the serving pair and, for mTLS, the client CA. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile?: string | undefined;
}

export interface TlsReloaderOptions {
  files: TlsFiles;
  /** Replaces the server's secure context (https.Server.setSecureContext); new connections use it. */
  apply: (context: SecureContextOptions) => void;
  log: Logger;
  /** How often the files' mtime, size and inode are compared with the last ones seen. */
  intervalMs: number;
  /** Options every context carries besides the files (e.g. minVersion). */
  base?: SecureContextOptions;
}

/**
 * Reloads the API's certificate, key and client CA when their files change (cert-manager renews
 * them by swapping the Secret's files), without a restart: the files are polled, not watched
 * (fs.watch misses the symlink swaps of a mounted Secret and fires part way through a write).
 * A changed set is read whole and checked (the key must match the certificate, each PEM must
 * parse) before it replaces the context; a bad set keeps the old context, is logged at error
 * level once, and is tried again when the files change again. Existing connections keep theirs.
 */
export class TlsReloader {
  readonly #options: TlsReloaderOptions;
  #seen: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(options: TlsReloaderOptions) {
    this.#options = options;
  }

  /** Remembers the files as they are now (what the server started with), then polls. */
  async start(): Promise<void> {
    this.#seen = await this.#signature();
    this.#timer = setInterval(() => void this.check(), this.#options.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One poll: reloads when the files changed since the last poll. Never throws. */
  check(): Promise<void> {
    this.#running ??= this.#check().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #check(): Promise<void> {
    const { files, log } = this.#options;
    let signature: string;
    try {
      signature = await this.#signature();
    } catch (err) {
      const missing = `missing:${(err as NodeJS.ErrnoException).path ?? ''}`;
      if (this.#seen !== missing) log.error({ err: (err as Error).message }, 'an API TLS file cannot be read; keeping the certificate in use');
      this.#seen = missing;
      return;
    }
    if (signature === this.#seen) return;
    this.#seen = signature;
    try {
      const [cert, key, ca] = await Promise.all([readFile(files.certFile), readFile(files.keyFile), files.clientCaFile === undefined ? undefined : readFile(files.clientCaFile)]);
      const context: SecureContextOptions = { ...this.#options.base, cert, key, ...(ca ? { ca } : {}) };
      createSecureContext(context); // throws on a key that does not match, or PEM that does not parse
      const x509 = new X509Certificate(cert);
      this.#options.apply(context);
      log.info({ phase: 'tls-reloaded', serial: x509.serialNumber, subject: x509.subject, validTo: x509.validTo, clientCa: ca !== undefined }, 'API TLS certificate and client CA reloaded');
    } catch (err) {
      log.error({ err: (err as Error).message, certFile: files.certFile, keyFile: files.keyFile, clientCaFile: files.clientCaFile }, 'the API TLS files changed but are not a usable set; keeping the certificate in use');
    }
  }

  async #signature(): Promise<string> {
    const { files } = this.#options;
    const paths = [files.certFile, files.keyFile, ...(files.clientCaFile === undefined ? [] : [files.clientCaFile])];
    const stats = await Promise.all(paths.map((p) => stat(p)));
    return stats.map((s) => `${s.mtimeMs}:${s.size}:${s.ino}`).join('|');
  }
}
