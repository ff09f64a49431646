import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Role } from '../config/schema.ts';
import { ConfigError } from '../errors/errors.ts';

/**
 * API bearer tokens. The daemon keeps only their sha256, in api.tokensFile, one per line:
 *
 *   # comments and blank lines are ignored
 *   sha256:<64 hex> <role> <name>
 *
 * `role` is viewer, operator or restorer; `name` says who the token belongs to (it appears in
 * audit lines and as a job's requestedBy). `lifeboat token create` makes a token and its line.
 */
export const ROLES: readonly Role[] = ['viewer', 'operator', 'restorer'];
export const TOKEN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,99}$/;
const LINE_RE = /^sha256:([0-9a-f]{64})\s+(\S+)\s+(\S+)$/;
/** Tokens are `lbt_` + 43 base64url characters (32 random bytes). */
const TOKEN_PREFIX = 'lbt_';

export interface TokenEntry {
  name: string;
  role: Role;
  /** sha256 of the token, 32 bytes. */
  hash: Buffer;
}

export function generateToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function tokenLine(token: string, role: Role, name: string): string {
  return `sha256:${hashToken(token).toString('hex')} ${role} ${name}`;
}

/** Parses a tokens file; a bad line is a ConfigError naming the file and the line. */
export function parseTokens(text: string, file: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const seen = new Map<string, number>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${file} line ${i + 1}`;
    const m = LINE_RE.exec(line);
    if (!m) throw new ConfigError('/api/tokensFile', `${where}: expected "sha256:<64 hex digits> <role> <name>"`, { hint: 'make lines with `lifeboat token create`' });
    const [, hex = '', role = '', name = ''] = m;
    if (!(ROLES as readonly string[]).includes(role)) {
      throw new ConfigError('/api/tokensFile', `${where}: role "${role}" is not one of ${ROLES.join(', ')}`);
    }
    if (!TOKEN_NAME_RE.test(name)) {
      throw new ConfigError('/api/tokensFile', `${where}: name "${name.slice(0, 100)}" must be letters, digits and . _ @ : + - (at most 100)`);
    }
    const previous = seen.get(hex);
    if (previous !== undefined) throw new ConfigError('/api/tokensFile', `${where}: the same token hash as line ${previous}`);
    seen.set(hex, i + 1);
    entries.push({ name, role: role as Role, hash: Buffer.from(hex, 'hex') });
  }
  return entries;
}

interface Loaded {
  /** mtime, size and inode of the file these entries came from. */
  signature: string;
  entries: TokenEntry[];
}

const signatureOf = (s: Stats) => `${s.mtimeMs}:${s.size}:${s.ino}`;

/**
 * The tokens file, read at start (a bad file stops the daemon there) and read again whenever its
 * mtime, size or inode changes, so adding or revoking a token needs no restart. It fails closed:
 * a file that turns invalid, or is deleted, means no token is valid until it is fixed (the old
 * tokens would keep a revoked one in force), and that is logged at error level once per change.
 */
export class TokenFile {
  readonly #file: string;
  readonly #log: Logger;
  #loaded: Loaded;
  #reloading: Promise<void> | undefined;
  #reported: string | undefined;

  constructor(file: string, log: Logger) {
    this.#file = file;
    this.#log = log;
    let stats: Stats;
    let text: string;
    try {
      stats = statSync(file);
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('/api/tokensFile', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, {
        hint: 'create it with `lifeboat token create --role viewer --name NAME`',
      });
    }
    this.#loaded = { signature: signatureOf(stats), entries: parseTokens(text, file) };
  }

  get size(): number {
    return this.#loaded.entries.length;
  }

  /** The entry whose hash matches `token`; every entry is compared, in constant time each. */
  async find(token: string): Promise<TokenEntry | undefined> {
    await this.#refresh();
    const hash = hashToken(token);
    let found: TokenEntry | undefined;
    for (const entry of this.#loaded.entries) {
      if (timingSafeEqual(hash, entry.hash) && found === undefined) found = entry;
    }
    return found;
  }

  async #refresh(): Promise<void> {
    // Concurrent requests share one reload.
    this.#reloading ??= this.#reload().finally(() => {
      this.#reloading = undefined;
    });
    await this.#reloading;
  }

  async #reload(): Promise<void> {
    let stats: Stats;
    try {
      stats = await stat(this.#file);
    } catch (err) {
      if (this.#loaded.entries.length > 0 || this.#reported !== 'missing') {
        this.#log.error({ file: this.#file, err: (err as NodeJS.ErrnoException).code }, 'the API tokens file is gone; no token is accepted until it is back');
      }
      this.#reported = 'missing';
      this.#loaded = { signature: 'missing', entries: [] };
      return;
    }
    const signature = signatureOf(stats);
    if (signature === this.#loaded.signature || signature === this.#reported) return;
    try {
      const entries = parseTokens(await readFile(this.#file, 'utf8'), this.#file);
      this.#loaded = { signature, entries };
      this.#reported = undefined;
      this.#log.info({ file: this.#file, tokens: entries.length }, 'API tokens reloaded');
    } catch (err) {
      // Fail closed, logged once per change of the file.
      this.#reported = signature;
      this.#loaded = { signature, entries: [] };
      this.#log.error({ file: this.#file, err: (err as Error).message }, 'the API tokens file is invalid; no token is accepted until it is fixed');
    }
  }
}
