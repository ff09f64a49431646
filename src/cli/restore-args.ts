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

export function backupRef(cmd: Command, options: { backup?: string; before?: string }): RestoreRequest['backup'] {
  if (options.backup !== undefined && options.before !== undefined) usage(cmd, 'give --backup or --before, not both');
  if (options.before !== undefined) return { before: options.before };
  if (options.backup !== undefined) return options.backup;
  return usage(cmd, 'which backup? give --backup ID (or latest), or --before TIME');
}

export function members(cmd: Command, values: readonly string[]): MemberRef[] | undefined {
  if (values.length === 0) return undefined;
  return pairs(cmd, '--member', values).map(([name, peerURL]) => ({ name, peerURL }));
}

export interface PlanOptions {
  backup?: string;
  before?: string;
  mode: RestoreMode;
  member: string[];
  dryRun?: boolean;
  wait?: boolean;
  pollInterval: number;
}

export interface ApplyOptions {
  token?: string;
  through?: StepName;
  wait?: boolean;
  all?: boolean;
  again?: boolean;
  backup?: string;
  before?: string;
  mode: RestoreMode;
  member: string[];
  daemon: string[];
  pollInterval: number;
}

export interface RollbackOptions {
  token?: string;
  wait?: boolean;
  all?: boolean;
  backup?: string;
  before?: string;
  daemon: string[];
  pollInterval: number;
}
