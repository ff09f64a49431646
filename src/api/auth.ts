import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import type { Config, Role } from '../config/schema.ts';
import { ForbiddenError, RateLimitedError, UnauthenticatedError } from '../errors/errors.ts';
import type { TokenFile } from './tokens.ts';

/** Who made a request, and how they proved it. */
export interface Principal {
  /** The token's name, or the certificate's CN (its whole subject when it has no CN). */
  name: string;
  role: Role;
  via: 'token' | 'cert';
}

/** What a route needs: nothing, or at least this role. */
export type Access = 'public' | Role;

const RANK: Record<Role, number> = { viewer: 1, operator: 2, restorer: 3 };

/** viewer < operator < restorer: each role may do everything the ones before it may. */
export function allows(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}

export type CertRoles = Config['api']['clientCertRoles'];

export interface CertSubject {
  CN?: string | string[];
  O?: string | string[];
}

const values = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * The role of a trusted client certificate: the first mapping whose `cn` and `o` (those it
 * sets) both match the subject. A mapping with neither matches every certificate of the CA.
 */
export function roleForSubject(subject: CertSubject, mappings: CertRoles): Role | undefined {
  const cns = values(subject.CN);
  const os = values(subject.O);
  for (const m of mappings) {
    if (m.cn !== undefined && !cns.includes(m.cn)) continue;
    if (m.o !== undefined && !os.includes(m.o)) continue;
    return m.role;
  }
  return undefined;
}

function describeSubject(subject: CertSubject): string {
  const parts = [...values(subject.O).map((o) => `O=${o}`), ...values(subject.CN).map((cn) => `CN=${cn}`)];
  return parts.length > 0 ? parts.join(',') : 'an empty subject';
}

const BEARER_RE = /^Bearer +([\x21-\x7e]{1,1024})$/i;

export interface AuthenticatorOptions {
  tokens: TokenFile | undefined;
  /** Client certificates are requested only when api.tls.clientCaFile is set. */
  clientCerts: boolean;
  certRoles: CertRoles;
}

/**
 * Finds the principal of a request. An Authorization header, when present, decides alone (a bad
 * one fails even if a certificate came too); otherwise a certificate that the configured client
 * CA signed, mapped to a role by api.clientCertRoles. UnauthenticatedError (401) when nothing
 * valid came; ForbiddenError (403) for a trusted certificate that maps to no role.
 */
export class Authenticator {
  readonly #options: AuthenticatorOptions;

  constructor(options: AuthenticatorOptions) {
    this.#options = options;
  }

  async authenticate(request: FastifyRequest): Promise<Principal> {
    const header = request.headers.authorization;
    if (header !== undefined) return this.#bearer(header);
    const socket = request.raw.socket as Partial<TLSSocket>;
    if (this.#options.clientCerts && typeof socket.getPeerCertificate === 'function') {
      const cert = socket.getPeerCertificate();
      const presented = cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
      if (presented && socket.authorized === true) {
        const subject = (cert.subject ?? {}) as CertSubject;
        const name = values(subject.CN)[0] ?? describeSubject(subject);
        const role = roleForSubject(subject, this.#options.certRoles);
        if (role === undefined) {
          throw new ForbiddenError(`the client certificate ${describeSubject(subject)} maps to no role`, {
            hint: 'add its CN or O to api.clientCertRoles',
          });
        }
        return { name, role, via: 'cert' };
      }
      if (presented) {
        throw new UnauthenticatedError(`the client certificate is not trusted: ${socket.authorizationError ? String(socket.authorizationError) : 'unknown issuer'}`, {
          hint: 'use a certificate signed by the CA in api.tls.clientCaFile, or a bearer token',
        });
      }
    }
    throw new UnauthenticatedError('no credentials: send a client certificate or "Authorization: Bearer <token>"', {
      hint: '`lifeboat token create` makes a token',
    });
  }

  async #bearer(header: string): Promise<Principal> {
    const m = BEARER_RE.exec(header);
    if (!m?.[1]) throw new UnauthenticatedError('the Authorization header is not "Bearer <token>"');
    const entry = this.#options.tokens && (await this.#options.tokens.find(m[1]));
    if (!entry) throw new UnauthenticatedError('the bearer token is not valid', { hint: 'check the token, or make one with `lifeboat token create`' });
    return { name: entry.name, role: entry.role, via: 'token' };
  }
}

/**
 * Failed authentications per client address in fixed one-minute windows. Once an address has
 * failed `perMinute` times, its further failures are answered 429 instead of 401 until its
 * window ends. A valid credential is never refused: many clients can share an address (a NAT,
 * the node's own loopback), and one of them failing must not lock restorers out during an
 * incident. Guessing gains nothing either way: a token is 256 random bits. At most
 * `maxAddresses` addresses are tracked; the oldest windows are dropped first.
 */
export class FailureLimiter {
  readonly #perMinute: number;
  readonly #now: () => number;
  readonly #maxAddresses: number;
  readonly #windows = new Map<string, { resetAt: number; failures: number }>();

  constructor(perMinute: number, now: () => number = Date.now, maxAddresses = 10_000) {
    this.#perMinute = perMinute;
    this.#now = now;
    this.#maxAddresses = maxAddresses;
  }

  /**
   * Counts a failed authentication from `address`. Throws RateLimitedError (answer it instead of
   * the failure) when the address had already failed `perMinute` times in its window.
   */
  fail(address: string): void {
    const now = this.#now();
    let window = this.#windows.get(address);
    if (!window || window.resetAt <= now) {
      this.#windows.delete(address);
      window = { resetAt: now + 60_000, failures: 0 };
      this.#windows.set(address, window);
      this.#trim(now);
    }
    if (window.failures >= this.#perMinute) {
      const retryAfter = Math.max(1, Math.ceil((window.resetAt - now) / 1000));
      throw new RateLimitedError(retryAfter, `too many failed authentications from ${address}; retry in ${retryAfter} s`);
    }
    window.failures += 1;
  }

  /** Addresses tracked now (bounded by maxAddresses). */
  get tracked(): number {
    return this.#windows.size;
  }

  #trim(now: number): void {
    if (this.#windows.size <= this.#maxAddresses) return;
    for (const [address, window] of this.#windows) {
      if (window.resetAt <= now) this.#windows.delete(address);
    }
    // Insertion order is window start order: the oldest go first.
    for (const address of this.#windows.keys()) {
      if (this.#windows.size <= this.#maxAddresses) break;
      this.#windows.delete(address);
    }
  }
}

export function forbidden(principal: Principal, method: string, route: string, needed: Role): ForbiddenError {
  return new ForbiddenError(`${principal.name} (role ${principal.role}) may not ${method} ${route}; that needs role ${needed}`);
}
