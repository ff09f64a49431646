import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Static } from '@sinclair/typebox';
import { readField } from '../config/load.ts';
import type { ClientConfig } from '../config/schema.ts';
import {
  BadRequestError,
  ConfigError,
  DaemonUnreachableError,
  ForbiddenError,
  InternalError,
  LifeboatError,
  NotFoundError,
  NotLeaderError,
  RateLimitedError,
  UnauthenticatedError,
  ERROR_CODES,
  type ErrorCode,
} from '../errors/errors.ts';
import type { Job, JobKind, JobState, Submitted } from '../jobs/job.ts';
import type { RestoreView } from '../restore/engine.ts';
import type { RestorePlan, RestoreRequest, StepName } from '../restore/plan.ts';
import type { BackupEntry } from './deps.ts';
import { PROBLEM_CONTENT_TYPE, type ProblemBody } from './errors.ts';
import type { StatusResponse } from './schemas.ts';

export interface ClientOptions {
  /** `https://host:port` of the daemon's API. */
  url: string;
  /** PEM. */
  ca?: string | Buffer;
  serverName?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
  token?: string;
  timeoutMs?: number;
}

export type StatusView = Static<typeof StatusResponse>;

/** Responses larger than this are refused rather than held in memory. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Reads the files the client section names; ConfigError naming the field when one is unreadable. */
export function clientOptions(config: ClientConfig): ClientOptions {
  const options: ClientOptions = { url: config.url.replace(/\/$/, '') };
  if (config.caFile !== undefined) options.ca = readField(config.caFile, '/client/caFile');
  if (config.serverName !== undefined) options.serverName = config.serverName;
  if (config.certFile !== undefined) options.cert = readField(config.certFile, '/client/certFile');
  if (config.keyFile !== undefined) options.key = readField(config.keyFile, '/client/keyFile');
  if (config.token !== undefined) options.token = config.token.trim();
  if (config.tokenFile !== undefined) {
    const token = readField(config.tokenFile, '/client/tokenFile').trim();
    if (token === '') throw new ConfigError('/client/tokenFile', `${config.tokenFile} is empty`);
    options.token = token;
  }
  return options;
}

/**
 * The daemon's API over HTTPS (node:https): the configured CA, and a bearer token or a client
 * certificate. Error responses come back as the typed errors the daemon threw.
 */
export class ApiClient {
  readonly #options: ClientOptions;

  constructor(options: ClientOptions) {
    this.#options = options;
  }

  get url(): string {
    return this.#options.url;
  }

  status(): Promise<StatusView> {
    return this.request('GET', '/v1/status');
  }

  async backups(options: { limit?: number; before?: string } = {}): Promise<BackupEntry[]> {
    return (await this.request<{ backups: BackupEntry[] }>('GET', withQuery('/v1/backups', options))).backups;
  }

  backup(id: string): Promise<BackupEntry> {
    return this.request('GET', `/v1/backups/${encodeURIComponent(id)}`);
  }

  triggerBackup(options: { idempotencyKey?: string } = {}): Promise<Submitted> {
    return this.request('POST', '/v1/backups', { body: {}, idempotencyKey: options.idempotencyKey });
  }

  triggerVerify(id: string, options: { deep?: boolean; idempotencyKey?: string } = {}): Promise<Submitted> {
    return this.request('POST', `/v1/backups/${encodeURIComponent(id)}/verify`, { body: { deep: options.deep === true }, idempotencyKey: options.idempotencyKey });
  }

  deleteBackup(id: string): Promise<void> {
    return this.request('DELETE', `/v1/backups/${encodeURIComponent(id)}`);
  }

  async job(id: string): Promise<Job> {
    return (await this.request<{ job: Job }>('GET', `/v1/jobs/${encodeURIComponent(id)}`)).job;
  }

  async jobs(options: { limit?: number; kind?: JobKind; state?: JobState } = {}): Promise<Job[]> {
    return (await this.request<{ jobs: Job[] }>('GET', withQuery('/v1/jobs', options))).jobs;
  }

  /** Plans a restore on this daemon's node; a dry run's job comes with it. */
  planRestore(body: RestoreRequest): Promise<{ plan: RestorePlan; job?: Job }> {
    return this.request('POST', '/v1/restores', { body });
  }

  async restores(): Promise<RestoreView[]> {
    return (await this.request<{ restores: RestoreView[] }>('GET', '/v1/restores')).restores;
  }

  restore(id: string): Promise<RestoreView> {
    return this.request('GET', `/v1/restores/${encodeURIComponent(id)}`);
  }

  applyRestore(id: string, body: { confirmationToken: string; through?: StepName }): Promise<Submitted> {
    return this.request('POST', `/v1/restores/${encodeURIComponent(id)}/apply`, { body });
  }

  rollbackRestore(id: string, body: { confirmationToken: string }): Promise<Submitted> {
    return this.request('POST', `/v1/restores/${encodeURIComponent(id)}/rollback`, { body });
  }

  /** The same credentials and CA, another daemon (another node's, for `restore apply --all`). */
  withUrl(url: string): ApiClient {
    return new ApiClient({ ...this.#options, url: url.replace(/\/$/, '') });
  }

  /** One request; resolves with the parsed JSON body (undefined for 204), rejects with a typed error. */
  request<T>(method: string, path: string, options: { body?: unknown; idempotencyKey?: string | undefined } = {}): Promise<T> {
    const { url, ca, serverName, cert, key, token } = this.#options;
    const headers: Record<string, string> = { accept: `application/json, ${PROBLEM_CONTENT_TYPE}` };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = options.idempotencyKey;
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    return new Promise<T>((resolve, reject) => {
      const req = httpsRequest(
        `${url}${path}`,
        {
          method,
          headers,
          agent: false,
          timeout: this.#options.timeoutMs ?? 30_000,
          ...(ca ? { ca } : {}),
          ...(serverName ? { servername: serverName } : {}),
          ...(cert && key ? { cert, key } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(new DaemonUnreachableError(`the response from ${url}${path} is larger than ${MAX_RESPONSE_BYTES} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', reject);
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown;
            if (text !== '') {
              try {
                body = JSON.parse(text);
              } catch {
                reject(new DaemonUnreachableError(`${url} answered ${status} with a body that is not JSON`, { hint: 'is client.url the Lifeboat API?' }));
                return;
              }
            }
            if (status >= 200 && status < 300) resolve(body as T);
            else reject(errorFromResponse(status, body, res.headers['retry-after']));
          });
        },
      );
      req.on('timeout', () => req.destroy(new DaemonUnreachableError(`${method} ${url}${path} timed out`, { hint: 'is the daemon overloaded, or client.url wrong?' })));
      req.on('error', (err) => reject(err instanceof LifeboatError ? err : unreachable(url, err)));
      req.end(payload);
    });
  }
}

/** `path?name=value&...` of the parameters that are set. */
function withQuery(path: string, params: Record<string, string | number | undefined>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined) query.set(name, String(value));
  return query.size > 0 ? `${path}?${query.toString()}` : path;
}

/**
 * Polls a job every `intervalMs` until it ends and returns its last record, calling `changed`
 * with the first record and each change of state or phase. Up to two unreachable polls in a row
 * are retried (a daemon restarting, a network blip); the third, or any other error, is thrown.
 */
export async function followJob(api: Pick<ApiClient, 'job'>, submitted: Job, intervalMs: number, changed: (job: Job) => void): Promise<Job> {
  let job = submitted;
  let last = '';
  let failures = 0;
  for (;;) {
    const now = `${job.state} ${job.phase}`;
    if (now !== last) {
      changed(job);
      last = now;
    }
    if (job.state === 'succeeded' || job.state === 'failed') return job;
    await sleep(intervalMs);
    try {
      job = await api.job(job.id);
      failures = 0;
    } catch (err) {
      if (!(err instanceof DaemonUnreachableError) || ++failures >= 3) throw err;
      await sleep(1000);
    }
  }
}

const TLS_TRUST = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED']);

function unreachable(url: string, err: NodeJS.ErrnoException): DaemonUnreachableError {
  const code = err.code ?? '';
  const hint =
    TLS_TRUST.has(code) ? "set client.caFile to the CA that signed the daemon's certificate (api.tls.certFile)"
      : code === 'ERR_TLS_CERT_ALTNAME_INVALID' ? "the daemon's certificate is not for this host: use the name it was issued for in client.url, or set client.serverName"
        : code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' ? 'is the daemon running? Set client.url (or LIFEBOAT_CLIENT__URL) to its API address'
          : undefined;
  return new DaemonUnreachableError(`cannot reach the daemon at ${url}: ${err.message}`, { cause: err, ...(hint ? { hint } : {}) });
}

const isErrorCode = (code: unknown): code is ErrorCode => typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);

/**
 * The typed error a daemon's error response stands for: problem details (RFC 9457), whose
 * `detail` is the message; an older daemon's body has only `message`.
 */
export function errorFromResponse(status: number, body: unknown, retryAfter?: string | string[]): LifeboatError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Partial<ProblemBody>;
  const message = typeof b.detail === 'string' ? b.detail : typeof b.message === 'string' ? b.message : `the daemon answered ${status}`;
  const hint = typeof b.hint === 'string' ? { hint: b.hint } : {};
  switch (b.code) {
    case 'NOT_LEADER':
      return new NotLeaderError(b.leader, message, {
        hint: b.leader ? `the leader is ${b.leader}${b.leaderUrl ? ` at ${b.leaderUrl}` : ''}: point client.url at it` : 'no leader is elected right now; retry shortly',
        ...(b.leaderUrl ? { leaderUrl: b.leaderUrl } : {}),
      });
    case 'BAD_REQUEST':
      return new BadRequestError(b.field ?? '', message, hint);
    case 'RATE_LIMITED':
      return new RateLimitedError(Number(retryAfter) || 60, message, hint);
    case 'UNAUTHENTICATED':
      return new UnauthenticatedError(message, { hint: 'set client.tokenFile (or LIFEBOAT_CLIENT__TOKEN), or client.certFile and client.keyFile' });
    case 'FORBIDDEN':
      return new ForbiddenError(message, hint);
    case 'NOT_FOUND':
      return new NotFoundError(message, hint);
    case 'INTERNAL':
      return new InternalError(`the daemon answered ${status}: ${message}`, hint);
    default:
      if (isErrorCode(b.code)) return new LifeboatError(b.code, message, hint);
      return new InternalError(`the daemon answered ${status}: ${message}`, hint);
  }
}

/** A job's error as the typed error it was. */
export function jobError(job: Job): LifeboatError {
  const e = job.error;
  const message = `job ${job.id} (${job.kind}) failed: ${e?.message ?? 'no reason recorded'}`;
  const hint = e?.hint ? { hint: e.hint } : {};
  return isErrorCode(e?.code) ? new LifeboatError(e.code, message, hint) : new InternalError(message, hint);
}
