import { readFileSync, existsSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ConfigError, KeyError } from '../errors/errors.ts';
import { parseRecipient } from '../crypto/age.ts';
import { validate as validCron } from 'node-cron';
import { ClientSchema, ConfigSchema, FsStoreSchema, type ClientConfig, type Config, type ConfigInput, type StoreConfig } from './schema.ts';

export const DEFAULT_CONFIG_FILE = '/etc/lifeboat/config.yaml';
const ENV_PREFIX = 'LIFEBOAT_';
/** Env vars that are not settings of the file. */
const ENV_RESERVED = new Set(['LIFEBOAT_CONFIG']);

export interface LoadOptions {
  /** `--config FILE`; when absent, `LIFEBOAT_CONFIG`, then /etc/lifeboat/config.yaml if it exists. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

/** The config file that `load` reads, or undefined when none is given and the default is absent. */
export function configFileFor(options: LoadOptions = {}): string | undefined {
  const env = options.env ?? process.env;
  const file = options.file ?? env.LIFEBOAT_CONFIG;
  if (file !== undefined) return file;
  return existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined;
}

/**
 * Reads, overrides from `LIFEBOAT_*`, defaults, validates and freezes the config. Every failure
 * is a ConfigError naming the field by its path (`/etcd/tls/caFile`) or the env var.
 */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const file = configFileFor(options);
  const raw = file === undefined ? {} : readConfigFile(file);
  applyEnvOverrides(raw, env);
  return resolveConfig(raw, file, env);
}

/** Validates an already-parsed document (env overrides applied) into the frozen Config. */
export function resolveConfig(raw: Record<string, unknown>, sourceName = 'config', env: NodeJS.ProcessEnv = {}): Config {
  return deepFreeze(finish(validated(ConfigSchema, raw, '', sourceName), env));
}

/** `raw` with the schema's defaults, or a ConfigError naming the first bad field (under `at`). */
function validated<T extends TSchema>(schema: T, raw: unknown, at: string, sourceName: string): Static<T> {
  refuseForbiddenKeys(raw, at, sourceName);
  const input = Value.Default(schema, structuredClone(raw)) as Static<T>;
  const first = Value.Errors(schema, input).First();
  if (first) {
    const field = `${at}${first.path}` || '/';
    throw new ConfigError(field, `${first.message}${describeValue(first.value)}`, { hint: `fix it in ${sourceName}` });
  }
  return input;
}

/** Keys that reach an object's prototype when a document is merged or copied; never settings. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * A ConfigError naming the first `__proto__`, `constructor` or `prototype` key anywhere in `raw`
 * (YAML and JSON parsers keep them as own keys, which strict validation does not see), or the
 * first mapping that is not a plain object.
 */
function refuseForbiddenKeys(value: unknown, at: string, sourceName: string): void {
  if (Array.isArray(value)) {
    value.forEach((item, i) => refuseForbiddenKeys(item, `${at}/${i}`, sourceName));
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) throw new ConfigError(at || '/', 'is not a plain mapping', { hint: `fix it in ${sourceName}` });
  for (const [key, child] of Object.entries(value)) {
    if (FORBIDDEN_KEYS.has(key)) throw new ConfigError(`${at}/${key}`, `the key "${key}" is not allowed`, { hint: `remove it from ${sourceName}` });
    refuseForbiddenKeys(child, `${at}/${key}`, sourceName);
  }
}

/**
 * Only the `client` section (file, then `LIFEBOAT_CLIENT__*`), for the commands that talk to a
 * running daemon: they need no store, etcd or key settings, so those are not checked here.
 */
export function loadClientConfig(options: LoadOptions = {}): ClientConfig {
  const env = options.env ?? process.env;
  const file = configFileFor(options);
  const raw = file === undefined ? {} : readConfigFile(file);
  applyEnvOverrides(raw, env);
  const input = validated(ClientSchema, raw.client ?? {}, '/client', file ?? 'the environment (LIFEBOAT_CLIENT__*)');
  return deepFreeze(checkClient(input as ClientConfig));
}

function checkClient(client: ClientConfig): ClientConfig {
  if ((client.certFile === undefined) !== (client.keyFile === undefined)) {
    throw new ConfigError(client.certFile === undefined ? '/client/certFile' : '/client/keyFile', 'a client certificate needs both certFile and keyFile');
  }
  if (client.token !== undefined && client.tokenFile !== undefined) {
    throw new ConfigError('/client/token', 'set token or tokenFile, not both');
  }
  return client;
}

type StoreInput = ConfigInput['store'];

/** One store section (`/store` or `/secondaryStore`): fs or s3, with S3 credentials resolved. */
function storeConfig(store: StoreInput, env: NodeJS.ProcessEnv, field: string): StoreConfig {
  const { fs, s3 } = store;
  if (fs && s3) throw new ConfigError(field, 'configure one store: fs or s3, not both');
  if (!s3) return { kind: 'fs', dir: (fs ?? (Value.Default(FsStoreSchema, {}) as { dir: string })).dir };
  const secret = (fileField: 'accessKeyIdFile' | 'secretAccessKeyFile', valueField: 'accessKeyId' | 'secretAccessKey', envName: string) => {
    const file = s3[fileField];
    if (file !== undefined) {
      const value = readField(file, `${field}/s3/${fileField}`).trim();
      if (value === '') throw new ConfigError(`${field}/s3/${fileField}`, `${file} is empty`);
      return value;
    }
    const value = s3[valueField] ?? env[envName];
    if (value === undefined || value === '') {
      throw new ConfigError(`${field}/s3/${fileField}`, `no S3 credentials: set ${fileField}, ${valueField} or ${envName}`);
    }
    return value;
  };
  return {
    kind: 's3',
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    prefix: s3.prefix,
    forcePathStyle: s3.forcePathStyle,
    caFile: s3.caFile,
    credentials: {
      accessKeyId: secret('accessKeyIdFile', 'accessKeyId', 'AWS_ACCESS_KEY_ID'),
      secretAccessKey: secret('secretAccessKeyFile', 'secretAccessKey', 'AWS_SECRET_ACCESS_KEY'),
    },
    partSize: s3.partSizeMiB * 1024 * 1024,
    queueSize: s3.queueSize,
    maxAttempts: s3.maxAttempts,
    idleTimeoutMs: s3.idleTimeoutSeconds * 1000,
    objectLock: s3.objectLock,
  };
}

function checkSchedules(schedules: ConfigInput['daemon']['schedules']): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: schedules.timezone });
  } catch {
    throw new ConfigError('/daemon/schedules/timezone', `"${schedules.timezone}" is not an IANA time zone (e.g. UTC, Europe/Berlin)`);
  }
  for (const name of ['backup', 'prune', 'drill'] as const) {
    const expression = schedules[name];
    if (expression !== 'off' && !validCron(expression)) {
      throw new ConfigError(`/daemon/schedules/${name}`, `"${expression}" is not a cron expression (e.g. "0 * * * *" for hourly) or "off"`);
    }
  }
}

function finish(input: ConfigInput, env: NodeJS.ProcessEnv): Config {
  const kitPath = (p: string) => path.join(input.kit.hostRoot, p);
  const recipients = input.encryption.recipients.map((r, i) =>
    parseRecipientField(r, `/encryption/recipients/${i}`),
  );
  if (input.encryption.recipientsFile !== undefined) {
    const file = input.encryption.recipientsFile;
    const text = readField(file, '/encryption/recipientsFile');
    for (const [i, line] of text.split('\n').entries()) {
      const entry = line.trim();
      if (entry === '' || entry.startsWith('#')) continue;
      recipients.push(parseRecipientField(entry, `/encryption/recipientsFile (${file} line ${i + 1})`));
    }
  }
  const algorithm = input.compression.algorithm;
  const level = input.compression.level ?? 1;
  if (algorithm === 'gzip' && level > 9) {
    throw new ConfigError('/compression/level', `gzip takes a level from 1 to 9, got ${level}`);
  }
  checkSchedules(input.daemon.schedules);
  const store = storeConfig(input.store, env, '/store');
  const secondaryStore = input.secondaryStore && storeConfig(input.secondaryStore, env, '/secondaryStore');
  if (secondaryStore && JSON.stringify(secondaryStore) === JSON.stringify(store)) {
    throw new ConfigError('/secondaryStore', 'is the same store as /store; a second copy must go elsewhere');
  }
  return {
    cluster: input.cluster ?? clusterNameFromKubeadm(kitPath(input.kit.clusterConfiguration)) ?? 'kubernetes',
    node: input.node ?? hostname(),
    etcd: input.etcd,
    kit: input.kit,
    store,
    secondaryStore,
    retention: input.retention,
    compression: { algorithm, level },
    encryption: { recipients: [...new Set(recipients)], identityFile: input.encryption.identityFile },
    signing: input.signing,
    backup: input.backup,
    changes: input.changes,
    tools: input.tools,
    drill: input.drill,
    restore: input.restore,
    daemon: input.daemon,
    api: input.api,
    metrics: input.metrics,
    log: input.log,
    client: checkClient(input.client),
    runtime: { inPod: (env['KUBERNETES_SERVICE_HOST'] ?? '') !== '' },
  };
}

function parseRecipientField(value: string, field: string): string {
  try {
    return parseRecipient(value, field);
  } catch (err) {
    if (err instanceof KeyError) throw new ConfigError(field, err.message);
    throw err;
  }
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` line ${err.linePos[0].line}` : '';
    throw new ConfigError('/', `${file}${where} is not valid YAML: ${firstLine(err)}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError('/', `${file} must hold a YAML mapping at the top level`);
  }
  return doc as Record<string, unknown>;
}

/** The text of a file a setting names; a ConfigError naming the setting when it cannot be read. */
export function readField(file: string, field: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(field, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** `clusterName:` from a kubeadm ClusterConfiguration file, when the file exists and names one. */
function clusterNameFromKubeadm(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const match = /^clusterName:\s*["']?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)["']?\s*$/m.exec(text);
  return match?.[1];
}

/**
 * `LIFEBOAT_ETCD__TLS__CA_FILE=/x` sets `etcd.tls.caFile`: `__` separates levels, and each
 * level matches a setting's name ignoring case and underscores. Lists are comma-separated.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || ENV_RESERVED.has(name) || value === undefined) continue;
    const segments = name.slice(ENV_PREFIX.length).split('__');
    let schema: TSchema = ConfigSchema;
    let target = raw;
    for (const [i, segment] of segments.entries()) {
      const properties = (schema.properties ?? {}) as Record<string, TSchema>;
      const key = Object.keys(properties).find((k) => normalize(k) === normalize(segment));
      const child = key === undefined ? undefined : properties[key];
      if (key === undefined || child === undefined) {
        throw new ConfigError(name, `is not a setting (no ${segment.toLowerCase()} here)`);
      }
      if (i === segments.length - 1) {
        target[key] = envValue(child, value, name);
      } else {
        const next = target[key];
        if (next === undefined || next === null) target[key] = {};
        else if (typeof next !== 'object' || Array.isArray(next)) {
          throw new ConfigError(name, `the file sets ${key} to a non-mapping`);
        }
        target = target[key] as Record<string, unknown>;
        schema = child;
      }
    }
  }
}

function envValue(schema: TSchema, value: string, name: string): unknown {
  switch (schema.type) {
    case 'integer':
    case 'number': {
      const n = Number(value);
      if (value.trim() === '' || Number.isNaN(n)) throw new ConfigError(name, `expected a number, got "${value}"`);
      return n;
    }
    case 'boolean':
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      throw new ConfigError(name, `expected true or false, got "${value}"`);
    case 'array':
      return value.split(',').map((v) => v.trim()).filter((v) => v !== '');
    case 'object':
      throw new ConfigError(name, 'names a section, not a value');
    default:
      return value;
  }
}

const normalize = (s: string) => s.toLowerCase().replaceAll('_', '');

function describeValue(value: unknown): string {
  if (value === undefined || typeof value === 'object') return '';
  return ` (got ${JSON.stringify(value)})`;
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
