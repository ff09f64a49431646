import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient, clientOptions } from '../api/client.ts';
import { loadClientConfig } from '../config/load.ts';
import type { MemberRef, RestoreMode, RestoreRequest, StepName } from '../restore/plan.ts';
import type { GlobalOptions } from './context.ts';

/** The options of `lifeboat restore` commands, and how they become requests; a usage error (exit 2) names a bad one. */

export function client(cmd: Command): ApiClient {
  const globals = cmd.optsWithGlobals<GlobalOptions>();
  return new ApiClient(clientOptions(loadClientConfig({ file: globals.config })));
}

export function usage(cmd: Command, message: string): never {
  cmd.error(`error: ${message}`, { exitCode: 2, code: 'lifeboat.usage' });
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function positiveInt(max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
    return n;
  };
}

/** `NAME=VALUE` pairs, in order; a usage error names the bad one. */
export function pairs(cmd: Command, flag: string, values: readonly string[]): [string, string][] {
  return values.map((v) => {
    const at = v.indexOf('=');
    if (at <= 0 || at === v.length - 1) usage(cmd, `${flag} ${v}: expected NAME=URL`);
    return [v.slice(0, at), v.slice(at + 1)];
  });
}

/** The backup (or the point in time) the options name: exactly one of them. */
export interface BackupOptions {
  backup?: string;
  before?: string;
  /** A point in time: the change log replayed onto the newest backup before it. */
  toRevision?: string;
  toTime?: string;
  beforeDeletionOf?: string;
}

export function backupRef(cmd: Command, options: BackupOptions): RestoreRequest['backup'] {
  const given = (['backup', 'before', 'toRevision', 'toTime', 'beforeDeletionOf'] as const).filter((k) => options[k] !== undefined);
  if (given.length > 1) usage(cmd, 'give one of --backup, --before, --to-revision, --to-time or --before-deletion-of');
  if (options.before !== undefined) return { before: options.before };
  if (options.backup !== undefined) return options.backup;
  if (options.toRevision !== undefined) return { revision: options.toRevision };
  if (options.toTime !== undefined) return { time: options.toTime };
  if (options.beforeDeletionOf !== undefined) return { beforeDeletionOf: options.beforeDeletionOf };
  return usage(cmd, 'which backup? give --backup ID (or latest), or --before TIME; or a point in time: --to-revision, --to-time or --before-deletion-of');
}

const REF_FLAGS = { backup: '--backup', before: '--before', toRevision: '--to-revision', toTime: '--to-time', beforeDeletionOf: '--before-deletion-of' } as const;

/** A usage error when a flag that names the backup or the point is given without --all. */
export function refOnlyWithAll(cmd: Command, options: BackupOptions): void {
  for (const [key, flag] of Object.entries(REF_FLAGS)) if (options[key as keyof BackupOptions] !== undefined) usage(cmd, `${flag} goes with --all`);
}

/** The options of a point in time, on a command that takes a backup. */
export function addPointOptions(command: Command, prefix = ''): Command {
  return command
    .option('--to-revision <rev>', `${prefix}a point in time: the cluster at this etcd revision (the change log replayed onto the newest backup before it)`)
    .option('--to-time <time>', `${prefix}a point in time: the last revision received at or before this RFC 3339 time`)
    .option('--before-deletion-of <key>', `${prefix}a point in time: just before the newest delete of this etcd key (lifeboat changes log --deleted finds it)`);
}

export function members(cmd: Command, values: readonly string[]): MemberRef[] | undefined {
  if (values.length === 0) return undefined;
  return pairs(cmd, '--member', values).map(([name, peerURL]) => ({ name, peerURL }));
}

export interface PlanOptions extends BackupOptions {
  mode: RestoreMode;
  member: string[];
  dryRun?: boolean;
  wait?: boolean;
  pollInterval: number;
}

export interface ApplyOptions extends BackupOptions {
  token?: string;
  through?: StepName;
  wait?: boolean;
  all?: boolean;
  again?: boolean;
  mode: RestoreMode;
  member: string[];
  daemon: string[];
  pollInterval: number;
}

export interface RollbackOptions extends BackupOptions {
  token?: string;
  wait?: boolean;
  all?: boolean;
  daemon: string[];
  pollInterval: number;
}
