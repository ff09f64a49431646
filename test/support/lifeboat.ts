import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { resolveConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { createLogger } from '../../src/log/logger.ts';
import { etcdBinaries } from '../../scripts/rig/binaries.ts';
import { SIGNING_CONFIG } from './signing.ts';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** etcdutl of the pinned default etcd (3.6). */
export const ETCDUTL = etcdBinaries().etcdutl;
export const quietLog = createLogger('silent');
/** As the lifeboat bin runs Node: a small young generation keeps peak RSS low while streaming. */
export const NODE_FLAGS = ['--max-semi-space-size=1'];

export interface RigLike {
  endpoints: string[];
  tls: { caFile: string; certFile: string; keyFile: string };
}

/** A config document for a rig whose kubeadm tree is at `<hostRoot>/etc/kubernetes`. */
export function configDoc(rig: RigLike, hostRoot: string, storeDir: string, recipients: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cluster: 'it',
    node: 'test-node',
    etcd: { endpoints: rig.endpoints, tls: rig.tls, dialTimeoutMs: 3000 },
    kit: { hostRoot },
    store: { fs: { dir: storeDir } },
    encryption: { recipients },
    signing: SIGNING_CONFIG,
    tools: { etcdutl: ETCDUTL },
    ...extra,
  };
}

export function configOf(doc: Record<string, unknown>): Config {
  return resolveConfig(doc);
}

export async function writeConfig(dir: string, doc: Record<string, unknown>): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `lifeboat-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, stringify(doc));
  return file;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source under this Node (24), as a user would. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return spawnCli(args, env).result;
}

export interface RunningCli {
  /** The lifeboat process itself, e.g. to signal it. */
  child: ChildProcess;
  /** Settles when it has exited; `signal` is set when a signal ended it (then `code` is -1). */
  result: Promise<CliResult & { signal: NodeJS.Signals | null }>;
}

/** Starts the CLI like runCli, and hands back the process while it runs. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [...NODE_FLAGS, path.join(REPO, 'src/cli/main.ts'), ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const result = new Promise<CliResult & { signal: NodeJS.Signals | null }>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? -1, stdout, stderr, signal }));
  });
  return { child, result };
}

/** The human lines of stderr (not the JSON log lines). */
export function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
}
