/**
 * Typed errors with a stable code. Callers branch on `instanceof` or `code`, never on message
 * text. The CLI prints `message` (one line, plus `hint` when present); the HTTP API maps `code`
 * to a status in one place.
 */
/** Every error code, once: the metrics pre-create a failure series for each. */
export const ERROR_CODES = [
  'CONFIG_INVALID',
  'KEY_INVALID',
  'KIT_FILE_MISSING',
  'KUBE_OBJECT_UNREADABLE',
  'ETCD_UNAVAILABLE',
  'SNAPSHOT_INVALID',
  'ARCHIVE_INVALID',
  'INTEGRITY_MISMATCH',
  'SIGNATURE_INVALID',
  'DECRYPT_FAILED',
  'NO_MATCHING_IDENTITY',
  'NOT_FOUND',
  'UNSAFE_PATH',
  'DESTINATION_NOT_EMPTY',
  'STORE_FAILED',
  'TOOL_FAILED',
  'CANCELLED',
  'OBJECT_LOCKED',
  'BACKUP_PROTECTED',
  'NOT_LEADER',
  'CONFLICT',
  'BAD_REQUEST',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'RATE_LIMITED',
  'DAEMON_UNREACHABLE',
  'CLOCK_SKEW',
  'METHOD_NOT_ALLOWED',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'SHUTTING_DOWN',
  'INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export interface LifeboatErrorOptions {
  cause?: unknown;
  /** What to do next, printed after the message. */
  hint?: string;
}

export class LifeboatError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: LifeboatErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }
}

/** A config field (named by its path, e.g. `/store/fs/dir`) is missing, unknown or wrong. */
export class ConfigError extends LifeboatError {
  readonly field: string;
  /** What is wrong with the field, without the `config <field>: ` the message starts with. */
  readonly detail: string;
  constructor(field: string, detail: string, options: LifeboatErrorOptions = {}) {
    super('CONFIG_INVALID', `config ${field}: ${detail}`, options);
    this.field = field;
    this.detail = detail;
  }
}

/** An age recipient, identity or identity file is malformed. */
export class KeyError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('KEY_INVALID', message, options);
  }
}

/** A required recovery-kit file does not exist or cannot be read. */
export class KitFileMissingError extends LifeboatError {
  readonly path: string;
  constructor(path: string, message: string, options: LifeboatErrorOptions = {}) {
    super('KIT_FILE_MISSING', message, options);
    this.path = path;
  }
}

/**
 * A Kubernetes object read from etcd cannot be decoded. `problem` says why: `encrypted-at-rest`
 * (the kube-apiserver's EncryptionConfiguration covers its resource, so etcd holds ciphertext),
 * `unsupported` (an encoding or content type Lifeboat does not read), or `malformed` (truncated,
 * a bad wire type, not UTF-8, another kind, ...); the message names what and, for protobuf, where.
 */
export class KubeObjectError extends LifeboatError {
  readonly problem: 'encrypted-at-rest' | 'unsupported' | 'malformed';
  constructor(problem: KubeObjectError['problem'], message: string, options: LifeboatErrorOptions = {}) {
    super('KUBE_OBJECT_UNREADABLE', message, options);
    this.problem = problem;
  }
}

/** No etcd member could be reached, or the connection dropped mid-stream. */
export class EtcdUnavailableError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('ETCD_UNAVAILABLE', message, options);
  }
}

/** The snapshot stream from etcd is short, long, or its sha256 trailer does not match. */
export class SnapshotError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('SNAPSHOT_INVALID', message, options);
  }
}

/** An archive is not a well-formed Lifeboat archive (bad tar, bad manifest, truncated). */
export class ArchiveError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('ARCHIVE_INVALID', message, options);
  }
}

/** A size or sha256 recorded in a manifest does not match the bytes. */
export class IntegrityError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('INTEGRITY_MISMATCH', message, options);
  }
}

/**
 * A manifest is unsigned (and unsigned backups are not allowed), signed by a key that is not
 * trusted, or its signature does not match its bytes: it may be forged.
 */
export class SignatureError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('SIGNATURE_INVALID', message, options);
  }
}

/** This node's clock is off from a reference clock (the store's) by more than backup.maxClockSkewSeconds. */
export class ClockSkewError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('CLOCK_SKEW', message, options);
  }
}

/** The age payload failed to authenticate or the header is malformed. */
export class DecryptError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('DECRYPT_FAILED', message, options);
  }
}

/** None of the given identities matches any recipient stanza of the archive. */
export class NoMatchingIdentityError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('NO_MATCHING_IDENTITY', message, options);
  }
}

export class NotFoundError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('NOT_FOUND', message, options);
  }
}

/** An archive entry or user-supplied path would escape its destination. */
export class UnsafePathError extends LifeboatError {
  readonly path: string;
  constructor(path: string, message: string, options: LifeboatErrorOptions = {}) {
    super('UNSAFE_PATH', message, options);
    this.path = path;
  }
}

export class DestinationNotEmptyError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('DESTINATION_NOT_EMPTY', message, options);
  }
}

/** A store operation failed (I/O, permissions, network). */
export class StoreError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('STORE_FAILED', message, options);
  }
}

/** An external tool (etcdutl, kubeadm) exited non-zero or could not be started. */
export class ToolError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('TOOL_FAILED', message, options);
  }
}

export class CancelledError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('CANCELLED', message, options);
  }
}

/** An object is still under S3 Object Lock retention (or legal hold) and cannot be deleted yet. */
export class ObjectLockedError extends LifeboatError {
  readonly key: string;
  readonly retainUntil: Date | undefined;
  readonly legalHold: boolean;
  constructor(key: string, lock: { retainUntil?: Date | undefined; legalHold?: boolean | undefined }, message: string, options: LifeboatErrorOptions = {}) {
    super('OBJECT_LOCKED', message, options);
    this.key = key;
    this.retainUntil = lock.retainUntil;
    this.legalHold = lock.legalHold === true;
  }
}

/** A backup that retention must keep (the newest, or the newest verified) was asked to be deleted. */
export class BackupProtectedError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('BACKUP_PROTECTED', message, options);
  }
}

/** This instance is not the elected leader; `leader` names the one that is, when known, and `leaderUrl` its API. */
export class NotLeaderError extends LifeboatError {
  readonly leader: string | undefined;
  readonly leaderUrl: string | undefined;
  constructor(leader: string | undefined, message: string, options: LifeboatErrorOptions & { leaderUrl?: string | undefined } = {}) {
    super('NOT_LEADER', message, options);
    this.leader = leader;
    this.leaderUrl = options.leaderUrl;
  }
}

/** The request conflicts with the current state (a job already running, a reused key). */
export class ConflictError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('CONFLICT', message, options);
  }
}

/** An API request's body, params, query or headers are invalid; `field` names the culprit. */
export class BadRequestError extends LifeboatError {
  readonly field: string;
  constructor(field: string, message: string, options: LifeboatErrorOptions = {}) {
    super('BAD_REQUEST', message, options);
    this.field = field;
  }
}

/** An API path exists but not with this method; `allowed` lists the methods it takes. */
export class MethodNotAllowedError extends LifeboatError {
  readonly allowed: readonly string[];
  constructor(allowed: readonly string[], message: string, options: LifeboatErrorOptions = {}) {
    super('METHOD_NOT_ALLOWED', message, options);
    this.allowed = allowed;
  }
}

/** No valid credentials (client certificate or bearer token) came with the request. */
export class UnauthenticatedError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('UNAUTHENTICATED', message, options);
  }
}

/** The caller is known but its role does not allow this. */
export class ForbiddenError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('FORBIDDEN', message, options);
  }
}

/** Too many failed authentications from one client; retry after `retryAfterSeconds`. */
export class RateLimitedError extends LifeboatError {
  readonly retryAfterSeconds: number;
  constructor(retryAfterSeconds: number, message: string, options: LifeboatErrorOptions = {}) {
    super('RATE_LIMITED', message, options);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The CLI could not reach a daemon's API (refused, TLS failure, timeout), or what answered is not it; or a follower could not reach the leader to forward a request. */
export class DaemonUnreachableError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('DAEMON_UNREACHABLE', message, options);
  }
}

/** The daemon is stopping and takes no more requests; another instance, or this one once restarted, will. */
export class ShuttingDownError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('SHUTTING_DOWN', message, options);
  }
}

/** An unexpected failure (a bug) on the other side; its details are in the daemon's log, never in a response. */
export class InternalError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super('INTERNAL', message, options);
  }
}

/** An error as a record keeps it (a job, a restore step): its stable code, message and hint; INTERNAL for anything untyped. */
export function errorInfo(err: unknown): { code: string; message: string; hint?: string } {
  return err instanceof LifeboatError
    ? { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
    : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

/** What a client is told of an unexpected error; the error itself, with its stack, goes to the daemon's log. */
export const INTERNAL_MESSAGE = 'internal error; see the daemon log';

/**
 * An error as a client may see it (an API response, a job record): a typed error's code,
 * message and hint; anything untyped is a bug whose message may hold anything (a path, a
 * secret), so only INTERNAL and where to look.
 */
export function publicErrorInfo(err: unknown): { code: string; message: string; hint?: string } {
  return err instanceof LifeboatError ? errorInfo(err) : { code: 'INTERNAL', message: INTERNAL_MESSAGE };
}

/**
 * Of the failures of stages that ran together (a stream pipeline and the store put that reads
 * it), the one that says what happened: a typed error first, then anything but the "premature
 * close" that the other side sees when one side fails.
 */
export function rootCause(results: readonly PromiseSettledResult<unknown>[]): unknown {
  const reasons = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
  return reasons.find((r) => r instanceof LifeboatError) ?? reasons.find((r) => (r as NodeJS.ErrnoException)?.code !== 'ERR_STREAM_PREMATURE_CLOSE') ?? reasons[0];
}

/** One line for a person: the message, then the hint if any. */
export function describeError(err: unknown): string {
  if (err instanceof LifeboatError) {
    return err.hint ? `${err.message} (${err.hint})` : err.message;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
